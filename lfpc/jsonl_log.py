"""Append-only JSONL files that survive interruption: the one mechanism behind every resumable result log."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


def drop_torn_tail(path: str | Path, chunk: int = 1 << 16) -> None:
    """Truncate the bytes after the last newline of ``path`` (a write cut short, never a whole record), so the
    next append starts on a clean line; reads only the file's tail."""
    with Path(path).open("r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(0, position - chunk)
            handle.seek(start)
            newline = handle.read(position - start).rfind(b"\n")
            if newline >= 0:
                position = start + newline + 1
                break
            position = start
        if position < end:
            handle.truncate(position)


def complete_lines(path: str | Path, repair: bool = True) -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank complete line of ``path``.

    Bytes after the last newline are a write cut short (never a whole record): with ``repair`` they are dropped
    from the file (:func:`drop_torn_tail`), so the next append starts on a clean line; readers of a log another
    process may be appending to (e.g. a running training) pass ``repair=False`` and leave the file alone.
    """
    if repair:
        drop_torn_tail(path)
    data = Path(path).read_bytes()
    end = data.rfind(b"\n") + 1
    return [(number, line) for number, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1)
            if line.strip()]


def append_json_lines(path: str | Path, rows: Iterable[dict], sync: bool = False) -> None:
    """Append one JSON line per row and flush (and ``fsync`` when ``sync``) before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


@contextmanager
def single_writer(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (file ``.lock``) for the block; a second process is refused at once
    (the lock is released when the process ends, even when it is killed)."""
    path = Path(folder) / ".lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RuntimeError(f"{folder} is in use by another process ({handle.read().strip() or 'unknown'}); "
                               "wait for it to finish or write into another folder") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
