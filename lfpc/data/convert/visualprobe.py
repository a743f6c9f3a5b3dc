"""Mini-o3's VisualProbe training set (``train.json`` + ``data/`` of Mini-o3/VisualProbe_train) into JSONL.

The paper samples 256 VisualProbe questions for Stage II and draws their nested boxes by hand (paper Sec. 5.1);
attach those boxes with :mod:`lfpc.data.box_annotations`. Schema (as read by
dddraxxx/Mini-o3@5914970ac36587b94cd4588c4686fc898fdaeeae ``examples/minio3/preprocess_visualprobe.py``, a verl
port of Mini-o3 that reads the released file): a JSON list of objects with ``images`` (a list of paths relative to
the dataset folder), ``problem`` and ``solution`` (that reader also accepts ``question`` / ``answer``), and an
optional ``doc_id``. Image paths start at ``--image-root`` (default: the JSON file's folder).
"""

from __future__ import annotations

from pathlib import Path

from lfpc.data.convert.core import Dropped, Record, Source, read_json_list, split_choices, strip_image_tags, text


def _either(row: dict, first: str, second: str) -> str:
    return text(row, first if row.get(first) not in (None, "") else second)


def convert(row: dict, index: int, image_root: Path) -> Record:
    """One VisualProbe row as a :class:`Record`; ``doc_id`` (else the row number) is its id."""
    images = row.get("images") or []
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
        raise Dropped("not exactly one image", f"{images!r}"[:80])
    question, options, answer = split_choices(strip_image_tags(_either(row, "problem", "question")),
                                              _either(row, "solution", "answer"))
    doc_id = row.get("doc_id")
    return Record(id=f"visualprobe-{doc_id if doc_id not in (None, '') else index}", question=question,
                  answer=answer, image=image_root / images[0], options=options)


SOURCE = Source("visualprobe", read_json_list, convert)
