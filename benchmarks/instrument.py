"""Exclusive wall-time accounting of named sections, and hooks that time the image path of a rollout in place.

The hooks wrap existing functions for the duration of a ``with`` block (behaviour unchanged, originals restored on
exit). Time is *exclusive*: a PIL resize inside the processor counts as ``resize``, not ``processor``, so the
categories add up to the instrumented total without double counting.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter, defaultdict
from contextlib import ExitStack, contextmanager
from typing import Iterator

from PIL import Image, ImageFile

import lfpc.rollout.hf
import lfpc.training.module
from lfpc.agent.env import CropEnvironment
from lfpc.rollout.codec import ChatCodec

# category -> (owner, attribute) pairs timed by :meth:`SectionTimer.hooks`.
IMAGE_PATH_HOOKS: dict[str, tuple[tuple[object, str], ...]] = {
    "decode": ((ImageFile.ImageFile, "load"),),           # the JPEG decode of a file-backed image
    "crop": ((Image.Image, "crop"),),
    "resize": ((Image.Image, "resize"),),
    "processor": ((ChatCodec, "encode_image"),),          # pixel values + grid of one image
    "batching": ((lfpc.rollout.hf, "batch_inputs"),),      # HF engine: pad ids and stack image grids
    "codec": ((ChatCodec, "start"), (ChatCodec, "append_user_turn"), (ChatCodec, "decode")),
    "env": ((CropEnvironment, "step"),),                  # parsing and box checks (crop/resize counted apart)
    "reward": ((lfpc.training.module, "score_episode"),),
}
HOST_CATEGORIES = tuple(IMAGE_PATH_HOOKS)
# event -> (owner, attribute) pairs whose calls :meth:`SectionTimer.hooks` counts without timing them.
IMAGE_PATH_COUNTERS: dict[str, tuple[tuple[object, str], ...]] = {
    "jpeg_decodes": ((ImageFile.ImageFile, "load_prepare"),),  # once per real decode (``load`` may be a no-op)
}


class SectionTimer:
    """Accumulates exclusive seconds and call counts per section name (thread-safe)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._local = threading.local()
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self.seconds.clear()
            self.calls.clear()

    def snapshot(self) -> tuple[dict[str, float], dict[str, int]]:
        """Copies of the seconds and call counts recorded since the last :meth:`reset`."""
        with self._lock:
            return dict(self.seconds), dict(self.calls)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time the block as ``name``, minus the time of sections nested inside it."""
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append(0.0)  # time spent in child sections
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            children = stack.pop()
            if stack:
                stack[-1] += elapsed
            with self._lock:
                self.seconds[name] += elapsed - children
                self.calls[name] += 1

    def wrap(self, name: str, function):
        """``function`` timed as section ``name`` on every call."""
        @functools.wraps(function)
        def timed(*args, **kwargs):
            with self.section(name):
                return function(*args, **kwargs)
        return timed

    def counting(self, name: str, function):
        """``function`` with its calls counted as ``name`` (not timed)."""
        @functools.wraps(function)
        def counted(*args, **kwargs):
            with self._lock:
                self.calls[name] += 1
            return function(*args, **kwargs)
        return counted

    @contextmanager
    def hooks(self, timed: dict[str, tuple[tuple[object, str], ...]] = IMAGE_PATH_HOOKS,
              counted: dict[str, tuple[tuple[object, str], ...]] = IMAGE_PATH_COUNTERS) -> Iterator[None]:
        """Time every ``owner.attribute`` of ``timed`` under its category, and count the calls of ``counted``,
        while the block runs."""
        with ExitStack() as stack:
            for targets, wrapper in ((timed, self.wrap), (counted, self.counting)):
                for name, pairs in targets.items():
                    for owner, attribute in pairs:
                        _patch(stack, owner, attribute, wrapper(name, getattr(owner, attribute)))
            yield


def _patch(stack: ExitStack, owner: object, attribute: str, replacement) -> None:
    """Set ``owner.attribute`` to ``replacement`` until ``stack`` closes."""
    own = vars(owner).get(attribute)  # None when inherited
    setattr(owner, attribute, replacement)
    if own is None:
        stack.callback(delattr, owner, attribute)
    else:
        stack.callback(setattr, owner, attribute, own)
