"""Bootstrap confidence intervals over test questions, for tables built from per-question records.

The unit resampled is the question: a table cell's value is a mean over questions (accuracy, IoU of a crop) and its
interval is the percentile interval of that mean over ``resamples`` sets of questions drawn with replacement, from a
seeded generator (the same seed gives the same interval). A difference between two crop modes of the same model
(e.g. the noise-crop drop of the paper's Table 5, §5.3) is a mean of per-question differences, so resampling it
resamples the questions paired across the modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate (the mean over the questions) and its bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float

    def scaled(self, factor: float) -> "Interval":
        """The same interval in other units (e.g. x100: fractions to percent / points)."""
        return Interval(self.value * factor, self.low * factor, self.high * factor)


def bootstrap_mean(values: Sequence[float | None], resamples: int = RESAMPLES, level: float = LEVEL,
                   seed: int = 0) -> Interval | None:
    """The mean of ``values`` and its percentile bootstrap interval at ``level``.

    ``None`` marks a question on which the value is not defined (e.g. the IoU of a question answered without a
    crop): such questions are resampled like the others and left out of each resample's mean, as they are out of
    the point estimate. Returns None when no value is defined.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    data = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    defined = ~np.isnan(data)
    if not defined.any():
        return None
    if np.ptp(data[defined]) == 0.0:  # every resample's mean is that one value (exactly, no rounding)
        value = float(data[defined][0])
        return Interval(value, value, value)
    filled = np.where(defined, data, 0.0)
    picks = np.random.default_rng(seed).integers(0, len(data), size=(resamples, len(data)))
    counts = defined[picks].sum(axis=1)
    sums = filled[picks].sum(axis=1)
    means = sums[counts > 0] / counts[counts > 0]  # a resample without a defined value has no mean
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(filled.sum() / defined.sum()), float(low), float(high))


def bootstrap_paired_difference(first: Mapping[str, float], second: Mapping[str, float],
                                resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Interval | None:
    """``mean(first) - mean(second)`` over the questions (keys) both hold, with the bootstrap interval of the
    questions resampled in pairs (each drawn question brings its value in both). None without a common question."""
    common = [key for key in first if key in second]
    return bootstrap_mean([first[k] - second[k] for k in common], resamples, level, seed) if common else None


def per_question(records: Iterable[dict], field: str) -> dict[str, float | None]:
    """``{question id: record[field]}`` of per-question records (``records.jsonl``, see
    :mod:`lfpc.evaluation.records`), sorted by id so a resample does not depend on the records' order; booleans as
    0/1, None kept (the value is not defined for that question, e.g. ``last_iou`` without a crop)."""
    values = {r["id"]: r[field] for r in records}
    return {i: None if values[i] is None else float(values[i]) for i in sorted(values)}
