"""Image sizing: one visual token per ``side`` x ``side`` block, pixel budgets, downsampling pyramids.

Sizes are ``(width, height)``. ``side`` is the backbone's pixels per visual token
(:attr:`lfpc.model.families.Backbone.token_side`: 28 for Qwen2.5-VL, the default :data:`PATCH`; 32 for Qwen3-VL).
A size returned here has both sides multiples of ``side`` and lies inside its pixel range, so the family's image
processor (given the same or looser ``min_pixels`` / ``max_pixels``) keeps it unchanged and the visual-token count
is known exactly (the resize rule of transformers' ``smart_resize``).
"""

from __future__ import annotations

import math

from PIL import Image

from lfpc.boxes import Size
from lfpc.model.families import DEFAULT

PATCH = DEFAULT.token_side  # pixels per side of one Qwen2.5-VL visual token (14 px ViT patch x 2x2 merge)
MAX_ASPECT_RATIO = 100.0  # DeepEyes' crop rule (its tool refuses thinner crops); Qwen2.5-VL's processor takes < 200
ASPECT_RULE = (f"the limit of {MAX_ASPECT_RATIO:g} is DeepEyes' crop rule, kept for every image; Qwen2.5-VL's "
               "processor itself accepts aspect ratios below 200")


def _fit_long_side(width: int, height: int, max_pixels: int, factor: int) -> tuple[int, int]:
    """Shrink the longer, then the shorter side until ``width * height <= max_pixels`` (extreme aspects)."""
    if width >= height:
        width = max(factor, math.floor(max_pixels / (height * factor)) * factor)
        height = min(height, max(factor, math.floor(max_pixels / (width * factor)) * factor))
    else:
        height = max(factor, math.floor(max_pixels / (width * factor)) * factor)
        width = min(width, max(factor, math.floor(max_pixels / (height * factor)) * factor))
    return width, height


def smart_resize(width: float, height: float, min_pixels: int, max_pixels: int,
                 factor: int = PATCH) -> Size:
    """Size ``(w, h)`` the family's processor would resize ``width x height`` to (``factor``: its token side).

    Sides are rounded to multiples of ``factor``; a pixel count outside ``[min_pixels, max_pixels]`` is
    brought inside by scaling both sides (aspect preserved up to rounding), as in transformers'
    ``smart_resize``. Unlike it, ``max_pixels`` is a hard cap: when the one-``factor`` floor of a very
    thin image (or ``min_pixels`` close to ``max_pixels``) would overshoot it, the longer side is cut.
    Raises ``ValueError`` for non-positive sizes, an empty pixel range, or an aspect ratio above
    :data:`MAX_ASPECT_RATIO`.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} must be positive")
    if not factor * factor <= max_pixels or not 0 < min_pixels <= max_pixels:
        raise ValueError(f"pixel range [{min_pixels}, {max_pixels}] must satisfy 0 < min_pixels <= max_pixels "
                         f"and max_pixels >= {factor * factor} (one {factor}x{factor} block)")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"image size {width}x{height} has aspect ratio {ratio:.1f} > {MAX_ASPECT_RATIO:g} "
                         f"({ASPECT_RULE})")
    w_bar = round(width / factor) * factor
    h_bar = round(height / factor) * factor
    if w_bar * h_bar > max_pixels:
        beta = math.sqrt(width * height / max_pixels)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
    elif w_bar * h_bar < min_pixels:
        beta = math.sqrt(min_pixels / (width * height))
        w_bar = math.ceil(width * beta / factor) * factor
        h_bar = math.ceil(height * beta / factor) * factor
    if w_bar * h_bar > max_pixels:
        w_bar, h_bar = _fit_long_side(w_bar, h_bar, max_pixels, factor)
    return w_bar, h_bar


def tokens_to_pixels(tokens: int, side: int = PATCH) -> int:
    """Pixel count of ``tokens`` visual tokens (``tokens * side * side``)."""
    return tokens * side * side


def visual_tokens(width: int, height: int, side: int = PATCH) -> int:
    """Visual tokens of an image already resized to multiples of ``side``: ``(w // side) * (h // side)``."""
    return (width // side) * (height // side)


def _check_tokens(max_tokens: int, min_tokens: int) -> None:
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"token budget must satisfy 1 <= min_tokens <= max_tokens, "
                         f"got min_tokens={min_tokens}, max_tokens={max_tokens}")


def fit_to_budget(size: Size, max_tokens: int, min_tokens: int = 4, side: int = PATCH) -> Size:
    """Display size of an image of ``size`` under a budget of ``[min_tokens, max_tokens]`` visual tokens."""
    _check_tokens(max_tokens, min_tokens)
    return smart_resize(size[0], size[1], tokens_to_pixels(min_tokens, side), tokens_to_pixels(max_tokens, side),
                        factor=side)


def resize_to_budget(image: Image.Image, max_tokens: int, min_tokens: int = 4, side: int = PATCH) -> Image.Image:
    """``image`` resized (bicubic) to exactly :func:`fit_to_budget` of its size; a copy when already there."""
    size = fit_to_budget(image.size, max_tokens, min_tokens, side)
    return image.copy() if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def global_view(original: Image.Image, size: Size) -> Image.Image:
    """The global view the model is shown: ``original`` resized (bicubic) to the display ``size``.

    The one function that makes it, for training, resolution selection and evaluation alike.
    """
    return original.resize(tuple(size), Image.Resampling.BICUBIC)


def downsample_pyramid(size: Size, max_tokens: int, scale: float = 0.5 ** 0.5,
                       min_tokens: int = 16, side: int = PATCH) -> list[Size]:
    """Display sizes from the budget size down to about ``min_tokens``, strictly decreasing.

    Level 0 is ``fit_to_budget(size, max_tokens)``; level k scales its sides by ``scale ** k`` and
    re-snaps them to multiples of ``side`` (never below ``min_tokens``). Stops at the first level that
    reaches ``min_tokens`` or would not be strictly smaller than the previous one.
    """
    if not 0.0 < scale < 1.0:
        raise ValueError(f"pyramid scale must be in (0, 1), got {scale}")
    _check_tokens(max_tokens, min_tokens)
    top = fit_to_budget(size, max_tokens, side=side)
    levels = [top]
    level = 1
    while visual_tokens(*levels[-1], side) > min_tokens:
        factor = scale ** level
        candidate = smart_resize(top[0] * factor, top[1] * factor, tokens_to_pixels(min_tokens, side),
                                 tokens_to_pixels(max_tokens, side), factor=side)
        previous = levels[-1]
        if not (candidate[0] <= previous[0] and candidate[1] <= previous[1] and candidate != previous):
            break
        levels.append(candidate)
        level += 1
    return levels
