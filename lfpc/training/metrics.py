"""Per-step rollout statistics, aggregated across ranks with torchmetrics."""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics.aggregation import MeanMetric

from lfpc.boxes import area
from lfpc.rollout.episodes import Trajectory

ROLLOUT_METRICS = (
    "reward/total", "reward/acc", "reward/fmt", "reward/tool", "reward/iou", "reward/l1",
    "rollout/tool_calls", "rollout/tool_call_rate", "rollout/invalid_calls", "rollout/invalid_call_rate", "rollout/iou", "rollout/overlap", "rollout/bbox_ratio",
    "rollout/crop_tokens", "rollout/response_tokens", "rollout/sequence_tokens", "rollout/turns",
)


def trajectory_stats(trajectory: Trajectory) -> dict[str, float | None]:
    """The logged statistics of one trajectory (rewards must already be scored); grounding statistics are
    None for a trajectory that made no crop. The ``*_rate`` means are the fractions of trajectories with at least
    one crop (``tool_call_rate``) and with at least one invalid call (``invalid_call_rate``)."""
    scores, outcome, sample = trajectory.scores, trajectory.outcome, trajectory.sample
    crops = [e for e in trajectory.events if e.get("visual_tokens")]
    image_area = float(sample.image_size[0] * sample.image_size[1]) if sample.image_size else 0.0
    ratios = [area(b) / image_area for b in outcome.crop_boxes] if image_area else []
    stats = {f"reward/{k}": scores[k] for k in ("total", "acc", "fmt", "tool", "iou", "l1")}
    stats.update({
        "rollout/tool_calls": float(outcome.num_crops),
        "rollout/tool_call_rate": float(outcome.num_crops > 0),
        "rollout/invalid_calls": float(outcome.num_invalid_calls),
        "rollout/invalid_call_rate": float(outcome.num_invalid_calls > 0),
        "rollout/response_tokens": float(trajectory.context.num_policy_tokens),
        "rollout/sequence_tokens": float(len(trajectory.context.token_ids)),
        "rollout/turns": float(len(trajectory.turns)),
    })
    cropped = outcome.num_crops > 0
    stats.update({
        "rollout/iou": scores["best_iou"] if cropped else None,
        "rollout/overlap": scores["b1_coverage"] if cropped else None,
        "rollout/bbox_ratio": sum(ratios) / len(ratios) if cropped and ratios else None,
        "rollout/crop_tokens": sum(e["visual_tokens"] for e in crops) / len(crops) if crops else None,
    })
    return stats


class RolloutMetrics(torch.nn.Module):
    """Means of :data:`ROLLOUT_METRICS` over a step's trajectories, synced across processes on compute."""

    def __init__(self) -> None:
        super().__init__()
        self.means = torch.nn.ModuleDict({name.replace("/", "__"): MeanMetric() for name in ROLLOUT_METRICS})

    def compute(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """Update with every trajectory, compute cross-rank means, reset; metrics without any value are left out.

        Every rank computes every metric (each compute is a collective); a missing value counts with weight 0.
        """
        for trajectory in trajectories:
            for name, value in trajectory_stats(trajectory).items():
                self.means[name.replace("/", "__")].update(0.0 if value is None else value,
                                                           weight=0.0 if value is None else 1.0)
        result = {}
        for key, metric in self.means.items():
            value = float(metric.compute()) if metric.update_count else float("nan")
            metric.reset()
            if value == value:  # not NaN
                result[key.replace("__", "/")] = value
        return result
