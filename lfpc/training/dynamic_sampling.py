"""Dynamic sampling, as DAPO does it (Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
2025): a GRPO group whose rollouts all got the same reward has every advantage 0 and teaches nothing, yet it fills a
place of the batch (and, under the token-mean loss, its tokens dilute the other groups' gradient). Such groups are
dropped and more prompts are rolled out until the step has as many groups with a reward spread as it has prompts.

The update's batch keeps its shape (``prompts_per_step`` groups of ``group_size`` rollouts per rank, so the number
of optimizer steps per GRPO step is fixed): surplus groups with signal are discarded (as DAPO does), and when
``max_rounds`` rollout rounds still leave too few, dropped groups complete the batch (they contribute no policy
gradient; without dynamic sampling they would all be in it). Each rank fills its own batch (rollouts run per rank,
without collectives); the extra prompts come from :meth:`lfpc.training.batches.StepSampler.refill_indices`, a pure
function of the step and round, so a resumed run draws what the interrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from lfpc.data.records import Sample
from lfpc.grpo.advantages import constant_groups
from lfpc.rollout.episodes import Trajectory

Rollout = Callable[[list[Sample], int], list[Trajectory]]  # (prompts, round) -> scored trajectories, groups 0..n-1
Refill = Callable[[int], list[Sample]]                     # round (1, 2, ...) -> the prompts to roll out in it
METRICS = ("sampling/rounds", "sampling/groups_generated", "sampling/groups_dropped", "sampling/flat_in_batch")


@dataclass(frozen=True)
class DynamicSamplingConfig:
    """``grpo.dynamic_sampling``: on or off, and the rollout rounds a step may run at most, the first included
    (DAPO's ``max_num_gen_batches``); each later round rolls out as many new prompts as the step has."""

    enabled: bool = False
    max_rounds: int = 4

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"grpo.dynamic_sampling.max_rounds must be >= 1, got {self.max_rounds}")


@dataclass
class _Group:
    trajectories: list[Trajectory]
    signal: bool  # the rewards differ: some advantage is nonzero


def dynamic_sample(samples: Sequence[Sample], rollout: Rollout, refill: Refill,
                   max_rounds: int) -> tuple[list[Trajectory], dict[str, float]]:
    """Roll out ``samples``, then refill rounds until ``len(samples)`` groups have a reward spread or ``max_rounds``
    rounds ran. Returns the batch's trajectories (``len(samples)`` groups, in the order they were generated, groups
    renumbered 0, 1, ...) and this rank's counts of :data:`METRICS`: rounds run, groups generated, groups left out
    of the batch, and groups without signal put in it to keep its shape."""
    needed = len(samples)
    groups: list[_Group] = []
    rounds = 0
    while True:
        groups.extend(_groups(rollout(list(samples), rounds)))
        rounds += 1
        if sum(g.signal for g in groups) >= needed or rounds >= max_rounds:
            break
        samples = refill(rounds)
    batch = _select(groups, needed)
    for index, group in enumerate(batch):
        for trajectory in group.trajectories:
            trajectory.group = index
    stats = {"sampling/rounds": rounds, "sampling/groups_generated": len(groups),
             "sampling/groups_dropped": len(groups) - len(batch),
             "sampling/flat_in_batch": sum(not g.signal for g in batch)}
    return [t for group in batch for t in group.trajectories], {k: float(v) for k, v in stats.items()}


def _groups(trajectories: list[Trajectory]) -> list[_Group]:
    """One round's trajectories as groups (by ``Trajectory.group``, in id order), each marked with its signal."""
    ids = sorted({t.group for t in trajectories})
    rewards = torch.tensor([t.scores["total"] for t in trajectories], dtype=torch.float32)  # as the advantages
    flat = constant_groups(rewards, torch.tensor([t.group for t in trajectories])).tolist()
    return [_Group([t for t in trajectories if t.group == gid], not is_flat) for gid, is_flat in zip(ids, flat)]


def _select(groups: list[_Group], needed: int) -> list[_Group]:
    """The first ``needed`` groups with signal, completed with the first groups without when too few have it, in
    the order they were generated."""
    with_signal = [i for i, g in enumerate(groups) if g.signal][:needed]
    without = [i for i, g in enumerate(groups) if not g.signal][:needed - len(with_signal)]
    return [groups[i] for i in sorted(with_signal + without)]
