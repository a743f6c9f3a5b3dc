"""Pixel Reasoner's RL data (TIGER-Lab/PixelReasoner-RL-Data ``release.parquet`` + ``images.zip``) into JSONL.

Schema (as read by TIGER-AI-Lab/Pixel-Reasoner@a3a6c3a557a87d89ffaec825bd8c8d09b719fb97
``curiosity_driven_rl/openrlhf/datasets/prompts_dataset.py`` and ``.../ppo_utils/experience_maker.py``): one row
per question with ``qid``, ``question`` (may start with ``<image>`` and list ``choices:`` as ``A: ...`` lines),
``answer``, ``image`` (one path or a list of paths into the unzipped ``images.zip``; empty for text-only rows) and
``is_video``. Video and multi-image rows are dropped. Only the question-answer pairs are used, not the
trajectories (paper Sec. 5.1). Image paths start at ``--image-root`` (default: the parquet's folder).
"""

from __future__ import annotations

from pathlib import Path

from lfpc.data.convert.core import Dropped, Record, Source, read_parquet, split_choices, strip_image_tags, text


def convert(row: dict, index: int, image_root: Path) -> Record:
    """One Pixel Reasoner row as a :class:`Record`."""
    if row.get("is_video"):
        raise Dropped("video")
    image = row.get("image")
    images = [p for p in (image if isinstance(image, list) else [image]) if isinstance(p, str) and p]
    if len(images) != 1:
        raise Dropped("not exactly one image", f"{len(images)} images")
    question, options, answer = split_choices(strip_image_tags(text(row, "question")), text(row, "answer"))
    return Record(id=f"pixelreasoner-{text(row, 'qid')}", question=question, answer=answer,
                  image=image_root / images[0], options=options)


SOURCE = Source("pixel_reasoner", read_parquet, convert)
