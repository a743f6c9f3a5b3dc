"""Group-relative advantages for GRPO: each rollout's reward compared with the other rollouts of its prompt."""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """Return per-rollout advantages ``(r - mean_group) / (std_group + eps)`` (``r - mean_group`` if not ``scale``).

    ``std`` is the unbiased standard deviation (``torch.std``'s default), as in GRPO; ``scale=False`` is Dr.GRPO.
    Groups may be interleaved in any order. A group of one rollout, or one whose rewards are all equal, gets
    exactly 0. Computed with scatter ops, without a Python loop over groups.
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must be 1-D of the same length, got {tuple(rewards.shape)} "
            f"and {tuple(group_ids.shape)}"
        )
    if group_ids.dtype.is_floating_point or group_ids.dtype.is_complex or group_ids.dtype == torch.bool:
        raise TypeError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    values = rewards if rewards.dtype.is_floating_point else rewards.float()
    _, index = torch.unique(group_ids, return_inverse=True)
    num_groups = int(index.max()) + 1 if index.numel() else 0

    def group_sum(x: Tensor) -> Tensor:
        return values.new_zeros(num_groups).index_add_(0, index, x)

    counts = group_sum(torch.ones_like(values))
    centered = values - (group_sum(values) / counts)[index]
    lowest = values.new_full((num_groups,), float("inf")).scatter_reduce_(0, index, values, "amin")
    highest = values.new_full((num_groups,), float("-inf")).scatter_reduce_(0, index, values, "amax")
    # Singletons and constant groups carry no learning signal; force exact zeros (rounding could leave ~1e-17).
    flat = (lowest == highest)[index]
    if scale:
        std = (group_sum(centered**2) / (counts - 1).clamp(min=1)).sqrt()
        centered = centered / (std[index] + eps)
    return torch.where(flat, torch.zeros_like(centered), centered)
