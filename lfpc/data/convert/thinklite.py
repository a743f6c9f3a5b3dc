"""ThinkLite-VL (ThinkLite-VL-70k / ThinkLite-VL-hard-11k parquet), images embedded, into the project's JSONL.

Schema (as read by si0wang/ThinkLite-VL@37fb148d7df4d2ced9a55dcec28303b69c0acdb8 ``mcts.py``): one row per
question with ``image`` (the encoded image bytes), ``problem`` (``<image>`` followed by the question) and
``answer``. The paper adds "a small set of samples from ThinkLite-VL" to Stage I (paper Sec. 5.1).
"""

from __future__ import annotations

from pathlib import Path

from lfpc.data.convert.core import Record, Source, embedded_image, read_parquet, split_choices, strip_image_tags, text


def convert(row: dict, index: int, image_root: Path) -> Record:
    """One ThinkLite-VL row as a :class:`Record`; the row number is its id."""
    question, options, answer = split_choices(strip_image_tags(text(row, "problem")), text(row, "answer"))
    return Record(id=f"thinklite-{index}", question=question, answer=answer, image=embedded_image(row.get("image")),
                  options=options)


SOURCE = Source("thinklite", read_parquet, convert)
