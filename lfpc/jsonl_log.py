"""Append-only JSONL files that survive interruption: the one mechanism behind every resumable result log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable


def complete_lines(path: str | Path, repair: bool = True) -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank complete line of ``path``.

    Bytes after the last newline are a write cut short (never a whole record): with ``repair`` they are truncated
    from the file, so the next append starts on a clean line; readers of a log another process may be appending
    to (e.g. a running training) pass ``repair=False`` and leave the file alone.
    """
    path = Path(path)
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
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
