"""Decoded-image loading with a small LRU cache, so a huge JPEG is decoded once per sample, not per turn."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

DEFAULT_CACHE_ITEMS = 8


class ImageCache:
    """LRU cache of decoded RGB images keyed by ``(path, mtime, file size)``; thread-safe.

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
        resolved = Path(path).resolve()
        try:
            stat = resolved.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {path} does not exist") from None
        key = (str(resolved), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        with Image.open(resolved) as raw:
            image = raw.convert("RGB")
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
