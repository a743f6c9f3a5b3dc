"""Append-only JSONL files that survive interruption: the one mechanism behind every resumable result log."""

from __future__ import annotations

import json
import os
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


JSON_WHITESPACE = " \t\r\n"  # a line of only these is blank (str.strip would also take e.g. \x1c, which is garbage)


class JsonlError(ValueError):
    """A line of a JSONL file that is not what it must be; the message starts with ``file:line:``."""


def complete_lines(path: str | Path, repair: bool = True) -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank complete line of ``path``; bytes that are not UTF-8 raise
    :class:`JsonlError` naming the file and line.

    Bytes after the last newline are a write cut short (never a whole record): with ``repair`` they are dropped
    from the file (:func:`drop_torn_tail`), so the next append starts on a clean line; readers of a log another
    process may be appending to (e.g. a running training) pass ``repair=False`` and leave the file alone.
    """
    return list(_complete_lines(path, repair))


def _complete_lines(path: str | Path, repair: bool) -> Iterator[tuple[int, str]]:
    """:func:`complete_lines`, one at a time (a bad line is found after every line before it was checked)."""
    if repair:
        drop_torn_tail(path)
    data = Path(path).read_bytes()
    for number, raw in enumerate(data[:data.rfind(b"\n") + 1].split(b"\n")[:-1], start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonlError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {err.start + 1} "
                             "of the line); delete or fix the line") from None
        if line.strip(JSON_WHITESPACE):
            yield number, line


def read_json_lines(path: str | Path, repair: bool = True) -> list[tuple[int, dict]]:
    """``(line number, object)`` of every complete line of the JSONL file ``path`` (see :func:`complete_lines` for
    the torn last line and ``repair``); a line that is not UTF-8 or not a JSON object raises :class:`JsonlError`
    naming the file and line. Callers check the object's fields and name the line the same way."""
    rows = []
    for number, line in _complete_lines(path, repair):
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            raise JsonlError(f"{path}:{number}: invalid JSON ({reason}); delete or fix the line") from None
        if not isinstance(value, dict):
            raise JsonlError(f"{path}:{number}: not a JSON object ({type(value).__name__}); delete or fix the line")
        rows.append((number, value))
    return rows


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
