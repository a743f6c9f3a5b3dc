"""Drawing helpers shared by the synthetic generators (:mod:`lfpc.data.synthetic`, :mod:`lfpc.data.patterns`,
:mod:`lfpc.data.coco_paste`): random picks, the low-contrast clutter background, film grain, free placement and the
nested ground-truth boxes (B1, then B1 grown around its centre)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from lfpc.boxes import Box, clip_box

BOX_PAD = 2
CONTEXT_SCALES = (2.5, 6.0)


def pick(rng: np.random.Generator, items: Sequence, count: int | None = None):
    """One item (``count`` None) or ``count`` distinct items of ``items``, in random order."""
    if count is None:
        return items[int(rng.integers(len(items)))]
    return [items[int(i)] for i in rng.choice(len(items), size=count, replace=False)]


def muted_grey(rng: np.random.Generator, level: float) -> tuple[int, int, int]:
    """A greyish colour near ``level`` (low saturation, so it never looks like a target colour)."""
    value = level + rng.uniform(-30, 30)
    return tuple(int(np.clip(value + rng.uniform(-4, 4), 0, 255)) for _ in range(3))  # type: ignore[return-value]


def background(rng: np.random.Generator, size: tuple[int, int],
                levels: tuple[float, float] = (90, 180)) -> Image.Image:
    """Low-contrast clutter around a grey level drawn from ``levels``: a smooth shaded field, soft blobs, thin lines
    and target-sized grey specks."""
    width, height = size
    side = min(size)
    level = rng.uniform(*levels)
    field = level + rng.uniform(-8, 8, 3) + rng.normal(0, 14, (6, 6, 1)) + rng.normal(0, 3, (6, 6, 3))
    image = (Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))
             .resize((64, 64), Image.Resampling.BICUBIC).resize(size, Image.Resampling.BILINEAR))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(15, 30))):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.02, 0.15) * side
        draw.ellipse((x - r, y - r * rng.uniform(0.4, 1.0), x + r, y + r), fill=muted_grey(rng, level))
    for _ in range(int(rng.integers(20, 40))):
        x, y, angle = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.05, 0.4) * side
        draw.line((x, y, x + length * math.cos(angle), y + length * math.sin(angle)), fill=muted_grey(rng, level),
                  width=int(rng.integers(1, max(2, side // 400) + 1)))
    for _ in range(int(rng.integers(40, 80))):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.003, 0.012) * side
        box = (x - r, y - r, x + r, y + r)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=muted_grey(rng, level))
    return image


def add_grain(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Add grey film grain of +-8 levels (the same offset on all channels, so colours keep their hue)."""
    noise = Image.frombytes("L", image.size, rng.bytes(image.width * image.height)).point([v % 17 for v in range(256)])
    return ImageChops.add(image, Image.merge("RGB", (noise, noise, noise)), 1.0, -8)


def place(rng: np.random.Generator, size: tuple[int, int], footprint: tuple[float, float],
           occupied: list[Box], margin: int, gap: float, tries: int = 200) -> Box | None:
    """A free box of ``footprint`` at least ``margin`` from the border and ``gap`` from ``occupied`` boxes."""
    (width, height), (w, h) = size, footprint
    if width - 2 * margin <= w or height - 2 * margin <= h:
        return None
    for _ in range(tries):
        x, y = rng.uniform(margin, width - margin - w), rng.uniform(margin, height - margin - h)
        if all(x + w + gap <= o[0] or o[2] + gap <= x or y + h + gap <= o[1] or o[3] + gap <= y for o in occupied):
            return (x, y, x + w, y + h)
    return None


def nested_boxes(targets: list[Box], size: tuple[int, int]) -> tuple[Box, ...]:
    """B1 = union of ``targets`` padded by BOX_PAD px, then B1 grown by each CONTEXT_SCALES factor (clipped)."""
    x1, y1 = min(b[0] for b in targets), min(b[1] for b in targets)
    x2, y2 = max(b[2] for b in targets), max(b[3] for b in targets)
    boxes = [clip_box((math.floor(x1) - BOX_PAD, math.floor(y1) - BOX_PAD,
                       math.ceil(x2) + BOX_PAD, math.ceil(y2) + BOX_PAD), size)]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    for scale in CONTEXT_SCALES:
        hw, hh = (boxes[0][2] - boxes[0][0]) * scale / 2, (boxes[0][3] - boxes[0][1]) * scale / 2
        grown = clip_box((math.floor(cx - hw), math.floor(cy - hh), math.ceil(cx + hw), math.ceil(cy + hh)), size)
        if grown != boxes[-1]:  # equal only when the previous box already is the whole image
            boxes.append(grown)
    return tuple(tuple(float(v) for v in box) for box in boxes)  # type: ignore[misc]
