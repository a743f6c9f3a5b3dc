"""Read the logged history of a wandb offline run (``wandb/offline-run-*/run-<id>.wandb``) without a wandb service.

wandb 0.2x+ has no Python reader for these files any more (its service, written in Go, reads them), so this module
reads the format directly: a 7-byte header (``:W&B``, magic 0xBEE1 little-endian, version 0), then LevelDB's log
format, 32 KiB blocks of chunks (crc32 of type byte + data: 4 bytes LE, length: 2 bytes LE, type: 1 byte = full,
first, middle or last, data); a block tail under 7 bytes is padding. Each reassembled record is a
``wandb_internal_pb2.Record`` protobuf; history rows are its ``history`` items (key, JSON value).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Iterator

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> Iterator[bytes]:
    """The records of a wandb transaction log, in order. A record cut short at the end (a run still writing) is
    left out; a checksum mismatch raises ValueError naming the offset."""
    data = Path(path).read_bytes()
    if data[:len(HEADER)] != HEADER:
        raise ValueError(f"{path}: not a wandb offline run file (header {data[:len(HEADER)]!r})")
    pos, pending = len(HEADER), None
    while True:
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER.size:  # block trailer
            pos += room
            continue
        if pos + CHUNK_HEADER.size > len(data):
            return
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if crc == length == kind == 0:  # zero-filled (preallocated) rest of the block
            pos += room
            continue
        body = data[pos + CHUNK_HEADER.size:pos + CHUNK_HEADER.size + length]
        if len(body) < length:
            return
        if crc != zlib.crc32(body, zlib.crc32(bytes([kind]))):
            raise ValueError(f"{path}: corrupt record at byte {pos} (checksum mismatch)")
        pos += CHUNK_HEADER.size + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE and pending is not None:
            pending += body
        elif kind == LAST and pending is not None:
            yield pending + body
            pending = None


def read_history(path: str | Path) -> list[dict]:
    """The history rows (``wandb.log`` calls) of a wandb offline run file, each ``{key: value}``."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for data in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def run_files(run_dir: str | Path) -> list[Path]:
    """The wandb offline run files under a training run folder (``wandb/*/run-*.wandb``), oldest first."""
    return sorted(Path(run_dir).glob("wandb/*/run-*.wandb"))
