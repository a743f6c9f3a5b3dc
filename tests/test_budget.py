"""Qwen2.5-VL resize rule, token budgets and the downsampling pyramid."""

import numpy as np
import pytest
from PIL import Image

from lfpc.vision.budget import (downsample_pyramid, fit_to_budget, resize_to_budget, smart_resize,
                                tokens_to_pixels, visual_tokens)


def test_tokens_to_pixels_and_visual_tokens():
    assert tokens_to_pixels(1024) == 802_816  # 1024 * 28 * 28
    assert tokens_to_pixels(4) == 3_136  # 56 * 56, the Qwen default min_pixels
    assert visual_tokens(1008, 756) == 972  # 36 * 27
    assert visual_tokens(28, 28) == 1


def test_large_image_shrinks_under_budget():
    # 4096x3072 at 1024 tokens: max_pixels = 802816; rounding gives 4088x3080 (too many pixels), so
    # beta = sqrt(4096*3072 / 802816) = 3.95898; 4096/beta/28 = 36.95 -> 36*28 = 1008;
    # 3072/beta/28 = 27.71 -> 27*28 = 756; 36*27 = 972 tokens <= 1024.
    assert smart_resize(4096, 3072, 3136, 802_816) == (1008, 756)
    assert fit_to_budget((4096, 3072), 1024) == (1008, 756)


def test_size_already_on_the_grid_is_kept():
    assert smart_resize(1008, 756, 3136, 802_816) == (1008, 756)


def test_sides_round_to_nearest_multiple():
    # 1000x600 at a large budget: round(1000/28 = 35.71) = 36 -> 1008; round(600/28 = 21.43) = 21 -> 588.
    assert fit_to_budget((1000, 600), 16384) == (1008, 588)


def test_tiny_image_is_enlarged_to_min_pixels():
    # 20x30: rounds to 28x28 = 784 < 3136, so beta = sqrt(3136/600) = 2.2862;
    # 20*beta/28 = 1.63 -> ceil 2 -> 56; 30*beta/28 = 2.45 -> ceil 3 -> 84; 56*84 = 4704 >= 3136.
    assert smart_resize(20, 30, 3136, 802_816) == (56, 84)
    assert visual_tokens(*fit_to_budget((20, 30), 1024, min_tokens=4)) >= 4


def test_max_pixels_is_a_hard_cap_for_thin_images():
    # 28x2800 (aspect 100) at 4 tokens: the proportional rule gives 28x560 (20 tokens, the 28 px floor of
    # the thin side); the cap cuts the long side to floor(3136 / 28 / 28) * 28 = 112 -> 28x112 = 4 tokens.
    assert smart_resize(28, 2800, 3136, 3136) == (28, 112)


def test_matches_transformers_for_ordinary_sizes():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as reference

    for width, height, min_px, max_px in [(4096, 3072, 3136, 802_816), (7680, 4320, 3136, 12_845_056),
                                          (640, 480, 3136, 802_816), (33, 47, 3136, 802_816),
                                          (1234, 567, 3136, 200_704)]:
        ref_h, ref_w = reference(height, width, 28, min_px, max_px)
        assert smart_resize(width, height, min_px, max_px) == (ref_w, ref_h)


def test_extreme_aspect_ratio_is_rejected_with_the_size():
    # the limit is DeepEyes' crop rule, not Qwen2.5-VL's (its processor accepts ratios below 200)
    with pytest.raises(ValueError, match=r"3000x20 has aspect ratio 150\.0 > 100 \(the limit of 100 is DeepEyes' "
                                         r"crop rule.*processor itself accepts aspect ratios below 200\)"):
        smart_resize(3000, 20, 3136, 802_816)
    assert smart_resize(2800, 28, 3136, 802_816) == (2800, 28)  # exactly 100 is allowed


@pytest.mark.parametrize("kwargs", [dict(width=0, height=10, min_pixels=3136, max_pixels=802_816),
                                    dict(width=10, height=10, min_pixels=5000, max_pixels=4000),
                                    dict(width=10, height=10, min_pixels=1, max_pixels=100)])
def test_invalid_sizes_and_ranges_raise(kwargs):
    with pytest.raises(ValueError):
        smart_resize(**kwargs)


def test_fit_to_budget_rejects_min_above_max():
    with pytest.raises(ValueError, match="min_tokens=8, max_tokens=4"):
        fit_to_budget((100, 100), 4, min_tokens=8)


def test_resize_to_budget_size_and_content():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8))
    # 300x200 at 16 tokens (12544 px): 308x196 too big; beta = sqrt(60000/12544) = 2.18706;
    # 300/beta/28 = 4.90 -> 112; 200/beta/28 = 3.27 -> 84.
    resized = resize_to_budget(image, 16)
    assert resized.size == (112, 84)
    on_grid = Image.fromarray(rng.integers(0, 256, size=(56, 84, 3), dtype=np.uint8))
    kept = resize_to_budget(on_grid, 16)
    assert kept.size == (84, 56) and kept is not on_grid
    assert np.array_equal(np.asarray(kept), np.asarray(on_grid))


def test_pyramid_levels_halve_tokens_and_stay_on_grid():
    levels = downsample_pyramid((4096, 3072), 1024)
    # Level 0 = the budget size; level 1 = 1008*0.7071 = 712.8 -> round(25.46) = 25 -> 700,
    # 756*0.7071 = 534.6 -> round(19.09) = 19 -> 532; level 3 = 356.4 -> 13 -> 364, 267.3 -> 10 -> 280.
    assert levels[0] == (1008, 756)
    assert levels[1] == (700, 532)
    assert levels[3] == (364, 280)
    tokens = [visual_tokens(*size) for size in levels]
    assert all(w % 28 == 0 and h % 28 == 0 for w, h in levels)
    assert all(a > b for a, b in zip(tokens, tokens[1:]))
    assert all(w1 >= w2 and h1 >= h2 for (w1, h1), (w2, h2) in zip(levels, levels[1:]))
    assert len(set(levels)) == len(levels)
    # Stops near min_tokens=16: the last level holds at least 16 tokens and fewer than 2 * 16.
    assert 16 <= tokens[-1] < 32


def test_pyramid_of_a_tiny_image_has_one_level():
    # 100x100 at 1024 tokens: round(3.57) = 4 -> 112x112 = 16 tokens, already at min_tokens.
    assert downsample_pyramid((100, 100), 1024) == [(112, 112)]


def test_pyramid_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        downsample_pyramid((1000, 1000), 1024, scale=1.0)
