"""Chain-of-Focus (CoF) RL question-answer data (a JSON list with an image folder) into the project's JSONL.

Schema (as read by xtong-zhang/Chain-of-Focus@b0668ceaf0199a475cad0652b9c6fe488911a403
``verl/recipe/zoomin/data_progress/prepare_zoomin_data_noprompt.py``): a JSON list of objects with ``question``,
``groundtruth``, ``image_name`` (relative to the image folder) and ``data_source``. Only the question-answer pairs
are used, not CoF's SFT trajectories (paper Sec. 5.1). Image names start at ``--image-root`` (default: the JSON
file's folder).
"""

from __future__ import annotations

from pathlib import Path

from lfpc.data.convert.core import Record, Source, read_json_list, split_choices, text


def convert(row: dict, index: int, image_root: Path) -> Record:
    """One CoF row as a :class:`Record`; the row number is its id."""
    question, options, answer = split_choices(text(row, "question"), text(row, "groundtruth"))
    meta = {"data_source": row["data_source"]} if row.get("data_source") else {}
    return Record(id=f"cof-{index}", question=question, answer=answer, image=image_root / text(row, "image_name"),
                  options=options, meta=meta)


SOURCE = Source("cof", read_json_list, convert)
