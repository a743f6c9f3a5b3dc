"""Which global-image size the policy sees for each sample (the Stage I resolution strategy)."""

from __future__ import annotations

from typing import Mapping

from lfpc.boxes import Size
from lfpc.data.records import Sample
from lfpc.resolution.strategies import STRATEGIES, choose_level
from lfpc.vision.budget import PATCH, downsample_pyramid


class DisplaySizer:
    """Maps a sample to its display size: ``original`` (the budget size), ``hard`` (the smallest pyramid level),
    ``random`` (a level drawn per sample, reproducible from ``seed`` and the sample id) or ``answer_divergence``
    (the size chosen offline, looked up in ``selected``: sample id -> size, see :mod:`lfpc.resolution`)."""

    def __init__(self, strategy: str, max_tokens: int, scale: float = 0.5 ** 0.5, min_tokens: int = 16,
                 seed: int = 0, selected: Mapping[str, Size] | None = None, side: int = PATCH) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown resolution strategy {strategy!r}; choose one of {STRATEGIES}")
        if strategy == "answer_divergence" and selected is None:
            raise ValueError("strategy 'answer_divergence' needs the offline selection (sample id -> size); "
                             "run `python -m lfpc.resolution.select` or lfpc.resolution.select_resolutions")
        self.strategy, self.max_tokens, self.scale, self.min_tokens, self.seed = (
            strategy, max_tokens, scale, min_tokens, seed)
        self.selected = dict(selected or {})
        self.side = side  # the backbone's pixels per visual token (lfpc.model.families)

    def __call__(self, sample: Sample) -> Size:
        if self.strategy == "answer_divergence":
            if sample.id not in self.selected:
                raise KeyError(f"sample {sample.id!r} has no offline resolution selection (not computed, or "
                               "dropped as never diverging); rerun `python -m lfpc.resolution.select`")
            return self.selected[sample.id]
        if sample.image_size is None:
            raise ValueError(f"sample {sample.id} has no image_size")
        levels = downsample_pyramid(sample.image_size, self.max_tokens, self.scale, self.min_tokens, self.side)
        return levels[choose_level(self.strategy, len(levels), sample.id, self.seed)]
