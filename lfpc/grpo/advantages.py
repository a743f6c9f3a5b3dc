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
    groups = _Groups(values, group_ids)
    centered = values - groups.means[groups.index]
    # Singletons and constant groups carry no learning signal; force exact zeros (rounding could leave ~1e-17).
    flat = groups.flat[groups.index]
    if scale:
        std = (groups.sum(centered**2) / (groups.counts - 1).clamp(min=1)).sqrt()
        centered = centered / (std[groups.index] + eps)
    return torch.where(flat, torch.zeros_like(centered), centered)


def constant_groups(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Whether each group's rewards are all equal (its advantages are all 0: no learning signal), one bool per
    group in the order of the sorted group ids; what dynamic sampling drops (DAPO)."""
    return _Groups(rewards.double(), group_ids).flat


class _Groups:
    """Per-group sums, counts, means and constancy of ``values`` (scatter ops, no Python loop over groups)."""

    def __init__(self, values: Tensor, group_ids: Tensor) -> None:
        self.values = values
        _, self.index = torch.unique(group_ids, return_inverse=True)
        self.num_groups = int(self.index.max()) + 1 if self.index.numel() else 0
        self.counts = self.sum(torch.ones_like(values))
        self.means = self.sum(values) / self.counts
        lowest = values.new_full((self.num_groups,), float("inf")).scatter_reduce_(0, self.index, values, "amin")
        highest = values.new_full((self.num_groups,), float("-inf")).scatter_reduce_(0, self.index, values, "amax")
        self.flat = lowest == highest

    def sum(self, x: Tensor) -> Tensor:
        """Per-group sums of ``x`` (one value per rollout)."""
        return self.values.new_zeros(self.num_groups).index_add_(0, self.index, x)


def group_diagnostics(rewards: Tensor, group_ids: Tensor) -> dict[str, float]:
    """How much learning signal a step's groups carry: ``groups/zero_adv`` is the fraction of groups whose rewards
    are all equal (every advantage 0), ``groups/reward_spread`` the mean within-group reward standard deviation
    (population std, 0 for a singleton)."""
    groups = _Groups(rewards.double(), group_ids)
    if groups.num_groups == 0:
        return {}
    centered = groups.values - groups.means[groups.index]
    spread = (groups.sum(centered**2) / groups.counts).sqrt()
    return {"groups/zero_adv": float(groups.flat.double().mean()), "groups/reward_spread": float(spread.mean())}
