"""Mix several datasets by ratio (e.g. the paper's Stage I sources, or Table 8's mixed single-stage data)."""

from __future__ import annotations

import random
from typing import Sequence

from lfpc.data.records import Sample


def mix_by_ratio(sources: Sequence[tuple[str, Sequence[Sample], float]], total: int | None, seed: int = 0) -> list[Sample]:
    """Draw ``round(ratio / sum(ratios) * total)`` samples without replacement from each named source, shuffled.

    ``total=None`` takes every sample of each source whose ratio is > 0. A source too small for its share is an error
    naming it, so a mix never silently changes proportions.
    """
    weights = sum(ratio for _, _, ratio in sources)
    if weights <= 0:
        raise ValueError("data mix: the ratios must sum to more than 0")
    rng = random.Random(seed)
    mixed: list[Sample] = []
    for name, samples, ratio in sources:
        if ratio < 0:
            raise ValueError(f"data mix: source {name!r} has a negative ratio {ratio}")
        want = len(samples) if total is None and ratio > 0 else round(ratio / weights * (total or 0))
        if want > len(samples):
            raise ValueError(f"data mix: source {name!r} has {len(samples)} samples but its ratio asks for {want}")
        mixed.extend(rng.sample(list(samples), want))
    rng.shuffle(mixed)
    return mixed
