"""The miniature's information-gap task: name the fine stripe pattern of one small coloured tile.

Each image holds one tile (28-48 px on a side) on the low-contrast clutter of :mod:`lfpc.data.synthetic`. The tile's
colour makes it easy to find even in a 16-token global view, but its pattern (stripes of a 4 px period, half dark,
so every pattern has the same mean colour) averages away once the image is downsampled about 3.4x or more (a 6 px
period still leaked through bicubic downsampling at 3.5-4.6x): at the info-gap budget (16 visual tokens, ~112 px for
a 384-576 px image) the answer is not legible, in a crop from the original it is, and at the "full-resolution" budget
(256 tokens, ~448 px) it is legible without cropping (measured in tests/test_patterns.py). This is the
information gap of the paper (Sec. 3, Stage I) in a form a few-million-parameter Qwen2.5-VL can learn on a CPU.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lfpc.boxes import Box
from lfpc.data.records import LETTERS, Sample
from lfpc.data.synthetic import COLORS, _add_grain, _background, _nested_boxes, _pick, _place

PATTERNS = ("horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard")
STRIPE = 2                # px: half a period (dark / coloured) in ORIGINAL pixels
TILE_SIDE = (28, 48)      # px, ORIGINAL pixels
DEFAULT_SIZE_RANGE = (384, 576)


def pattern_mask(pattern: str, side: int) -> np.ndarray:
    """Boolean ``side x side`` mask of the dark cells of ``pattern`` (half of the cells, any pattern)."""
    yy, xx = np.mgrid[0:side, 0:side]
    cells = {
        "horizontal stripes": yy // STRIPE,
        "vertical stripes": xx // STRIPE,
        "diagonal stripes": (xx + yy) // (STRIPE + 1),
        "checkerboard": xx // STRIPE + yy // STRIPE,
    }
    if pattern not in cells:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {list(PATTERNS)}")
    return cells[pattern] % 2 == 1


def _draw_tile(image: Image.Image, box: Box, pattern: str, color: tuple[int, int, int]) -> None:
    """Paste a tile of ``pattern`` in ``color`` (dark cells at a quarter brightness) with a dark 1 px outline."""
    x1, y1, x2, y2 = (int(v) for v in box)
    side = x2 - x1
    dark = tuple(c // 4 for c in color)
    pixels = np.where(pattern_mask(pattern, side)[..., None], np.array(dark), np.array(color)).astype(np.uint8)
    image.paste(Image.fromarray(pixels), (x1, y1))
    ImageDraw.Draw(image).rectangle((x1, y1, x2 - 1, y2 - 1), outline=(30, 30, 30))


def make_pattern_sample(index: int, seed: int = 0, image_size: tuple[int, int] = (448, 448),
                        size_range: tuple[int, int] | None = DEFAULT_SIZE_RANGE) -> tuple[Image.Image, Sample]:
    """Render sample ``index`` of the pattern task with ``seed``: its image and its record (see the module doc).

    Options are the four patterns in a seeded random order; GT boxes are the tile padded by 2 px, then 2.5x and 6x.
    """
    rng = np.random.default_rng([seed, index, 7])
    width, height = rng.integers(size_range[0], size_range[1] + 1, 2) if size_range else image_size
    size = (int(width), int(height))
    pattern, color = _pick(rng, PATTERNS), _pick(rng, list(COLORS))
    side = int(rng.integers(TILE_SIDE[0], TILE_SIDE[1] + 1))
    image = _background(rng, size)
    box = _place(rng, size, (side, side), [], round(0.03 * min(size)), 0.0)
    if box is None:
        raise ValueError(f"image size {size} is too small for a {side} px tile")
    box = tuple(float(round(v)) for v in box[:2]) + (float(round(box[0]) + side), float(round(box[1]) + side))
    _draw_tile(image, box, pattern, COLORS[color])
    image = _add_grain(rng, image)
    options = [PATTERNS[int(i)] for i in rng.permutation(len(PATTERNS))]
    sample_id = f"pattern-{seed}-{index:06d}"
    sample = Sample(id=sample_id, image_path=f"images/{sample_id}.jpg",
                    question=f"What is the pattern on the small {color} tile?", options=tuple(options),
                    answer=LETTERS[options.index(pattern)], boxes=_nested_boxes([box], size), category="single",
                    source="synthetic-pattern", image_size=size,
                    meta={"question_type": "pattern", "pattern": pattern, "color": color,
                          "targets": [{"shape": "tile", "color": color, "box": list(box)}]})
    return image, sample
