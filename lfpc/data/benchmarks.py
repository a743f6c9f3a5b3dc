"""Loaders for the public evaluation benchmarks (HR-Bench 4K/8K, V* Bench) into :class:`Sample` records.

Both loaders are strict: a malformed row raises :class:`DatasetError` naming the file, the row and the field.
:func:`shuffle_options` / :func:`shuffle_sample` are the one place options are shuffled (seeded per question).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import random
from contextlib import closing, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from lfpc.boxes import Box, area, as_box, box_problem, clip_box
from lfpc.data.records import (LETTERS, DatasetError, Sample, _field, check_prompt_text, check_samples,
                               sample_from_row, utf8_lines)
from lfpc.files import atomic_write
from lfpc.vision.images import ImageError, checked_size, decode_image

HRBENCH_COLUMNS = ("index", "image", "question", "A", "B", "C", "D", "answer", "category", "cycle_category")
HRBENCH_SUBTASKS = {"single": "FSP", "cross": "FCP"}
HRBENCH_SOURCES = ("hrbench_4k", "hrbench_8k")
VSTAR_SPLITS = {  # folder -> (Sample.category, meta["subtask"])
    "direct_attributes": ("attribute", "Attr"),
    "relative_position": ("spatial", "Spatial"),
}
_IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}  # other PIL formats use their lower-cased name


# ----------------------------------------------------------------------------------------------------------------
# Option shuffling (shared with the evaluation code)

def shuffle_options(options: Sequence[str], correct_index: int,
                    rng: random.Random) -> tuple[tuple[str, ...], str]:
    """Shuffle ``options`` with ``rng``; return the new order and the letter of the option at ``correct_index``."""
    if not 0 <= correct_index < len(options):
        raise ValueError(f"correct_index {correct_index} is out of range for {len(options)} options")
    order = list(range(len(options)))
    rng.shuffle(order)
    return tuple(options[i] for i in order), LETTERS[order.index(correct_index)]


def question_rng(seed: int, question_id: str) -> random.Random:
    """A RNG seeded by ``seed`` and the question id, so a question's shuffle does not depend on load order."""
    return random.Random(f"{seed}:{question_id}")  # str seeds are hashed with SHA-512: stable across runs


def shuffle_sample(sample: Sample, seed: int) -> Sample:
    """Return ``sample`` with its options shuffled (seeded by ``seed`` and ``sample.id``) and the answer remapped
    (a free-form question, without options, unchanged)."""
    if not sample.options:
        return sample
    options, answer = shuffle_options(sample.options, LETTERS.index(sample.answer), question_rng(seed, sample.id))
    return replace(sample, options=options, answer=answer)


# ----------------------------------------------------------------------------------------------------------------
# HR-Bench

HRBENCH_BOXES_SUFFIX = ".boxes.json"


def hrbench_box_file(path: str | Path, boxes_path: str | Path | None = None) -> Path:
    """The box file of the HR-Bench file ``path``: ``boxes_path`` when given, else ``<file stem>.boxes.json``
    beside it (see :func:`load_hrbench`)."""
    path = Path(path)
    return path.with_name(path.stem + HRBENCH_BOXES_SUFFIX) if boxes_path is None else Path(boxes_path)


def load_hrbench(path: str | Path, image_cache_dir: str | Path, source: str | None = None,
                 boxes_path: str | Path | None = None) -> list[Sample]:
    """Load an HR-Bench TSV (or parquet) file; decode each question's image once into ``image_cache_dir/<stem>/``.

    HR-Bench lists each question several times (``cycle_category``), its options rotated, each row with a copy of
    the image: the rows of one question (same category, question, option set and image size in base64) share the
    image of its first row, and ``meta["question"]`` is that row's index. ``source`` ("hrbench_4k"/"hrbench_8k")
    defaults to the one named by the file name ("4k"/"8k"). An image already in the cache is reused without
    decoding its base64 again.

    HR-Bench releases no GT boxes. Give them in a box file (``boxes_path``; default ``<file stem>.boxes.json``
    beside the file, used when it exists): a JSON object mapping a question's ``index`` (of any of its rows) to its
    nested GT boxes ``[[x1, y1, x2, y2], ...]`` in original pixels, e.g. ``{"17": [[10, 20, 60, 50], [0, 0, 200,
    120]]}``. Boxes are ordered smallest first (B1 first); a question without an entry has no boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file does not exist")
    source = _hrbench_source(path, source)
    cache_dir = Path(image_cache_dir) / path.stem
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = {p.stem: p for p in cache_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
    rows = _read_parquet(path) if path.suffix.lower() == ".parquet" else _read_tsv(path)
    samples: list[Sample] = []
    first_row_of: dict[int, int] = {}
    questions: dict[tuple, Sample] = {}  # question key -> the question's first sample
    with _large_csv_fields(), closing(rows):  # closing: the file is closed even when a row is rejected
        for row_no, (row, line) in enumerate(rows, start=1):
            where = f"{path}: row {row_no} (index {row['index']!r}{f', line {line}' if line else ''})"
            key = (row["category"], row["question"], frozenset(row[letter] for letter in "ABCD"), len(row["image"]))
            sample = _hrbench_sample(row, where, path.stem, source, cache_dir, cached, questions.get(key))
            questions.setdefault(key, sample)
            index = sample.meta["index"]
            if index in first_row_of:
                raise DatasetError(f"{where}: field 'index': duplicate of row {first_row_of[index]}")
            first_row_of[index] = row_no
            samples.append(sample)
    return _with_boxes(check_samples(samples, str(path)), hrbench_box_file(path, boxes_path),
                       required=boxes_path is not None)


def _with_boxes(samples: list[Sample], path: Path, required: bool) -> list[Sample]:
    """``samples`` with the nested GT boxes of the box file ``path`` (see :func:`load_hrbench`), smallest first."""
    if not path.is_file():
        if required:
            raise DatasetError(f"{path}: box file does not exist")
        return samples
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: invalid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: the file must hold a JSON object (question index -> nested boxes)")
    by_row = {str(s.meta["index"]): s for s in samples}
    unknown = sorted(set(data) - set(by_row))
    if unknown:
        raise DatasetError(f"{path}: question index(es) not in the benchmark: {unknown[:5]}")
    boxed: dict[str, tuple[Box, ...]] = {}
    for index, raw in data.items():
        where = f"{path}: question {index}"
        if not isinstance(raw, list) or not raw:
            raise DatasetError(f"{where}: expected a non-empty list of [x1, y1, x2, y2] boxes")
        boxes = []
        for i, values in enumerate(raw):
            try:
                box = as_box(values)
            except (ValueError, TypeError) as err:
                raise DatasetError(f"{where}, box {i}: {err}") from None
            problem = box_problem(box, by_row[index].image_size)
            if problem:
                raise DatasetError(f"{where}, box {i}: {problem}")
            boxes.append(box)
        boxed[str(by_row[index].meta["question"])] = tuple(sorted(boxes, key=area))
    return [replace(s, boxes=boxed.get(str(s.meta["question"]), ())) for s in samples]


def _hrbench_source(path: Path, source: str | None) -> str:
    if source is None:
        named = [s for s in HRBENCH_SOURCES if s.split("_")[1] in path.stem.lower()]
        if len(named) != 1:
            raise DatasetError(f"{path}: cannot tell 4K from 8K by the file name; pass source= one of "
                               f"{list(HRBENCH_SOURCES)}")
        return named[0]
    if source not in HRBENCH_SOURCES:
        raise ValueError(f"source must be one of {list(HRBENCH_SOURCES)}, got {source!r}")
    return source


@contextmanager
def _large_csv_fields() -> Iterator[None]:
    """Lift the csv field size limit (base64 of an 8K image is tens of MB) and restore it afterwards."""
    previous = csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _check_columns(path: Path, columns: Sequence[str]) -> None:
    missing = [c for c in HRBENCH_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(f"{path}: header: missing column(s) {missing}")


def _read_tsv(path: Path) -> Iterator[tuple[dict[str, str], int]]:
    """Yield (row, first line number) for each data row of a TSV file with a header line, quoted as the benchmark's
    own loader (``pandas.read_csv(sep="\\t")``) reads it; a quote that swallows fields or rows is an error.

    Rows holding base64 images exceed csv's default field size limit: iterate inside ``_large_csv_fields()``.
    """
    lines = utf8_lines(path)
    with closing(lines):
        reader = csv.reader(lines, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path}: empty file (no header line)")
        _check_columns(path, header)
        line = reader.line_num + 1
        for values in reader:
            if values:
                if len(values) != len(header):
                    raise DatasetError(f"{path}: line {line}: {len(values)} fields, the header has {len(header)}")
                for name, value in zip(header, values):
                    if "\t" in value:
                        raise DatasetError(f"{path}: line {line}: field '{name}' holds a tab: a '\"' opening the field "
                                           "starts a quoted section (as for the benchmark's pandas loader) that runs "
                                           "over the following fields or rows; close or double the quote")
                yield dict(zip(header, values)), line
            line = reader.line_num + 1


def _read_parquet(path: Path) -> Iterator[tuple[dict[str, str], int]]:
    """Yield (row, 0) for each row of a parquet file; values as strings, missing values as ''."""
    try:
        import pandas as pd
        import pyarrow  # noqa: F401  (pandas needs it to read parquet)
    except ImportError as err:
        raise ImportError(f"{path}: reading parquet needs pandas and pyarrow: pip install pandas pyarrow") from err
    frame = pd.read_parquet(path, engine="pyarrow")
    _check_columns(path, [str(c) for c in frame.columns])
    for record in frame.to_dict("records"):
        yield {str(k): "" if v is None or (not isinstance(v, (str, bytes)) and pd.isna(v)) else str(v)
               for k, v in record.items()}, 0


def _hrbench_sample(row: dict[str, str], where: str, stem: str, source: str, cache_dir: Path,
                    cached: dict[str, Path], first: Sample | None) -> Sample:
    """One row as a :class:`Sample`; ``first``: the first row of the same question, whose image it shares."""
    for name in HRBENCH_COLUMNS[:-1]:  # cycle_category may be empty
        if not row[name].strip():
            raise DatasetError(f"{where}: field '{name}' is empty")
    try:
        index = int(row["index"])
    except ValueError:
        raise DatasetError(f"{where}: field 'index' must be an integer, got {row['index']!r}") from None
    options = tuple(row[letter] for letter in "ABCD")
    check_prompt_text({name: row[name] for name in ("question", *"ABCD")}, where)
    answer = row["answer"].strip()
    if answer not in LETTERS[: len(options)]:
        raise DatasetError(f"{where}: field 'answer' must be one of {list(LETTERS[:len(options)])}, got {answer!r}")
    category = row["category"].strip()
    if category not in HRBENCH_SUBTASKS:
        raise DatasetError(f"{where}: field 'category' must be one of {list(HRBENCH_SUBTASKS)}, got {category!r}")
    if first is None:
        image_path, size = _cached_image(row["image"], str(index), cache_dir, cached, where)
    else:
        image_path, size = Path(first.image_path), first.image_size
    return Sample(id=f"hrbench:{stem}:{index}", image_path=str(image_path), question=row["question"],
                  options=options, answer=answer, boxes=(), category=category, source=source, image_size=size,
                  meta={"subtask": HRBENCH_SUBTASKS[category], "cycle_category": row["cycle_category"],
                        "index": index, "question": index if first is None else first.meta["index"]})


def _cached_image(encoded: str, name: str, cache_dir: Path, cached: dict[str, Path],
                  where: str) -> tuple[Path, tuple[int, int]]:
    """Return (path, size) of the cached image ``name``, decoding ``encoded`` and writing it there first if needed."""
    if name in cached:
        try:
            return cached[name], checked_size(cached[name])
        except ImageError as err:
            raise DatasetError(f"{where}: field 'image': cached image unusable ({err}); delete it to decode it "
                               "again") from None
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise DatasetError(f"{where}: field 'image': invalid base64 ({err})") from None
    try:
        size = decode_image(io.BytesIO(data), "in the base64 field").size
    except ImageError as err:
        raise DatasetError(f"{where}: field 'image': not a usable image ({err})") from None
    with Image.open(io.BytesIO(data)) as image:
        image_format = image.format
    path = cache_dir / f"{name}.{_IMAGE_EXTENSIONS.get(image_format, str(image_format).lower())}"
    atomic_write(path, data)
    cached[name] = path
    return path, size


# ----------------------------------------------------------------------------------------------------------------
# V* Bench

def load_vstar(root: str | Path, seed: int = 0, shuffle_options: bool = True) -> list[Sample]:
    """Load V* Bench from ``root/direct_attributes`` and ``root/relative_position`` (``<name>.jpg`` + ``<name>.json``).

    The JSON lists the correct option first; with ``shuffle_options`` the options are shuffled per question
    (seeded by ``seed`` and the question id). ``boxes`` is ``(B1,)``, the union of the target objects' boxes;
    ``meta`` keeps ``target_objects`` and their ``object_boxes`` (x1, y1, x2, y2 in original pixels).
    """
    root = Path(root)
    samples: list[Sample] = []
    for split, (category, subtask) in VSTAR_SPLITS.items():
        split_dir = root / split
        if not split_dir.is_dir():
            raise DatasetError(f"{root}: missing V* split folder '{split}'")
        questions = sorted(split_dir.glob("*.json"))
        if not questions:
            raise DatasetError(f"{split_dir}: no questions (<name>.json) found")
        orphans = sorted({p.stem for p in split_dir.glob("*.jpg")} - {p.stem for p in questions})
        if orphans:
            raise DatasetError(f"{split_dir}: image(s) without a question file: {[f'{o}.jpg' for o in orphans]}")
        for json_path in questions:
            sample = _vstar_sample(json_path, split, category, subtask)
            samples.append(shuffle_sample(sample, seed) if shuffle_options else sample)
    return samples


def _vstar_sample(json_path: Path, split: str, category: str, subtask: str) -> Sample:
    where = str(json_path)
    try:
        data = json.loads("".join(utf8_lines(json_path)))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{where}: invalid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: the file must hold a JSON object")
    targets = _field(data, "target_object", list, where)
    if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
        raise DatasetError(f"{where}: field 'target_object' must list at least 1 non-empty string")
    _field(data, "options", list, where)  # V* is multiple choice (a JSONL row without options is free-form)
    raw_boxes = _field(data, "bbox", list, where)
    if len(raw_boxes) != len(targets):
        raise DatasetError(f"{where}: field 'bbox' has {len(raw_boxes)} boxes for {len(targets)} target objects")
    row = {key: data[key] for key in ("question", "options") if key in data}
    row.update(id=f"vstar:{split}:{json_path.stem}", image_path=f"{json_path.stem}.jpg", answer="A",
               category=category, source="vstar")
    sample = sample_from_row(row, json_path.parent, where)
    object_boxes = [_xywh_box(raw, sample.image_size, f"{where}: field 'bbox[{i}]'")
                    for i, raw in enumerate(raw_boxes)]
    union: Box = (min(b[0] for b in object_boxes), min(b[1] for b in object_boxes),
                  max(b[2] for b in object_boxes), max(b[3] for b in object_boxes))
    return replace(sample, boxes=(union,),
                   meta={"subtask": subtask, "target_objects": list(targets), "object_boxes": object_boxes})


def _xywh_box(raw: object, size: tuple[int, int], where: str) -> Box:
    """Convert one V* ``[x, y, w, h]`` box to ``(x1, y1, x2, y2)`` clipped to the image, as V*'s own evaluation
    does (some released boxes cross the border); a box with nothing left inside the image is an error."""
    try:
        x, y, w, h = as_box(raw)  # type: ignore[arg-type]
    except (ValueError, TypeError) as err:
        raise DatasetError(f"{where}: {err} (expected [x, y, w, h])") from None
    if w <= 0 or h <= 0:
        raise DatasetError(f"{where}: width and height must be positive, got [x, y, w, h] = {raw}")
    box = clip_box((x, y, x + w, y + h), size)
    if box_problem(box):
        raise DatasetError(f"{where}: box {[x, y, x + w, y + h]} lies outside the {size[0]}x{size[1]} image "
                           "(nothing left after clipping it to the image)")
    return box
