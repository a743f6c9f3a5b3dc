"""Which pyramid level a resolution strategy picks for a sample (pure functions, no model).

Levels are indexed from 0 (the global view at the token budget) to ``num_levels - 1`` (the most
downsampled one), as returned by :func:`lfpc.vision.budget.downsample_pyramid`.
"""

from __future__ import annotations

import random
from typing import Sequence

STRATEGIES = ("original", "hard", "random", "answer_divergence")
NEVER_DIVERGED = ("hardest", "original", "drop")
NO_ANSWER = "none"  # the answer value of a reply without a valid option


def divergence_level(reference_answer: str, answers: Sequence[str | None]) -> int | None:
    """Index of the first level (largest first) whose answer differs from ``reference_answer``.

    ``answers[i]`` is the answer at level ``i`` (None when that level was not queried). Returns None when
    no queried level diverges.
    """
    return next((i for i, answer in enumerate(answers) if answer is not None and answer != reference_answer),
                None)


def random_level(num_levels: int, seed: int, sample_id: str) -> int:
    """A level drawn uniformly, reproducible from ``seed`` and the sample id."""
    return random.Random(f"{seed}:{sample_id}").choice(range(num_levels))


def choose_level(strategy: str, num_levels: int, sample_id: str, seed: int = 0, divergence: int | None = None,
                 never_diverged: str = "hardest") -> int | None:
    """The level ``strategy`` picks, or None when the sample is dropped.

    ``original`` -> 0; ``hard`` -> the last level; ``random`` -> :func:`random_level`;
    ``answer_divergence`` -> ``divergence`` (see :func:`divergence_level`), and for a sample that never
    diverges: ``never_diverged`` = ``hardest`` (the last level, where the walk ended), ``original`` (0, no
    information gap) or ``drop`` (None: the sample is left out of training).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown resolution strategy {strategy!r}; choose one of {STRATEGIES}")
    if never_diverged not in NEVER_DIVERGED:
        raise ValueError(f"unknown never_diverged policy {never_diverged!r}; choose one of {NEVER_DIVERGED}")
    if num_levels < 1:
        raise ValueError(f"a pyramid needs at least one level, got {num_levels}")
    if strategy == "original":
        return 0
    if strategy == "hard":
        return num_levels - 1
    if strategy == "random":
        return random_level(num_levels, seed, sample_id)
    if divergence is not None:
        return divergence
    return {"hardest": num_levels - 1, "original": 0, "drop": None}[never_diverged]
