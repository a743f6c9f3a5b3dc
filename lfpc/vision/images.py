"""Image decoding (checked, EXIF-oriented, 8-bit RGB) with a small LRU cache, so a huge JPEG is decoded once per
sample, not per turn.

Every image is seen in its viewer's frame: the EXIF orientation is applied when decoding, so sizes, ground-truth
boxes, crops and evaluation all use the orientation an image viewer shows. Images larger than the pixel limit
(:func:`set_max_image_pixels`, config key ``max_image_pixels``) are refused before they are decoded.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

DEFAULT_CACHE_ITEMS = 8
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageError(ValueError):
    """An image that cannot be used: unreadable, truncated, or over the pixel limit; the message says which."""


def set_max_image_pixels(max_pixels: int) -> None:
    """Refuse images of more than ``max_pixels`` pixels (decompression bombs); PIL's own guard uses the same limit."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_image_pixels must be a positive integer, got {max_pixels!r}")
    Image.MAX_IMAGE_PIXELS = max_pixels


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit integer modes scaled by 1/257, float mode taken as [0, 1] (as 0-255 if it exceeds 1)."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 1 / 257 if image.mode != "F" else 255.0 if values.size and values.max() <= 1 else 1.0
        image = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def decode_image(source: str | os.PathLike | IO[bytes], name: str | None = None) -> Image.Image:
    """Fully decode ``source`` (a path or a binary file) into an 8-bit RGB image in its EXIF orientation.

    Raises :class:`ImageError` naming ``name`` (default: the path) for an unreadable or truncated file and for one
    over the pixel limit, which is checked from the header before any pixel is decoded.
    """
    name = name or str(source)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(source) as raw:
            width, height = raw.size
            if limit and width * height > limit:
                raise ImageError(f"image {name} has {width} x {height} = {width * height:,} pixels, over the limit "
                                 f"of {limit:,} pixels (raise max_image_pixels to accept it)")
            return _to_rgb(ImageOps.exif_transpose(raw))
    except ImageError:
        raise
    except Image.DecompressionBombError:  # PIL's guard: over twice the limit
        raise ImageError(f"image {name} has over twice the limit of {limit:,} pixels (raise max_image_pixels to "
                         "accept it)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot read image {name}: {err}") from None


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(resolved path, mtime, file size)``: identifies one version of a file."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} does not exist") from None
    return str(resolved), stat.st_mtime_ns, stat.st_size


_CHECKED_SIZES: dict[tuple[tuple[str, int, int], int | None], tuple[int, int]] = {}


def checked_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image at ``path`` in its EXIF orientation, after decoding it fully (see
    :func:`decode_image`); kept per file version and pixel limit, so an unchanged file is decoded once."""
    key = (_file_key(path), Image.MAX_IMAGE_PIXELS)
    if key not in _CHECKED_SIZES:
        _CHECKED_SIZES[key] = decode_image(key[0][0], str(path)).size
    return _CHECKED_SIZES[key]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def image_digest(path: str | os.PathLike) -> str:
    """SHA-256 (16 hex digits) of the bytes of the image file at ``path``, computed once per file version."""
    key = _file_key(path)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(key[0], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()[:16]
    return _DIGESTS[key]


class ImageCache:
    """LRU cache of decoded RGB images (see :func:`decode_image`) keyed by ``(path, mtime, file size)``; thread-safe.

    Cached images are shared between callers: treat them as read-only (``crop``/``resize`` return copies).
    """

    def __init__(self, max_items: int = DEFAULT_CACHE_ITEMS) -> None:
        self._items: OrderedDict[tuple[str, int, int], Image.Image] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = 0
        self.set_max_items(max_items)

    def set_max_items(self, max_items: int) -> None:
        """Change the capacity (>= 1), evicting the least recently used images beyond it."""
        if max_items < 1:
            raise ValueError(f"image cache size must be >= 1, got {max_items}")
        with self._lock:
            self.max_items = max_items
            self._evict()

    def _evict(self) -> None:
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def load(self, path: str | os.PathLike) -> Image.Image:
        """The image at ``path`` decoded as RGB; decoded again only when the file changed."""
        key = _file_key(path)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = decode_image(key[0], str(path))
        with self._lock:
            self._items[key] = image
            self._items.move_to_end(key)
            self._evict()
        return image

    def clear(self) -> None:
        """Drop every cached image."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


_CACHE = ImageCache()


def load_image(path: str | os.PathLike) -> Image.Image:
    """The RGB image at ``path`` from the process-wide cache (read-only; see :class:`ImageCache`)."""
    return _CACHE.load(path)


def set_cache_size(max_items: int) -> None:
    """Set how many decoded images the process-wide cache keeps (default 8)."""
    _CACHE.set_max_items(max_items)
