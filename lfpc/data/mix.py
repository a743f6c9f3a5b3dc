"""Mix several datasets by ratio (e.g. the paper's Stage I sources, or Table 8's mixed single-stage data)."""

from __future__ import annotations

import logging
import math
import random
from typing import Sequence

from lfpc.data.records import Sample

log = logging.getLogger(__name__)


def mix_by_ratio(sources: Sequence[tuple[str, Sequence[Sample], float]], total: int | None,
                 seed: int = 0) -> list[Sample]:
    """Draw ``round(ratio / sum(ratios) * total)`` samples from each named source, shuffled, and log the counts.

    ``total=None`` is the smallest mix holding every sample of every source with ratio > 0 at least once (Table 8's
    1:1 mix of |Stage I| collected samples and 256 VisualProbe ones: |Stage I| of each, paper Sec. 10). A source
    smaller than its share is drawn with replacement, as evenly as possible: each sample ``share // size`` times,
    plus ``share % size`` distinct ones; a larger source is drawn without replacement.
    """
    weights = sum(ratio for _, _, ratio in sources)
    if weights <= 0:
        raise ValueError("data mix: the ratios must sum to more than 0")
    for name, samples, ratio in sources:
        if ratio < 0:
            raise ValueError(f"data mix: source {name!r} has a negative ratio {ratio}")
        if ratio > 0 and not samples:
            raise ValueError(f"data mix: source {name!r} has ratio {ratio} but no samples")
    if total is None:
        total = max(math.ceil(len(samples) * weights / ratio - 1e-9) for _, samples, ratio in sources if ratio > 0)
    rng = random.Random(seed)
    mixed: list[Sample] = []
    counts = {}
    for name, samples, ratio in sources:
        want = round(ratio / weights * total)
        repeats, rest = divmod(want, len(samples)) if samples else (0, 0)
        drawn = list(samples) * repeats + rng.sample(list(samples), rest)
        mixed.extend(drawn)
        counts[name] = f"{len(drawn)} of {len(samples)}" + (" (with replacement)" if want > len(samples) else "")
    rng.shuffle(mixed)
    log.info("data mix of %d samples: %s", len(mixed), ", ".join(f"{n} {c}" for n, c in counts.items()))
    return mixed
