"""Tests for the pattern task (lfpc/data/patterns.py) and ``generate_synthetic(task="patterns")``.

Reference values are computed here, independently of the code under test: masks are built by hand with numpy, and
the information gap is measured on the rendered images: the luminance contrast (std) inside the tile, relative to
the original's, and an orientation classifier (mean absolute luminance gradient along x vs y) for stripes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from lfpc.agent.env import pixel_region
from lfpc.boxes import contains
from lfpc.data.patterns import DEFAULT_SIZE_RANGE, PATTERNS, STRIPE, TILE_SIDE, make_pattern_sample, pattern_mask
from lfpc.data.records import LETTERS, load_jsonl
from lfpc.data.synthetic import COLORS, generate_synthetic
from lfpc.vision.budget import fit_to_budget, resize_to_budget

SEED = 1  # the benchmark split; its first NUM samples hold every pattern, 6 horizontal and 2 vertical
NUM = 12
GAP_TOKENS, FULL_TOKENS = 16, 256
LUMA = np.array([0.299, 0.587, 0.114])
KEEP = 0.75  # the tile's interior: its central 75 % (away from the dark outline and the resampling blur at its edge)

# Thresholds, chosen from measured values with margin (failure messages print the values): interior contrast
# relative to the original's >= 0.7 at 256 tokens and in teacher crops, <= 0.1 at 16 tokens; gradient across the
# stripes >= 2x the one along them where legible; tile colour >= 50 RGB levels from the background at 16 tokens.
# With a 4 px stripe period, on the first 200 samples of this split the 16-token contrast is at most 0.067 and the
# gradient classifier is at chance (54.5 %); a 6 px period leaked (contrast up to 0.28, 82 % right) when images
# were downsampled only 3.5-4.6x, which is why the period is 4 px.
LEGIBLE_RATIO, ILLEGIBLE_RATIO = 0.7, 0.1
MIN_GRADIENT_RATIO = 2.0
MIN_COLOR_DISTANCE = 50.0


def _interior(image: Image.Image, box, original_size) -> np.ndarray:
    """RGB pixels of ``image`` whose cells lie inside the central KEEP of ``box`` (ORIGINAL pixels) in its frame."""
    sx, sy = image.width / original_size[0], image.height / original_size[1]
    x1, y1, x2, y2 = box
    inset_x, inset_y = (x2 - x1) * (1 - KEEP) / 2, (y2 - y1) * (1 - KEEP) / 2
    left, right = math.ceil((x1 + inset_x) * sx), math.floor((x2 - inset_x) * sx)
    top, bottom = math.ceil((y1 + inset_y) * sy), math.floor((y2 - inset_y) * sy)
    pixels = np.asarray(image.convert("RGB"), dtype=float)[top:bottom, left:right]
    assert min(pixels.shape[:2]) >= 2, f"tile interior {pixels.shape[:2]} too small to measure in a {image.size} view"
    return pixels


def _tile(sample):
    return sample.meta["targets"][0]["box"]


def _contrast(pixels: np.ndarray) -> float:
    return float((pixels @ LUMA).std())


def _relative_contrast(pixels: np.ndarray, sample, original: Image.Image) -> float:
    """Contrast of ``pixels`` over the contrast of the tile's interior in the original."""
    return _contrast(pixels) / _contrast(_interior(original, _tile(sample), original.size))


def _gradients(pixels: np.ndarray) -> tuple[float, float]:
    """Mean absolute luminance difference between neighbours along x and along y."""
    luma = pixels @ LUMA
    return float(np.abs(np.diff(luma, axis=1)).mean()), float(np.abs(np.diff(luma, axis=0)).mean())


def _stripe_gradient_ratio(pixels: np.ndarray, pattern: str) -> float:
    """Gradient across the stripes over the gradient along them (> 1: the classifier names ``pattern``)."""
    gx, gy = _gradients(pixels)
    return gy / gx if pattern == "horizontal stripes" else gx / gy


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("patterns") / "data", NUM, seed=SEED,
                              size_range=DEFAULT_SIZE_RANGE, task="patterns")


@pytest.fixture(scope="module")
def samples(dataset):
    return load_jsonl(dataset)


@pytest.fixture(scope="module")
def views(samples):
    """Per sample: (sample, original, 256-token view, 16-token view), the views resized as the env's global view."""
    out = []
    for sample in samples:
        original = Image.open(sample.image_path).convert("RGB")
        full, gap = (original.resize(fit_to_budget(original.size, tokens), Image.Resampling.BICUBIC)
                     for tokens in (FULL_TOKENS, GAP_TOKENS))
        out.append((sample, original, full, gap))
    return out


def _stripes(views):
    chosen = [v for v in views if v[0].meta["pattern"] in ("horizontal stripes", "vertical stripes")]
    assert len(chosen) >= 6, [v[0].meta["pattern"] for v in views]
    return chosen


# ---------------------------------------------------------------------------------------------------- records


@pytest.mark.parametrize("index", range(NUM))
def test_record(index):
    image, sample = make_pattern_sample(index, SEED)
    assert sorted(sample.options) == sorted(PATTERNS)
    assert sample.options[LETTERS.index(sample.answer)] == sample.meta["pattern"]
    assert sample.answer_text == sample.meta["pattern"]
    assert sample.meta["color"] in sample.question and sample.meta["color"] == sample.meta["targets"][0]["color"]

    lo, hi = DEFAULT_SIZE_RANGE
    assert image.size == sample.image_size and all(lo <= side <= hi for side in image.size)
    x1, y1, x2, y2 = _tile(sample)
    assert x2 - x1 == y2 - y1 and TILE_SIDE[0] <= x2 - x1 <= TILE_SIDE[1]
    assert 0 <= x1 and 0 <= y1 and x2 <= image.width and y2 <= image.height
    assert sample.boxes[0] == (x1 - 2, y1 - 2, x2 + 2, y2 + 2)
    assert all(contains(outer, inner) for inner, outer in zip(sample.boxes, sample.boxes[1:])), sample.boxes
    assert len(sample.boxes) >= 2 and contains((0, 0, *image.size), sample.boxes[-1])


@pytest.mark.parametrize("index", range(4))
def test_tile_is_drawn_at_its_box(index):
    """The meta box holds the tile: a dark 1 px outline, inside it half the colour and half a quarter of it."""
    image, sample = make_pattern_sample(index, SEED)
    x1, y1, x2, y2 = (int(v) for v in _tile(sample))
    pixels = np.asarray(image, dtype=float)
    outline = np.concatenate([pixels[y1, x1:x2], pixels[y2 - 1, x1:x2], pixels[y1:y2, x1], pixels[y1:y2, x2 - 1]])
    assert np.abs(outline - 30).max() <= 8  # (30, 30, 30) plus grain of +-8 levels
    color = np.array(COLORS[sample.meta["color"]], dtype=float)
    interior = pixels[y1 + 1:y2 - 1, x1 + 1:x2 - 1]
    mean = interior.reshape(-1, 3).mean(axis=0)
    # The interior is not a whole number of periods: the dark share is 1/2 within STRIPE / 2 of its rows/columns
    # (see test_mask_is_half_dark), which moves the mean by that share of the step between the shades; grain ~2.
    tolerance = (color - color // 4) * (STRIPE / 2) / len(interior) + 2
    assert (np.abs(mean - (color + color // 4) / 2) <= tolerance).all(), (mean, color)


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


# ---------------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("side", [1, 5, 6, 9, 28, 31, 48])
def test_mask_is_half_dark(pattern, side):
    mask = pattern_mask(pattern, side)
    assert mask.shape == (side, side) and mask.dtype == bool
    # Within half a row/column of cells: a side of 2k * STRIPE + STRIPE px leaves one band of STRIPE rows unpaired.
    assert abs(int(mask.sum()) - side * side / 2) <= STRIPE * side / 2, (pattern, side, int(mask.sum()))


def test_mask_layouts_by_hand():
    side = 4 * STRIPE + 2  # two whole periods and a partial band
    band = np.tile(np.repeat([False, True], STRIPE), side)[:side]  # light, dark, light, ... bands of STRIPE px
    horizontal = np.repeat(band[:, None], side, axis=1)
    assert np.array_equal(pattern_mask("horizontal stripes", side), horizontal)
    assert np.array_equal(pattern_mask("vertical stripes", side), horizontal.T)
    assert np.array_equal(pattern_mask("checkerboard", side), horizontal ^ horizontal.T)
    mask = pattern_mask("horizontal stripes", side)
    assert (mask == mask[:, :1]).all()  # constant along x
    assert (mask[:-STRIPE] != mask[STRIPE:]).all() and (mask[:-2 * STRIPE] == mask[2 * STRIPE:]).all()
    diagonal = pattern_mask("diagonal stripes", side)
    assert np.array_equal(diagonal[1:, :-1], diagonal[:-1, 1:])  # constant along x + y
    row = pattern_mask("diagonal stripes", 12 * STRIPE)[0]
    runs = np.diff(np.flatnonzero(np.diff(row.astype(int))))  # lengths of the inner runs along a row
    assert len(runs) >= 2 and (runs == runs[0]).all()
    assert abs(2 * runs[0] / math.sqrt(2) - 2 * STRIPE) <= 1, runs  # period across the stripes ~ 2 * STRIPE px


def test_masks_differ_and_unknown_pattern_raises():
    masks = {p: pattern_mask(p, 24) for p in PATTERNS}
    for i, a in enumerate(PATTERNS):
        for b in PATTERNS[i + 1:]:
            assert not np.array_equal(masks[a], masks[b]), (a, b)
    with pytest.raises(ValueError, match="zigzag"):
        pattern_mask("zigzag", 8)


# ---------------------------------------------------------------------------------------------------- information gap


def test_pattern_legible_in_original(views):
    """Interior contrast = half the luminance step between the colour and its quarter (plus grain); stripes classify."""
    for sample, original, _, _ in views:
        color = np.array(COLORS[sample.meta["color"]], dtype=float)
        expected = float((color - color // 4) @ LUMA) / 2
        contrast = _contrast(_interior(original, _tile(sample), original.size))
        assert 0.85 * expected <= contrast <= 1.15 * expected + 2, (sample.id, sample.meta["color"], contrast, expected)
    for sample, original, _, _ in _stripes(views):
        ratio = _stripe_gradient_ratio(_interior(original, _tile(sample), original.size), sample.meta["pattern"])
        assert ratio >= MIN_GRADIENT_RATIO, (sample.id, sample.meta["pattern"], ratio)


def test_pattern_legible_at_256_tokens(views):
    for sample, original, full, _ in views:
        ratio = _relative_contrast(_interior(full, _tile(sample), original.size), sample, original)
        assert ratio >= LEGIBLE_RATIO, f"{sample.id} at {full.size}: contrast ratio {ratio:.3f}"
    for sample, original, full, _ in _stripes(views):
        ratio = _stripe_gradient_ratio(_interior(full, _tile(sample), original.size), sample.meta["pattern"])
        assert ratio >= MIN_GRADIENT_RATIO, f"{sample.id} {sample.meta['pattern']} at {full.size}: {ratio:.2f}"


def test_pattern_illegible_at_16_tokens(views):
    ratios = {}
    for sample, original, _, gap in views:
        ratios[sample.id] = _relative_contrast(_interior(gap, _tile(sample), original.size), sample, original)
    assert max(ratios.values()) <= ILLEGIBLE_RATIO, {k: round(v, 3) for k, v in ratios.items()}


def test_tile_findable_at_16_tokens(views):
    """The tile's mean colour in the 16-token view is far from the median of the background around it."""
    for sample, original, _, gap in views:
        sx, sy = gap.width / original.width, gap.height / original.height
        x1, y1, x2, y2 = _tile(sample)
        tile = _interior(gap, _tile(sample), original.size).reshape(-1, 3).mean(axis=0)
        pixels = np.asarray(gap, dtype=float)
        yy, xx = np.mgrid[0:gap.height, 0:gap.width]
        cx, cy, half_x, half_y = (x1 + x2) / 2 * sx, (y1 + y2) / 2 * sy, (x2 - x1) / 2 * sx, (y2 - y1) / 2 * sy
        dx, dy = np.abs(xx + 0.5 - cx), np.abs(yy + 0.5 - cy)
        ring = (dx <= 3 * half_x) & (dy <= 3 * half_y) & ~((dx <= half_x + 2) & (dy <= half_y + 2))
        background = np.median(pixels[ring], axis=0)
        distance = float(np.linalg.norm(tile - background))
        assert distance >= MIN_COLOR_DISTANCE, (sample.id, sample.meta["color"], tile.round(), background, distance)


@pytest.mark.parametrize("level", [0, 1])
def test_teacher_crop_keeps_pattern_legible(views, level):
    """Cropping B1 / B2 of the original and resizing it to 16 tokens (the env's crop path) keeps the pattern."""
    for sample, original, _, _ in views:
        region = pixel_region(sample.boxes[level], original.size)
        crop = resize_to_budget(original.crop(region), GAP_TOKENS)
        x1, y1, x2, y2 = _tile(sample)
        box = (x1 - region[0], y1 - region[1], x2 - region[0], y2 - region[1])
        crop_size = (region[2] - region[0], region[3] - region[1])
        pixels = _interior(crop, box, crop_size)
        ratio = _relative_contrast(pixels, sample, original)
        assert ratio >= LEGIBLE_RATIO, f"{sample.id} crop {region} -> {crop.size}: contrast ratio {ratio:.3f}"
        if sample.meta["pattern"] in ("horizontal stripes", "vertical stripes"):
            gradient = _stripe_gradient_ratio(pixels, sample.meta["pattern"])
            assert gradient >= MIN_GRADIENT_RATIO, f"{sample.id} {sample.meta['pattern']} crop: {gradient:.2f}"
