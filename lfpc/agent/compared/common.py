"""Pieces the compared methods share: V* Bench's question text, relative boxes, box margins, answer extraction."""

from __future__ import annotations

import re

from lfpc.agent.parsing import ParsedTurn
from lfpc.boxes import Box, Size, clip_box
from lfpc.data.records import LETTERS, Sample

VSTAR_RULE = "Answer with the option's letter from the given choices directly."


def vstar_text(sample: Sample) -> str:
    """The question as V* Bench's ``test_questions.jsonl`` writes it (its ``text`` field, the question text CoF's and
    Mini-o3's V* evaluations read): the question, each option on its own line as ``(A) ...``, then
    :data:`VSTAR_RULE`; a free-form question alone."""
    if not sample.options:
        return sample.question
    options = "".join(f"\n({LETTERS[i]}) {option}" for i, option in enumerate(sample.options))
    return f"{sample.question}{options}\n{VSTAR_RULE}"


def text_item(text: str) -> dict:
    """A chat text item."""
    return {"type": "text", "text": text}


IMAGE_ITEM: dict = {"type": "image"}


def user_turn(*items: dict) -> dict:
    """A user message of ``items``."""
    return {"role": "user", "content": list(items)}


def system_turn(text: str) -> dict:
    """A system message of ``text``."""
    return {"role": "system", "content": [text_item(text)]}


def from_relative(box: Box, size: Size) -> Box:
    """A box given as fractions of the image's width and height, in pixels of that image."""
    width, height = size
    return (box[0] * width, box[1] * height, box[2] * width, box[3] * height)


def scaled_about_centre(box: Box, size: Size, factor: float) -> Box:
    """``box`` scaled ``factor`` times about its centre, clipped to the image."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half_w, half_h = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    return clip_box((cx - half_w, cy - half_h, cx + half_w, cy + half_h), size)


def padded(box: Box, size: Size, fraction: float) -> Box:
    """``box`` grown by ``fraction`` of the image's width (x) and height (y) on every side, clipped to the image."""
    dx, dy = fraction * size[0], fraction * size[1]
    return clip_box((box[0] - dx, box[1] - dy, box[2] + dx, box[3] + dy), size)


def unanswered(reason: str) -> ParsedTurn:
    """A final turn without a readable answer: the episode ends with none (scored wrong)."""
    return ParsedTurn(kind="unanswered", error=reason)


def answered(text: str | None, reason: str) -> ParsedTurn:
    """The final answer ``text`` (stripped), or :func:`unanswered` with ``reason`` when it is missing or empty."""
    if text is None or not text.strip():
        return unanswered(reason)
    return ParsedTurn(kind="answer", answer=text.strip())


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text`` (braces balanced), None without one or unclosed."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth < 0:
            return text[begin:index]
    return None


def last_tag(text: str, tag: str) -> str | None:
    """The content of the last ``<tag>...</tag>`` in ``text`` (across lines), None without one."""
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return found[-1] if found else None
