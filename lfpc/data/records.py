"""The one sample record every dataset is turned into, and the strict JSONL loader for it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from lfpc.boxes import Box, as_box, box_problem, contains
from lfpc.files import atomic_output
from lfpc.special_tokens import find_special_token
from lfpc.vision.images import ImageError, checked_size

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Sample:
    """One question about one (high-resolution) image: multiple choice, or free-form when ``options`` is empty.

    ``boxes`` is the hierarchy of ground-truth boxes in ORIGINAL image pixels, smallest (B1) first, each
    inside the next. Pixels (and ``image_size``) are those of the image in its EXIF orientation, as a viewer
    shows it (see :mod:`lfpc.vision.images`). ``answer`` is the letter of the correct option, or the reference
    answer text of a free-form question (a word, phrase or number). ``category`` names the sub-task
    (``single``/``cross`` for HR-Bench style, ``attribute``/``spatial`` for V* style).
    """

    id: str
    image_path: str
    question: str
    options: tuple[str, ...]
    answer: str
    boxes: tuple[Box, ...] = ()
    category: str = "single"
    source: str = "synthetic"
    image_size: tuple[int, int] | None = None  # (width, height) of the original image
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def answer_text(self) -> str:
        """Text of the correct option, or the reference answer of a free-form question."""
        return self.options[LETTERS.index(self.answer)] if self.options else self.answer

    def to_json(self) -> dict:
        """JSON-serializable dict (the JSONL row format)."""
        row = asdict(self)
        row["options"] = list(self.options)
        row["boxes"] = [list(b) for b in self.boxes]
        row["image_size"] = list(self.image_size) if self.image_size else None
        return row


class DatasetError(ValueError):
    """A malformed dataset row; the message names the file, the row and the field."""


def _field(row: dict, name: str, kind: type | tuple[type, ...], where: str):
    if name not in row:
        raise DatasetError(f"{where}: missing field '{name}'")
    value = row[name]
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
        raise DatasetError(f"{where}: field '{name}' must be {expected}, got {type(value).__name__}")
    return value


def _optional(row: dict, name: str, kind: type, where: str):
    """Value of an optional field (None when absent or null), checked to be of ``kind``."""
    return _field(row, name, kind, where) if row.get(name) is not None else None


def check_prompt_text(fields: dict[str, str], where: str) -> None:
    """Refuse prompt fields (field name -> text: question, options) holding a chat special token
    (see :mod:`lfpc.special_tokens`)."""
    for name, text in fields.items():
        token = find_special_token(text)
        if token:
            raise DatasetError(f"{where}: field '{name}' contains the special token {token!r}, which would be read "
                               "as a turn boundary or an image position; remove or rewrite it")


def validate_boxes(boxes: list, size: tuple[int, int], where: str) -> tuple[Box, ...]:
    """Check each box is 4 ordered numbers inside the image and each box lies inside the next one."""
    parsed: list[Box] = []
    for i, raw in enumerate(boxes):
        try:
            box = as_box(raw)
        except (ValueError, TypeError) as err:
            raise DatasetError(f"{where}: field 'boxes[{i}]': {err}") from None
        problem = box_problem(box, size)
        if problem:
            raise DatasetError(f"{where}: field 'boxes[{i}]': {problem}")
        if parsed and not contains(box, parsed[-1]):
            raise DatasetError(f"{where}: field 'boxes[{i}]': boxes are not nested: {list(parsed[-1])} "
                               f"(boxes[{i - 1}]) is not inside {list(box)}")
        parsed.append(box)
    return tuple(parsed)


def sample_from_row(row: dict, root: Path, where: str) -> Sample:
    """Validate one JSONL row (image paths relative to ``root``) and build a :class:`Sample`."""
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: a row must be a JSON object")
    sample_id = str(_field(row, "id", (str, int), where))  # type: ignore[arg-type]
    image_path = Path(os.path.normpath(root / _field(row, "image_path", str, where)))
    if not image_path.is_file():
        raise DatasetError(f"{where}: field 'image_path': image file {image_path} does not exist")
    question = _field(row, "question", str, where)
    options = _optional(row, "options", list, where) or []  # none: a free-form question
    if options and (not 2 <= len(options) <= len(LETTERS) or not all(isinstance(o, str) and o.strip() for o in options)):
        raise DatasetError(f"{where}: field 'options' must list 2 to {len(LETTERS)} (one per letter of {LETTERS}) "
                           f"non-empty strings, got {len(options)} items (none: a free-form question)")
    check_prompt_text({"question": question, **{f"options[{i}]": o for i, o in enumerate(options)}}, where)
    answer = _field(row, "answer", str, where)
    if options and answer not in LETTERS[: len(options)]:
        raise DatasetError(f"{where}: field 'answer' must be one of {list(LETTERS[:len(options)])}, got {answer!r}")
    if not answer.strip():
        raise DatasetError(f"{where}: field 'answer' must not be empty")
    try:
        size = checked_size(image_path)
    except ImageError as err:
        raise DatasetError(f"{where}: field 'image_path': {err}") from None
    boxes = validate_boxes(_optional(row, "boxes", list, where) or [], size, where)
    meta = _optional(row, "meta", dict, where) or {}
    return Sample(id=sample_id, image_path=str(image_path), question=question, options=tuple(options),
                  answer=answer, boxes=boxes, category=str(row.get("category", "single")),
                  source=str(row.get("source", "jsonl")), image_size=size, meta=dict(meta))


def utf8_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a text file (line ends kept), refusing bytes that are not UTF-8 with the line named."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DatasetError(f"{path}:{line_no}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte "
                                   f"{err.start + 1} of the line); save the file as UTF-8") from None


def json_lines(path: str | Path, what: str) -> Iterator[tuple[str, object]]:
    """``(where, value)`` of every non-blank line of a JSONL file (``where`` is ``file:line``); a missing file (named
    ``what``), bytes that are not UTF-8 and invalid JSON are errors naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {what} does not exist")
    for line_no, line in enumerate(utf8_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{where}: invalid JSON ({err.msg})") from None
        yield where, value


def iter_jsonl(path: str | Path) -> Iterator[Sample]:
    """Yield samples from a JSONL file; image paths are relative to the file's folder and come back absolute."""
    root = Path(path).parent.absolute()
    for where, row in json_lines(path, "dataset file"):
        yield sample_from_row(row, root, where)


def check_samples(samples: list[Sample], where: str, repeats: bool = False) -> list[Sample]:
    """Return ``samples`` after checking there is at least one and no two share an id (``where``: the source).

    ``repeats`` allows the same sample more than once (a mix drawn with replacement, paper Table 8); two different
    samples under one id are refused either way.
    """
    if not samples:
        raise DatasetError(f"{where}: no samples (the dataset is empty)")
    seen: dict[str, int] = {}
    for number, sample in enumerate(samples, start=1):
        if sample.id in seen and not (repeats and sample == samples[seen[sample.id] - 1]):
            raise DatasetError(f"{where}: sample {number} has the id {sample.id!r} of sample {seen[sample.id]}; "
                               "ids must be unique (results are keyed by id)")
        seen[sample.id] = number
    return samples


def load_jsonl(path: str | Path) -> list[Sample]:
    """Load every sample of a JSONL file (see :func:`iter_jsonl`); refuse an empty file and duplicate ids."""
    return check_samples(list(iter_jsonl(path)), str(path))


def write_jsonl(samples: list[Sample], path: str | Path) -> None:
    """Write samples as JSONL with image paths relative to the file's folder.

    An absolute ``image_path`` is rewritten relative to that folder (``../`` where needed); a relative one is
    taken as already relative to it and written unchanged.
    """
    path = Path(path)
    with atomic_output(path) as tmp, tmp.open("w", encoding="utf-8") as handle:  # never a half-written dataset
        for sample in samples:
            row = sample.to_json()
            image = Path(sample.image_path)
            row["image_path"] = os.path.relpath(image, path.parent.absolute()) if image.is_absolute() else str(image)
            handle.write(json.dumps(row) + "\n")
