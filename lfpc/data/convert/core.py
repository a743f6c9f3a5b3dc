"""The conversion loop every source shares: stream rows, convert, validate, append, report (paper Sec. 5.1).

A source module turns one raw row into a :class:`Record` or raises :class:`Dropped` with a short reason. This
module writes each kept record as a JSONL row (validated by the project's own loader, so the output always
loads), images embedded in the source into a folder beside the output, and every dropped row with its reason
to ``OUT.dropped.jsonl``. A rerun resumes: rows already kept or dropped (by id) are skipped, and a row cut off
by an interruption is discarded and converted again. ``OUT.report.json`` holds the kept / dropped counts.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from lfpc.data.benchmarks import _IMAGE_EXTENSIONS, _write_atomically
from lfpc.data.records import LETTERS, DatasetError, sample_from_row


class Dropped(Exception):
    """A source row that cannot become a training sample; ``reason`` is short and groups rows in the report."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Record:
    """One converted question: ``image`` is a file of the source dataset or the encoded bytes it embeds."""

    id: str
    question: str
    answer: str
    image: Path | bytes
    options: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A data source: how to stream its raw rows, and how to convert one (row, row number, image root)."""

    name: str
    read: Callable[[Path], Iterator[dict]]
    convert: Callable[[dict, int, Path], Record]


@dataclass
class Report:
    """Rows kept and dropped (by reason) over all runs into the same output."""

    source: str
    input: str
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        """JSON form, written to ``OUT.report.json``."""
        return {"source": self.source, "input": self.input, "kept": self.kept,
                "dropped": sum(self.dropped.values()), "dropped_by_reason": dict(sorted(self.dropped.items()))}


def read_parquet(path: Path, batch_size: int = 64) -> Iterator[dict]:
    """Rows of a parquet file as dicts, streamed in batches (embedded images never all in memory)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from err
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        yield from batch.to_pylist()


def read_json_list(path: Path) -> Iterator[dict]:
    """Rows of a JSON file holding one list of objects (the released files are a few MB)."""
    with path.open(encoding="utf-8") as handle:
        rows = json.load(handle)
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    yield from rows


def text(row: dict, name: str) -> str:
    """The non-empty string field ``name`` of ``row``, else :class:`Dropped`."""
    value = row.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise Dropped(f"missing {name}")
    return value.strip()


def embedded_image(value: object) -> bytes:
    """Encoded image bytes from a binary cell or a ``{"bytes": ..., "path": ...}`` struct (HF ``Image``)."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, (bytes, bytearray)) or not value:
        raise Dropped("missing image")
    return bytes(value)


def strip_image_tags(question: str) -> str:
    """The question without ``<image>`` placeholders."""
    return question.replace("<image>", " ").strip()


_CHOICES_HEADER = re.compile(r"\n\s*(?:choices|options)\s*:?\s*\n", re.IGNORECASE)
_CHOICE_LINE = re.compile(r"^\s*\(?([A-J])\s*[.):]\s*(.+?)\s*$")


def split_choices(question: str, answer: str) -> tuple[str, tuple[str, ...], str]:
    """``(stem, options, answer)``: options listed on their own lines ("A. x", "(B) y", "C: z") become lettered
    options when the answer is one of their letters or texts; otherwise everything stays free-form."""
    lines = question.rstrip().split("\n")
    start = len(lines)
    while start > 0 and _CHOICE_LINE.match(lines[start - 1]):
        start -= 1
    matches = [_CHOICE_LINE.match(line) for line in lines[start:]]
    letters = "".join(m.group(1) for m in matches)  # type: ignore[union-attr]
    if len(letters) < 2 or letters != LETTERS[: len(letters)]:
        return question, (), answer
    options = tuple(m.group(2) for m in matches)  # type: ignore[union-attr]
    stem = _CHOICES_HEADER.sub("\n", "\n".join(lines[:start]) + "\n").strip()
    letter = answer.strip().strip("()").rstrip(".").upper()
    if letter not in letters:
        by_text = [LETTERS[i] for i, option in enumerate(options) if option.lower() == answer.strip().lower()]
        if len(by_text) != 1:
            return question, (), answer
        letter = by_text[0]
    return stem, options, letter


def _safe_name(record_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", record_id)


def _complete_rows(path: Path) -> list[dict]:
    """The JSON rows of ``path`` (none if absent); a last line without its newline (an interrupted write) is cut
    off the file."""
    if not path.is_file():
        return []
    data = path.read_text(encoding="utf-8")
    if data and not data.endswith("\n"):
        data = data[: data.rfind("\n") + 1]
        path.write_text(data, encoding="utf-8")
    return [json.loads(line) for line in data.splitlines() if line.strip()]


class _Output:
    """The output JSONL, its dropped log and its image folder, with the rows done by earlier runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dropped_path = path.with_name(path.name + ".dropped.jsonl")
        self.report_path = path.with_name(path.name + ".report.json")
        self.image_dir = path.with_name(path.stem + "_images")
        self.kept_ids = {str(row["id"]) for row in _complete_rows(path)}
        self.dropped = {str(row["id"]): row["reason"] for row in _complete_rows(self.dropped_path)}


def _image_path(record: Record, image_dir: Path) -> Path:
    """Where the record's image lies: its source file, or its embedded bytes written to ``image_dir``."""
    if isinstance(record.image, Path):
        if not record.image.is_file():
            raise Dropped("image file missing", str(record.image))
        return record.image
    try:
        with Image.open(io.BytesIO(record.image)) as image:
            image_format = image.format
            image.verify()
    except (OSError, SyntaxError, ValueError) as err:
        raise Dropped("unreadable image", str(err)) from None
    image_dir.mkdir(parents=True, exist_ok=True)
    path = image_dir / f"{_safe_name(record.id)}.{_IMAGE_EXTENSIONS.get(image_format, str(image_format).lower())}"
    _write_atomically(path, record.image)
    return path


def _row(record: Record, source: str, out: _Output) -> dict:
    """The validated JSONL row of ``record`` (image path relative to the output's folder)."""
    folder = out.path.parent.absolute()
    row = {"id": record.id, "image_path": os.path.relpath(_image_path(record, out.image_dir).absolute(), folder),
           "question": record.question, "options": list(record.options), "answer": record.answer,
           "source": source, "meta": record.meta}
    try:
        sample_from_row(row, folder, f"{out.path}: id {record.id}")
    except DatasetError as err:
        raise Dropped("invalid row", str(err)) from None
    return row


def convert_file(source: Source, in_path: str | Path, out_path: str | Path, image_root: str | Path | None = None,
                 limit: int | None = None) -> Report:
    """Convert ``in_path`` into the JSONL ``out_path`` (resuming a previous run into the same output).

    ``image_root`` is where the source's relative image paths start (default: the input file's folder);
    ``limit`` stops after that many source rows.
    """
    in_path, out = Path(in_path), _Output(Path(out_path))
    if not in_path.is_file():
        raise FileNotFoundError(f"{in_path}: input file does not exist")
    root = Path(image_root) if image_root is not None else in_path.parent
    out.path.parent.mkdir(parents=True, exist_ok=True)
    report = Report(source=source.name, input=str(in_path), kept=len(out.kept_ids),
                    dropped=Counter(out.dropped.values()))
    done = set(out.kept_ids) | set(out.dropped)  # by earlier runs: skipped, already counted
    seen: set[str] = set()
    with out.path.open("a", encoding="utf-8") as kept, out.dropped_path.open("a", encoding="utf-8") as dropped:
        for index, raw in enumerate(source.read(in_path)):
            if limit is not None and index >= limit:
                break
            row_id = f"{source.name}-row{index}"
            try:
                record = source.convert(raw, index, root)
                row_id = record.id
                if row_id in done:
                    continue
                if row_id in seen:
                    raise Dropped("duplicate id", row_id)
                row = _row(record, source.name, out)
            except Dropped as err:
                if row_id in done:
                    continue
                report.dropped[err.reason] += 1
                dropped.write(json.dumps({"id": row_id, "row": index, "reason": err.reason,
                                          "detail": err.detail}) + "\n")
                dropped.flush()
            else:
                kept.write(json.dumps(row) + "\n")
                kept.flush()
                report.kept += 1
            seen.add(row_id)
    out.report_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return report
