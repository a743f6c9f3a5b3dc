"""The noise probe: an online "does the policy use its crops" signal, the noise-crop test of paper Sec. 3 (Table 1)
run on a few of a training step's own trajectories.

Every ``every_n_steps`` GRPO steps, up to ``size`` trajectories of the step (per rank) that made a crop are re-run
from their own first crop call, twice and greedily: once with the crop the environment returns in training
(``episode.crop_mode``, the real crop) and once with it replaced by noise of the crop's size (``noise`` mode of
:class:`lfpc.agent.env.CropEnvironment`, which also answers any later call with noise). The turns up to that call
are replayed token for token; only what follows is generated. ``probe/noise_unchanged`` is the share of probed
trajectories whose answer (its canonical form, :func:`lfpc.answers.answer_key`) is the same in both re-runs: near 1,
the answers do not depend on what the crops show. Greedy decoding in both re-runs keeps sampling from counting as a
change. Off by default; when on, it costs ``2 * size`` partial episodes on the steps it runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

from lfpc.answers import answer_key
from lfpc.rollout.base import RolloutEngine, SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.episodes import EpisodeConfig, Trajectory, run_episodes

GREEDY = SamplingConfig(temperature=0.0)


@dataclass(frozen=True)
class NoiseProbeConfig:
    """How often the probe runs (every ``every_n_steps`` GRPO steps; 0: never) and how many trajectories each rank
    re-runs (``size``)."""

    every_n_steps: int = 0
    size: int = 4

    def __post_init__(self) -> None:
        if self.every_n_steps < 0 or self.size < 1:
            raise ValueError(f"noise_probe needs every_n_steps >= 0 and size >= 1, got {self.every_n_steps} and "
                             f"{self.size}")

    def due(self, grpo_step: int) -> bool:
        """Whether the probe runs at (0-based) GRPO step ``grpo_step``: the first step, then every N."""
        return self.every_n_steps > 0 and grpo_step % self.every_n_steps == 0


def first_crop_turn(trajectory: Trajectory) -> int | None:
    """The number of assistant turns up to and including the trajectory's first crop (a tool call that returned an
    image), or None when it made none or its turns cannot be replayed (a turn without tokens)."""
    turn = next((event["turn"] for event in trajectory.events if event.get("crop_size")), None)
    return turn if turn is not None and len(trajectory.context.policy_turns()) == len(trajectory.turns) else None


def probe_set(trajectories: Sequence[Trajectory], size: int) -> list[Trajectory]:
    """Up to ``size`` of the trajectories that made a crop, taken across groups (the first cropping trajectory of
    each group, then the second, ...), so that a small probe covers as many questions as it can."""
    rank_in_group: dict[int, int] = {}
    ranked = []
    for order, trajectory in enumerate(trajectories):
        if first_crop_turn(trajectory) is not None:
            rank = rank_in_group[trajectory.group] = rank_in_group.get(trajectory.group, -1) + 1
            ranked.append((rank, order, trajectory))
    return [trajectory for _, _, trajectory in sorted(ranked, key=lambda item: item[:2])[:size]]


def rerun(engine: RolloutEngine, codec: ChatCodec, probes: Sequence[Trajectory], config: EpisodeConfig, mode: str,
          seed: int = 0) -> list[Trajectory]:
    """Re-run each probed trajectory greedily in crop ``mode`` from its first crop call (its turns up to that call
    replayed as they were)."""
    replay = [trajectory.context.policy_turns()[:first_crop_turn(trajectory)] for trajectory in probes]
    return run_episodes(engine, codec, [t.sample for t in probes], [t.display_size for t in probes], 1,
                        dataclasses.replace(config, crop_mode=mode), GREEDY, seed=seed, replay=replay)


def noise_probe(engine: RolloutEngine, codec: ChatCodec, trajectories: Sequence[Trajectory], config: EpisodeConfig,
                size: int, seed: int = 0) -> tuple[int, int]:
    """(unchanged, probed): how many of up to ``size`` cropping ``trajectories`` keep their answer when their crops
    are replaced by noise, and how many were probed (see the module docstring)."""
    probes = probe_set(trajectories, size)
    if not probes:
        return 0, 0
    control = rerun(engine, codec, probes, config, config.crop_mode, seed)
    noised = rerun(engine, codec, probes, config, "noise", seed)
    unchanged = sum(answer_key(a.outcome.answer, a.sample) == answer_key(b.outcome.answer, b.sample)
                    for a, b in zip(control, noised))
    return unchanged, len(probes)


def share(unchanged: float, probed: float) -> float:
    """``probe/noise_unchanged`` from counts summed over ranks; NaN when nothing was probed."""
    return unchanged / probed if probed else math.nan
