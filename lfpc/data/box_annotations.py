"""Stage II box files: hand-drawn nested boxes attached to the rows of any converted dataset (paper Sec. 4.2, 5.1).

The paper annotates, for each question-image pair, nested ground-truth boxes from the minimal region needed to
answer (B1) to a larger, contextual one. A box file is JSONL, one line per annotated row::

    {"id": "visualprobe-17", "boxes": [[410, 220, 470, 250], [380, 200, 520, 300]], "image_size": [3840, 2160]}

``id`` names a row of the dataset; ``boxes`` are ``[x1, y1, x2, y2]`` in pixels of the ORIGINAL image, smallest
(B1) first, each inside the next; ``image_size`` (optional) is the ``[width, height]`` the annotator saw, checked
against the image so boxes drawn on a resized copy are caught. Other keys (e.g. ``note``) are ignored.

``python -m lfpc.data.box_annotations ROWS BOXES OUT`` writes the annotated rows, boxes attached, to ``OUT``
(``--keep-unannotated`` keeps the other rows too, without boxes). Every error names the box file, its line,
the row id and what is wrong (not nested, outside the image, listed largest first, unknown id, ...).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from lfpc.boxes import as_box, contains
from lfpc.data.records import DatasetError, Sample, json_lines, load_jsonl, validate_boxes, write_jsonl
from lfpc.files import check_distinct


@dataclass(frozen=True)
class Annotation:
    """The boxes of one row as written in the box file, and where (``file:line``) they were written."""

    boxes: list
    image_size: list | None
    where: str


def read_box_file(path: str | Path) -> dict[str, Annotation]:
    """Annotations by row id; raise :class:`DatasetError` on a malformed line or a repeated id."""
    annotations: dict[str, Annotation] = {}
    for where, row in json_lines(path, "box file"):
        if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)):
            raise DatasetError(f"{where}: a line must be a JSON object with an 'id'")
        row_id = str(row["id"])
        where = f"{where} (id {row_id})"
        if row_id in annotations:
            raise DatasetError(f"{where}: id already annotated at {annotations[row_id].where}")
        boxes, size = row.get("boxes"), row.get("image_size")
        if not isinstance(boxes, list) or not boxes:
            raise DatasetError(f"{where}: field 'boxes' must be a non-empty list of [x1, y1, x2, y2]")
        if size is not None and not (isinstance(size, list) and len(size) == 2):
            raise DatasetError(f"{where}: field 'image_size' must be [width, height]")
        annotations[row_id] = Annotation(boxes, size, where)
    return annotations


def _check_order(annotation: Annotation) -> None:
    """Raise when the boxes are nested but listed largest first (the file wants B1, the smallest, first)."""
    try:
        boxes = [as_box(raw) for raw in annotation.boxes]
    except (TypeError, ValueError):
        return  # validate_boxes reports the malformed box
    if len(boxes) > 1 and all(contains(boxes[i], boxes[i + 1]) for i in range(len(boxes) - 1)) \
            and boxes[0] != boxes[-1]:
        raise DatasetError(f"{annotation.where}: field 'boxes': wrong order: the boxes are listed largest first; "
                           "list them smallest (B1) first, each inside the next")


def annotated(sample: Sample, annotation: Annotation) -> Sample:
    """``sample`` with the annotation's boxes, validated against its image (see the module docstring)."""
    size = sample.image_size
    if size is None:
        raise DatasetError(f"{annotation.where}: row has no image size to check the boxes against")
    if annotation.image_size is not None and tuple(annotation.image_size) != tuple(size):
        raise DatasetError(f"{annotation.where}: field 'image_size': boxes were drawn on a "
                           f"{annotation.image_size[0]}x{annotation.image_size[1]} image but the row's image is "
                           f"{size[0]}x{size[1]}; scale them to the original image")
    _check_order(annotation)
    return replace(sample, boxes=validate_boxes(annotation.boxes, size, annotation.where))


def attach_boxes(samples: Iterable[Sample], annotations: dict[str, Annotation],
                 keep_unannotated: bool = False) -> list[Sample]:
    """The annotated samples with their boxes (and, with ``keep_unannotated``, the others unchanged).

    Raise :class:`DatasetError` when an annotation names no row of ``samples``.
    """
    samples = list(samples)
    unknown = sorted(set(annotations) - {s.id for s in samples})
    if unknown:
        first = annotations[unknown[0]]
        raise DatasetError(f"{first.where}: id matches no row of the dataset ({len(unknown)} such ids: "
                           f"{unknown[:5]})")
    return [annotated(s, annotations[s.id]) if s.id in annotations else s
            for s in samples if keep_unannotated or s.id in annotations]


def main(argv: list[str] | None = None) -> None:
    """Command line: attach a box file to a JSONL dataset."""
    parser = argparse.ArgumentParser(prog="python -m lfpc.data.box_annotations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", help="the dataset JSONL (e.g. a converted VisualProbe file)")
    parser.add_argument("boxes", help="the box file (JSONL, see above)")
    parser.add_argument("output", help="the JSONL to write")
    parser.add_argument("--keep-unannotated", action="store_true", help="also write rows without boxes")
    args = parser.parse_args(argv)
    try:
        check_distinct([args.rows, args.boxes], [args.output])
        samples = attach_boxes(load_jsonl(args.rows), read_box_file(args.boxes), args.keep_unannotated)
    except ValueError as err:  # the message names the file, line and field
        raise SystemExit(f"error: {err}") from None
    write_jsonl(samples, args.output)
    print(f"wrote {len(samples)} rows ({sum(bool(s.boxes) for s in samples)} with boxes) to {args.output}")


if __name__ == "__main__":
    main()
