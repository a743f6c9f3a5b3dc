"""The conversion loop every source shares: stream rows, convert, validate, append, report (paper Sec. 5.1).

A source module turns one raw row into a :class:`Record` or raises :class:`Dropped` with a short reason. This
module writes each kept record as a JSONL row (validated by the project's own loader, so the output always
loads), images embedded in the source into a folder beside the output, and every dropped row with its reason
to ``OUT.dropped.jsonl``. A rerun resumes: rows already kept or dropped (by id) are skipped, and a row cut off
by an interruption is discarded and converted again. ``OUT.report.json`` holds the kept / dropped counts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from lfpc.data.benchmarks import _IMAGE_EXTENSIONS
from lfpc.data.records import LETTERS, DatasetError, sample_from_row, utf8_lines
from lfpc.files import atomic_write, check_distinct, entry_lock, write_json
from lfpc.jsonl_log import read_json_lines


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
    import pyarrow as pa
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"{path}: not a readable parquet file ({err})") from None


def read_json_list(path: Path) -> Iterator[dict]:
    """Rows of a JSON file holding one list of objects (the released files are a few MB)."""
    try:
        rows = json.loads("".join(utf8_lines(path)))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: invalid JSON ({err.msg}, line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise DatasetError(f"{path}: invalid JSON (nested too deeply)") from None
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
    """A file name for ``record_id``: the id itself when it is one, else the id with other characters replaced and
    a digest of the id appended, so two ids never share a name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", record_id)
    if safe == record_id and not record_id.startswith("."):
        return safe
    return f"{safe}-{hashlib.sha256(record_id.encode('utf-8')).hexdigest()[:12]}"


def _done_rows(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """The rows of the JSONL ``path`` written by earlier runs (none if absent); a last line without its newline
    (an interrupted write) is cut off the file; a garbage line, or one without ``fields``, is refused by file and
    line."""
    if not path.is_file():
        return []
    rows = []
    for number, row in read_json_lines(path):
        missing = [name for name in fields if name not in row]
        if missing:
            raise DatasetError(f"{path}:{number}: not a row of this converter (no field {missing[0]!r}); delete or "
                               "fix the line to resume")
        rows.append(row)
    return rows


class _Output:
    """The output JSONL, its dropped log, its report and its image folder, with the rows done by earlier runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dropped_path = path.with_name(path.name + ".dropped.jsonl")
        self.report_path = path.with_name(path.name + ".report.json")
        self.image_dir = path.with_name(path.stem + "_images")

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file this output writes."""
        return self.path, self.dropped_path, self.report_path

    def load(self, source: str, in_path: Path) -> tuple[set[str], dict[str, str]]:
        """The ids kept and dropped (with reasons) by earlier runs; refuses an output made from another source or
        input (a rerun only resumes the same conversion)."""
        kept = _done_rows(self.path, ("id", "source"))
        dropped = _done_rows(self.dropped_path, ("id", "reason"))
        origin = None
        if self.report_path.is_file():
            try:
                origin = json.loads(self.report_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DatasetError(f"{self.report_path}: unreadable report ({err}); delete it to resume") from None
        others = {row["source"] for row in kept} - {source}
        if (kept or dropped) and origin is not None and \
                (origin.get("source"), Path(str(origin.get("input"))).resolve()) != (source, in_path.resolve()):
            others.add(f"{origin.get('source')} from {origin.get('input')}")
        if others:
            raise DatasetError(f"{self.path} holds rows converted from {sorted(others)}, not {source} from "
                               f"{in_path.resolve()}: a rerun only resumes the same conversion; write another output")
        return {str(row["id"]) for row in kept}, {str(row["id"]): row["reason"] for row in dropped}


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
    atomic_write(path, record.image)
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
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    check_distinct([in_path], out.files)
    out.path.parent.mkdir(parents=True, exist_ok=True)
    with entry_lock(out.path, wait=False):
        return _convert(source, in_path, out, Path(image_root) if image_root is not None else in_path.parent, limit)


def _convert(source: Source, in_path: Path, out: _Output, root: Path, limit: int | None) -> Report:
    kept_ids, dropped_ids = out.load(source.name, in_path)
    report = Report(source=source.name, input=str(in_path.resolve()), kept=len(kept_ids),
                    dropped=Counter(dropped_ids.values()))
    write_json(out.report_path, report.to_json(), indent=2)  # names the conversion before any row is written
    done = kept_ids | set(dropped_ids)  # by earlier runs: skipped, already counted
    seen: set[str] = set()
    with out.path.open("a", encoding="utf-8") as kept, out.dropped_path.open("a", encoding="utf-8") as dropped:
        for index, raw in enumerate(source.read(in_path)):
            if limit is not None and index >= limit:
                break
            row_id = f"{source.name}-row{index}"
            try:
                if not isinstance(raw, dict):
                    raise Dropped("not an object", f"a {type(raw).__name__}")
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
    write_json(out.report_path, report.to_json(), indent=2)
    return report
