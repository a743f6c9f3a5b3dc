"""Which global-image size the policy sees for each sample (the Stage I resolution strategy)."""

from __future__ import annotations

import random

from lfpc.data.records import Sample
from lfpc.vision.budget import downsample_pyramid, fit_to_budget

STRATEGIES = ("original", "hard", "random")


class DisplaySizer:
    """Maps a sample to its display size: ``original`` (the budget size), ``hard`` (the smallest pyramid level)
    or ``random`` (a level drawn per sample, reproducible from ``seed`` and the sample id)."""

    def __init__(self, strategy: str, max_tokens: int, scale: float = 0.5 ** 0.5, min_tokens: int = 16,
                 seed: int = 0) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown resolution strategy {strategy!r}; choose one of {STRATEGIES}")
        self.strategy, self.max_tokens, self.scale, self.min_tokens, self.seed = (
            strategy, max_tokens, scale, min_tokens, seed)

    def __call__(self, sample: Sample) -> tuple[int, int]:
        if sample.image_size is None:
            raise ValueError(f"sample {sample.id} has no image_size")
        if self.strategy == "original":
            return fit_to_budget(sample.image_size, self.max_tokens)
        levels = downsample_pyramid(sample.image_size, self.max_tokens, self.scale, self.min_tokens)
        if self.strategy == "hard":
            return levels[-1]
        return random.Random(f"{self.seed}:{sample.id}").choice(levels)
