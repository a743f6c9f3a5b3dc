"""DeepEyes' training parquet files (DeepEyes-Datasets-47k), images embedded, into the project's JSONL.

Schema (verl RL format, as read by Visual-Agent/DeepEyes@6c5e79671dbff958a6f9d44848ba2ca87854f0b0
``verl/utils/dataset/rl_dataset.py`` and ``verl/utils/reward_score/vl_agent.py``, and rewritten by
xieck13/verl@36cf07f59d2a8940588e8f011e5d2f4e40efe5f3 ``recipe/deepeyes/deepeyes47k_preprocess.py``): one row per
question with ``prompt`` (chat messages ``{"role", "content"}``, the user turn holding ``<image>`` and the
question), ``images`` (list of ``{"bytes", "path"}``), ``reward_model`` (``{"ground_truth", "style"}``),
``extra_info`` (``{"question", "answer", "index", "split", ...}``), ``data_source``, ``ability`` and ``env_name``.
The question is ``extra_info["question"]`` when present (the clean question the DeepEyes judge sees), else the
user turn without its ``<image>`` tag. Rows with several images are dropped (the agent crops one image).
"""

from __future__ import annotations

from pathlib import Path

from lfpc.data.convert.core import (Dropped, Record, Source, embedded_image, read_parquet, split_choices,
                                    strip_image_tags, text)


def _question(row: dict) -> str:
    extra = row.get("extra_info") or {}
    if isinstance(extra.get("question"), str) and extra["question"].strip():
        return strip_image_tags(extra["question"])
    users = [m for m in row.get("prompt") or [] if isinstance(m, dict) and m.get("role") == "user"]
    if not users or not isinstance(users[0].get("content"), str):
        raise Dropped("missing question")
    return strip_image_tags(users[0]["content"])


def convert(row: dict, index: int, image_root: Path) -> Record:
    """One DeepEyes row as a :class:`Record` (the image is the row's only embedded image)."""
    images = row.get("images") or []
    if len(images) != 1:
        raise Dropped("not exactly one image", f"{len(images)} images")
    answer = text(row.get("reward_model") or {}, "ground_truth")
    question, options, answer = split_choices(_question(row), answer)
    extra = row.get("extra_info") or {}
    row_id = f"deepeyes-{row.get('data_source') or 'data'}-{extra.get('index', index)}"
    meta = {key: row[key] for key in ("data_source", "ability", "env_name") if row.get(key) is not None}
    return Record(id=row_id, question=question, answer=answer, image=embedded_image(images[0]), options=options,
                  meta=meta)


SOURCE = Source("deepeyes", read_parquet, convert)
