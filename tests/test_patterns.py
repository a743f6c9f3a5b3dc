"""Tests for the checkered-tile task (lfpc/data/patterns.py) and ``generate_synthetic(task="patterns")``.

Reference values are computed here, independently of the code under test: the checkerboard and the tile's pixels are
built by hand with numpy, and the information gap is measured on the rendered (JPEG) images, per 14 px ViT patch
(the model's unit: a visual token is 2x2 patches, 28x28 px of the shown image).

Patch colour legibility: for each patch of a shown view, the largest channel difference between its mean colour and
the mean colour of the same patch when the tile's inside (within its outline) is painted 170 grey, the mean colour of
every pair. For a patch inside the tile this is the distance of its mean colour from 170 grey; the difference also
isolates the tile's share of a patch that holds background, which is all the 16-token view has (its tile is 6-14 px,
smaller than a patch). Patches: those lying inside the tile, else (16 tokens) those overlapping it.

Measured on the first 30 samples of seeds 0, 1 and 2 (cell side in the view; per-sample mean legibility, largest
patch, share of patches > 50 levels): 16 tokens (cells 1.9-3.6 px) 0.3-4.2, <= 4.2, 0 (the largest from 3-cell tiles,
whose 5 : 4 cells mix to 170 +- 85/9); 64 tokens (4.4-7.1 px) <= 6.4, <= 15.7, 0; 256 tokens (9.5-14.9 px) 2-65,
<= 66, >= 0.5 in 2/90; B1 crops at 36 tokens (26-36 px) 51-78, <= 87, 0.44-1 (>= 0.5 in 86/90); B2 crops at 36 tokens
(14-22 px) 7-61, <= 87, 0-0.75 (>= 0.5 in 40/90). At 16 tokens the tile is 60-117 luminance levels above the median of
the clutter around it. The statistic is about patch means only: pixel by pixel, the 16-token view still resolves the
cells (a period of 4-7 px) in their colours.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lfpc.agent.env import pixel_region
from lfpc.boxes import contains
from lfpc.data.patterns import (CELL, CELLS, COLOR_PAIRS, DEFAULT_SIZE_RANGE, PATTERNS, checker_mask,
                                make_pattern_sample)
from lfpc.data.records import LETTERS, load_jsonl
from lfpc.data.synthetic import generate_synthetic
from lfpc.vision.budget import fit_to_budget, resize_to_budget

SEED = 1  # the benchmark split; its first NUM samples hold all four pairs and both 3- and 4-cell tiles
NUM = 10
PATCH = 14  # px of the shown image read by one ViT patch
GAP_TOKENS, FULL_TOKENS, CROP_TOKENS = 16, 256, 36
LUMA = np.array([0.299, 0.587, 0.114])
GREY = 170  # every pair's mean colour, on each channel
OUTLINE, OUTLINE_LEVEL, GRAIN = 2, 20, 8  # the tile's dark outline (px, grey level); film grain of +-GRAIN levels

# Thresholds, from the measured values in the module doc with margin (failure messages print the values).
GREY_MAX = 10.0     # every tile patch at 16 tokens
STRONG = 50.0       # a strongly coloured patch
MIN_STRONG_SHARE = 0.5  # "many": at least half of the tile's patches
MIN_MEAN = 40.0     # mean legibility of a legible view's tile patches
MIN_LUMA_GAP = 40.0


def _tile(sample) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = sample.meta["targets"][0]["box"]
    assert all(float(v).is_integer() for v in (x1, y1, x2, y2)), (x1, y1, x2, y2)
    return int(x1), int(y1), int(x2), int(y2)


def _expected_tile(pair: str, cells: int, cell: int) -> np.ndarray:
    """The tile's RGB pixels without grain: a checkerboard of the pair (top-left cell the first colour), outlined."""
    parity = np.kron(np.indices((cells, cells)).sum(axis=0) % 2, np.ones((cell, cell), dtype=int))
    pixels = np.array(COLOR_PAIRS[pair], dtype=float)[parity]
    for edge in (np.s_[:OUTLINE], np.s_[-OUTLINE:], np.s_[:, :OUTLINE], np.s_[:, -OUTLINE:]):
        pixels[edge] = OUTLINE_LEVEL
    return pixels


def _grey_tile(image: Image.Image, tile) -> Image.Image:
    """``image`` with the tile's inside (within its outline) painted 170 grey, the mean colour of every pair."""
    x1, y1, x2, y2 = tile
    pixels = np.asarray(image).copy()
    inside = pixels[y1 + OUTLINE:y2 - OUTLINE, x1 + OUTLINE:x2 - OUTLINE]
    inside[:] = GREY
    return Image.fromarray(pixels)


def _shown(image: Image.Image, sample) -> dict[str, tuple[Image.Image, tuple[int, int, int, int]]]:
    """View name -> (the view as the env shows it, the region of the original it shows)."""
    whole = (0, 0, *image.size)
    views = {f"{tokens} tokens": (image.resize(fit_to_budget(image.size, tokens), Image.Resampling.BICUBIC), whole)
             for tokens in (GAP_TOKENS, FULL_TOKENS)}
    for level in (0, 1):
        region = pixel_region(sample.boxes[level], image.size)
        views[f"B{level + 1} crop"] = (resize_to_budget(image.crop(region), CROP_TOKENS), region)
    return views


def _in_view(box, view: Image.Image, region) -> tuple[float, float, float, float]:
    """``box`` (ORIGINAL pixels) in the frame of ``view``, which shows ``region`` of the original."""
    sx, sy = view.width / (region[2] - region[0]), view.height / (region[3] - region[1])
    return ((box[0] - region[0]) * sx, (box[1] - region[1]) * sy, (box[2] - region[0]) * sx, (box[3] - region[1]) * sy)


def _patch_means(view: Image.Image) -> np.ndarray:
    pixels = np.asarray(view, dtype=float)
    rows, cols = view.height // PATCH, view.width // PATCH
    return pixels[:rows * PATCH, :cols * PATCH].reshape(rows, PATCH, cols, PATCH, 3).mean(axis=(1, 3))


def _patch_legibility(view: Image.Image, grey_view: Image.Image, box) -> np.ndarray:
    """Patch colour legibility (module doc) of the patches inside ``box`` (view px), else of those overlapping it;
    ``grey_view`` is the same view of the image with a grey tile."""
    legibility = np.abs(_patch_means(view) - _patch_means(grey_view)).max(axis=-1)
    top = np.arange(legibility.shape[0])[:, None] * PATCH
    left = np.arange(legibility.shape[1])[None, :] * PATCH
    x1, y1, x2, y2 = box
    inside = (left >= x1) & (top >= y1) & (left + PATCH <= x2) & (top + PATCH <= y2)
    overlapping = (left < x2) & (top < y2) & (left + PATCH > x1) & (top + PATCH > y1)
    return legibility[inside if inside.any() else overlapping]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("patterns") / "data", NUM, seed=SEED,
                              size_range=DEFAULT_SIZE_RANGE, task="patterns")


@pytest.fixture(scope="module")
def samples(dataset):
    return load_jsonl(dataset)


@pytest.fixture(scope="module")
def originals(samples):
    """The stored (JPEG) images, as the env loads them."""
    return [Image.open(sample.image_path).convert("RGB") for sample in samples]


@pytest.fixture(scope="module")
def legibility(samples, originals):
    """View name -> [(sample, patch legibility of its tile patches)]."""
    out: dict[str, list] = {}
    for sample, original in zip(samples, originals):
        views, grey_views = _shown(original, sample), _shown(_grey_tile(original, _tile(sample)), sample)
        for name, (view, region) in views.items():
            values = _patch_legibility(view, grey_views[name][0], _in_view(_tile(sample), view, region))
            out.setdefault(name, []).append((sample, values))
    return out


def _summary(measured) -> dict[str, tuple]:
    """Per sample: pair, cells, mean / largest patch legibility, share of strongly coloured patches."""
    return {sample.id: (sample.meta["pattern"], sample.meta["cells"], round(float(v.mean()), 1),
                        round(float(v.max()), 1), round(float((v > STRONG).mean()), 2)) for sample, v in measured}


# ---------------------------------------------------------------------------------------------------- records


@pytest.mark.parametrize("index", range(NUM))
def test_record(index):
    image, sample = make_pattern_sample(index, SEED)
    assert len(sample.options) == len(PATTERNS) and sorted(sample.options) == sorted(PATTERNS)
    assert sample.options[LETTERS.index(sample.answer)] == sample.meta["pattern"] == sample.answer_text

    lo, hi = DEFAULT_SIZE_RANGE
    assert image.size == sample.image_size and all(lo <= side <= hi for side in image.size)
    cells, cell = sample.meta["cells"], sample.meta["cell"]
    assert CELLS[0] <= cells <= CELLS[1] and CELL[0] <= cell <= CELL[1]
    x1, y1, x2, y2 = _tile(sample)
    assert x2 - x1 == y2 - y1 == cells * cell
    assert 0 <= x1 and 0 <= y1 and x2 <= image.width and y2 <= image.height
    assert sample.boxes[0] == (x1 - 2, y1 - 2, x2 + 2, y2 + 2)
    assert all(contains(outer, inner) for inner, outer in zip(sample.boxes, sample.boxes[1:])), sample.boxes
    assert len(sample.boxes) >= 2 and contains((0, 0, *image.size), sample.boxes[-1])


@pytest.mark.parametrize("index", range(NUM))
def test_tile_pixels(index):
    """The tile is the pair's checkerboard with a dark outline, up to the grain (the image before JPEG)."""
    image, sample = make_pattern_sample(index, SEED)
    x1, y1, x2, y2 = _tile(sample)
    pixels = np.asarray(image, dtype=float)[y1:y2, x1:x2]
    expected = _expected_tile(sample.meta["pattern"], sample.meta["cells"], sample.meta["cell"])
    error = np.abs(pixels - expected)
    assert error.max() <= GRAIN, (sample.id, sample.meta["pattern"], np.argwhere(error > GRAIN)[:5])


def test_same_seed_same_sample_other_seed_differs():
    image, sample = make_pattern_sample(3, SEED)
    again, same = make_pattern_sample(3, SEED)
    assert np.array_equal(np.asarray(image), np.asarray(again))
    assert sample.to_json() == same.to_json()
    other_image, other = make_pattern_sample(3, SEED + 1)
    assert other.id != sample.id
    assert other_image.size != image.size or not np.array_equal(np.asarray(image), np.asarray(other_image))
    assert (other.image_size, other.boxes, other.meta) != (sample.image_size, sample.boxes, sample.meta)


def test_generate_writes_loadable_jsonl_and_caches(dataset, samples):
    assert len(samples) == NUM
    for index, loaded in enumerate(samples):
        image, sample = make_pattern_sample(index, SEED, size_range=DEFAULT_SIZE_RANGE)
        expected, got = sample.to_json(), loaded.to_json()
        expected.pop("image_path"), got.pop("image_path")
        assert got == expected
        with Image.open(loaded.image_path) as stored:  # JPEG of the same pixels
            assert np.abs(np.asarray(stored.convert("RGB"), float) - np.asarray(image, float)).mean() < 3
    stamps = {p.name: p.stat().st_mtime_ns for p in dataset.parent.iterdir() if p.is_file()}
    assert generate_synthetic(dataset.parent, NUM, seed=SEED, size_range=DEFAULT_SIZE_RANGE, task="patterns") == dataset
    assert {p.name: p.stat().st_mtime_ns for p in dataset.parent.iterdir() if p.is_file()} == stamps


def test_unknown_task_raises(tmp_path):
    with pytest.raises(ValueError, match="'mosaic'"):
        generate_synthetic(tmp_path / "out", 2, task="mosaic")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------- checkerboard


def test_checker_mask_by_hand():
    expected = np.array([[0, 0, 1, 1, 0, 0],
                         [0, 0, 1, 1, 0, 0],
                         [1, 1, 0, 0, 1, 1],
                         [1, 1, 0, 0, 1, 1],
                         [0, 0, 1, 1, 0, 0],
                         [0, 0, 1, 1, 0, 0]], dtype=bool)
    mask = checker_mask(3, 2)
    assert mask.dtype == bool and np.array_equal(mask, expected)


@pytest.mark.parametrize("cells, cell", [(1, 5), (3, 24), (4, 1), (4, 32)])
def test_checker_mask_cells(cells, cell):
    mask = checker_mask(cells, cell)
    assert mask.shape == (cells * cell, cells * cell)
    parity = (np.arange(cells)[:, None] + np.arange(cells)[None, :]) % 2 == 1
    assert np.array_equal(mask, np.repeat(np.repeat(parity, cell, axis=0), cell, axis=1))
    assert int(mask.sum()) == cell * cell * (cells * cells // 2)  # odd sides: the centre and corners are False


def test_pairs_mix_to_the_same_grey():
    assert len(PATTERNS) == len(COLOR_PAIRS) == 4
    colours = {tuple(c) for pair in COLOR_PAIRS.values() for c in pair}
    assert len(colours) == 8 and all(set(c) <= {85, 255} for c in colours)
    for pair, (first, second) in COLOR_PAIRS.items():
        assert [(a + b) / 2 for a, b in zip(first, second)] == [GREY] * 3, pair


# ---------------------------------------------------------------------------------------------------- information gap


def test_patch_means_grey_at_16_tokens(legibility):
    """At 16 tokens (cells of ~3 px) every patch averages many cells of both colours: the same grey for each pair."""
    measured = legibility[f"{GAP_TOKENS} tokens"]
    assert {sample.meta["pattern"] for sample, _ in measured} == set(PATTERNS)
    worst = max(float(v.max()) for _, v in measured)
    assert worst < GREY_MAX, _summary(measured)


def test_patch_means_coloured_in_b1_crops(legibility):
    """B1 cropped from the original at 36 tokens (cells of 26-36 px, ~2-2.5 patches): many patches see one cell."""
    measured = legibility["B1 crop"]
    assert all(v.mean() >= MIN_MEAN and (v > STRONG).mean() >= MIN_STRONG_SHARE for _, v in measured), \
        _summary(measured)


@pytest.mark.xfail(strict=True, reason="cells of 9.5-15 px (256 tokens) and 14-22 px (B2 crops) span at most ~1.5 "
                                       "patches: most patches straddle cell borders and mix both colours")
@pytest.mark.parametrize("view", [f"{FULL_TOKENS} tokens", "B2 crop"])
def test_patch_means_coloured_at_256_tokens_and_in_b2_crops(legibility, view):
    measured = legibility[view]
    assert all((v > STRONG).mean() >= MIN_STRONG_SHARE for _, v in measured), (view, _summary(measured))


def test_tile_findable_at_16_tokens(samples, originals):
    """At 16 tokens the tile (~170 grey) is far brighter than the median of the dark clutter around it."""
    gaps = {}
    for sample, original in zip(samples, originals):
        view = original.resize(fit_to_budget(original.size, GAP_TOKENS), Image.Resampling.BICUBIC)
        x1, y1, x2, y2 = _in_view(_tile(sample), view, (0, 0, *original.size))
        luma = np.asarray(view, dtype=float) @ LUMA
        yy, xx = np.mgrid[0:view.height, 0:view.width]
        half_x, half_y = (x2 - x1) / 2, (y2 - y1) / 2
        dx, dy = np.abs(xx + 0.5 - (x1 + x2) / 2), np.abs(yy + 0.5 - (y1 + y2) / 2)
        tile = (dx <= half_x - 1) & (dy <= half_y - 1)
        ring = (dx <= 3 * half_x) & (dy <= 3 * half_y) & ~((dx <= half_x + 2) & (dy <= half_y + 2))
        gaps[sample.id] = (round(float(luma[tile].mean())), round(float(np.median(luma[ring]))))
    assert all(tile - ring > MIN_LUMA_GAP for tile, ring in gaps.values()), gaps
