"""Chat-template special tokens (``<|im_start|>``, ``<|image_pad|>``, ...) in text the policy did not write.

Such tokens may come only from the chat template and the image slots: one inside a dataset question or a tool
observation would be read as a turn boundary or an image position. Loaders reject them; the codec refuses them;
model output quoted in a prompt (the judge's) is shown with them defused (:func:`defuse_special_tokens`).
"""

from __future__ import annotations

import re

SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")  # the form of every Qwen2.5(-VL) special token


def find_special_token(text: str) -> str | None:
    """The first special token (``<|name|>``) in ``text``, or None when it has none."""
    found = SPECIAL_TOKEN.search(text)
    return found.group(0) if found else None


def defuse_special_tokens(text: str) -> str:
    """``text`` with every special token written ``<\\|name|>`` (a backslash after ``<``), which a tokenizer reads
    as plain text: for quoting model output inside a prompt."""
    return SPECIAL_TOKEN.sub(lambda found: "<\\" + found.group(0)[1:], text)
