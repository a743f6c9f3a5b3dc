"""Per-step rollout statistics, aggregated across ranks in float64."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist

from lfpc.boxes import area
from lfpc.rollout.episodes import Trajectory

ROLLOUT_METRICS = (
    "reward/total", "reward/acc", "reward/fmt", "reward/tool", "reward/iou", "reward/l1",
    "rollout/tool_calls", "rollout/tool_call_rate", "rollout/invalid_calls", "rollout/invalid_call_rate",
    "rollout/iou", "rollout/overlap", "rollout/bbox_ratio",
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


def rollout_means(trajectories: Sequence[Trajectory], device: torch.device | str = "cpu") -> dict[str, float]:
    """Means of :data:`ROLLOUT_METRICS` over a step's trajectories of every rank; NaN for a metric no trajectory has a
    value of (e.g. crop IoU in a step without crops): Lightning would otherwise log that key's value of an earlier
    step again. Sums and counts are float64 whatever the default dtype (bf16 under ``bf16-true`` stops counting at
    256); torchmetrics' states would be cast by the precision plugin with the module.

    Under torch.distributed this is a collective (one all-reduce on ``device``): every rank must call it.
    """
    totals = [[0.0, 0.0] for _ in ROLLOUT_METRICS]
    for trajectory in trajectories:
        stats = trajectory_stats(trajectory)
        for total, name in zip(totals, ROLLOUT_METRICS):
            if stats[name] is not None:
                total[0] += stats[name]
                total[1] += 1.0
    return {name: value / count if count > 0 else math.nan
            for name, (value, count) in zip(ROLLOUT_METRICS, sum_over_ranks(totals, device))}


def sum_over_ranks(values: list, device: torch.device | str = "cpu") -> list:
    """``values`` (numbers or nested lists of numbers) summed element-wise over the ranks in float64, as lists; a
    collective under torch.distributed (one all-reduce on ``device``): every rank must call it."""
    summed = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(summed)
    return summed.tolist()
