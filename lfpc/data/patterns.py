"""The miniature's information-gap task: name the two colours of one small checkered tile.

Each image (896-1152 px a side) holds one tile (3-4 cells a side, cells of 24-32 px) on dark, low-contrast clutter
(:mod:`lfpc.data.scenery`). Its two colours are one of four complementary pairs whose mixture is the same light
grey, so every answer looks alike once the cells shrink below the model's perception (a 14 px ViT patch, 28 px per
visual token). Measured in tests/test_patterns.py (14 px patch means): in the 16-token global view (~112 px, cells of
2-4 px) the tile is an easy-to-find light-grey square but every patch mean is grey (within 4 levels); in a tight
crop from the original (B1 at 36 tokens, cells of 26-36 px) patches are dominated by one colour; in the 256-token
view (~448 px, cells of 9.5-15 px) and in looser crops (B2, 14-22 px) patches straddle cells and mix both colours,
so the colours are only partly legible there. Known leak: a 3x3 tile has 5 cells of its first colour, so its mean
is 170 +- 9 levels, not exactly grey. Whether a view is legible *to the model* is what the offline resolution
selection (paper Sec. 3, Stage I) measures, by the model's own answers.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lfpc.boxes import Box
from lfpc.data.records import LETTERS, Sample
from lfpc.data.scenery import add_grain, background, nested_boxes, pick, place

GENERATOR_VERSION = 2  # bump whenever the output for the same parameters changes (invalidates cached datasets)

# Four complementary pairs; each pair's mean colour is (170, 170, 170).
COLOR_PAIRS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "red and cyan": ((255, 85, 85), (85, 255, 255)),
    "green and magenta": ((85, 255, 85), (255, 85, 255)),
    "blue and yellow": ((85, 85, 255), (255, 255, 85)),
    "grey and white": ((85, 85, 85), (255, 255, 255)),
}
PATTERNS = tuple(COLOR_PAIRS)
CELL = (24, 32)            # px, ORIGINAL pixels: side of one checker cell
CELLS = (3, 4)             # cells per tile side
BACKGROUND_LEVELS = (55, 105)  # grey level of the clutter, darker than the tile's mean (170)
DEFAULT_SIZE_RANGE = (896, 1152)


def checker_mask(cells: int, cell: int) -> np.ndarray:
    """Boolean ``(cells * cell)`` square mask, True on the second colour's cells (a checkerboard)."""
    yy, xx = np.mgrid[0:cells * cell, 0:cells * cell]
    return (xx // cell + yy // cell) % 2 == 1


def _draw_tile(image: Image.Image, box: Box, pair: str, cells: int, cell: int) -> None:
    """Paste a checkerboard of ``pair``'s two colours at ``box`` with a dark 2 px outline."""
    first, second = (np.array(c) for c in COLOR_PAIRS[pair])
    pixels = np.where(checker_mask(cells, cell)[..., None], second, first).astype(np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    image.paste(Image.fromarray(pixels), (x1, y1))
    ImageDraw.Draw(image).rectangle((x1, y1, x2 - 1, y2 - 1), outline=(20, 20, 20), width=2)


def make_pattern_sample(index: int, seed: int = 0, image_size: tuple[int, int] = (1024, 1024),
                        size_range: tuple[int, int] | None = DEFAULT_SIZE_RANGE) -> tuple[Image.Image, Sample]:
    """Render sample ``index`` of the tile task with ``seed``: its image and its record (see the module doc).

    Options are the four colour pairs in a seeded random order; GT boxes are the tile padded by 2 px, then 2.5x and
    6x (clipped to the image).
    """
    rng = np.random.default_rng([seed, index, 7])
    width, height = rng.integers(size_range[0], size_range[1] + 1, 2) if size_range else image_size
    size = (int(width), int(height))
    pair = pick(rng, PATTERNS)
    cells, cell = int(rng.integers(CELLS[0], CELLS[1] + 1)), int(rng.integers(CELL[0], CELL[1] + 1))
    side = cells * cell
    image = background(rng, size, BACKGROUND_LEVELS)
    box = place(rng, size, (side, side), [], round(0.03 * min(size)), 0.0)
    if box is None:
        raise ValueError(f"image size {size} is too small for a {side} px tile")
    x1, y1 = float(round(box[0])), float(round(box[1]))
    box = (x1, y1, x1 + side, y1 + side)
    _draw_tile(image, box, pair, cells, cell)
    image = add_grain(rng, image)
    options = [PATTERNS[int(i)] for i in rng.permutation(len(PATTERNS))]
    sample_id = f"tile-{seed}-{index:06d}"
    sample = Sample(id=sample_id, image_path=f"images/{sample_id}.jpg",
                    question="Which two colors make up the checkered tile?", options=tuple(options),
                    answer=LETTERS[options.index(pair)], boxes=nested_boxes([box], size), category="single",
                    source="synthetic-tile", image_size=size,
                    meta={"question_type": "tile_colors", "pattern": pair, "cells": cells, "cell": cell,
                          "targets": [{"shape": "tile", "box": list(box)}]})
    return image, sample
