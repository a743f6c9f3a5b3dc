"""Offline resolution selection for Stage I: which downsampled global view each training sample gets.

:mod:`~lfpc.resolution.strategies` picks a pyramid level (pure), :mod:`~lfpc.resolution.selection` queries
the model and applies a strategy, :mod:`~lfpc.resolution.manifest` caches the results, and
:mod:`~lfpc.resolution.select` is the Hydra command (``python -m lfpc.resolution.select``).
"""

from lfpc.model.loading import model_fingerprint
from lfpc.resolution.manifest import Manifest
from lfpc.resolution.selection import (AnswerFn, SelectionConfig, SelectionResult, SelectionStats, rollout_answerer,
                                       select_resolutions)
from lfpc.resolution.strategies import NEVER_DIVERGED, NO_ANSWER, STRATEGIES, choose_level, divergence_level

__all__ = ["AnswerFn", "Manifest", "NEVER_DIVERGED", "NO_ANSWER", "STRATEGIES", "SelectionConfig", "SelectionResult",
           "SelectionStats", "choose_level", "divergence_level", "model_fingerprint", "rollout_answerer",
           "select_resolutions"]
