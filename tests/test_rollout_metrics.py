"""Logged rollout statistics: exact means whatever the default dtype (bf16-true makes it bf16)."""

from __future__ import annotations

import math

import pytest
import torch

from lfpc.rewards import RewardConfig, score_episode
from lfpc.rollout.base import SamplingConfig
from lfpc.rollout.episodes import EpisodeConfig, run_episodes
from lfpc.rollout.hf import HFRolloutEngine
from lfpc.training.metrics import rollout_means


def test_means_are_exact_over_many_trajectories_under_a_bf16_default_dtype(codec, tiny_model, noise_sample):
    torch.manual_seed(0)
    trajectories = run_episodes(HFRolloutEngine(tiny_model, codec.pad_id, codec.image_pad_id), codec, [noise_sample],
                                [(224, 168)], 2, EpisodeConfig(max_new_tokens_per_turn=12, max_response_tokens=24,
                                                               crop_max_tokens=16), SamplingConfig(temperature=1.0))
    for trajectory in trajectories:
        trajectory.scores = score_episode(trajectory.outcome, trajectory.sample, RewardConfig())
    many = trajectories * 300  # 600 trajectories: a bf16 count stops at 256, bf16 sums lose digits much earlier
    lengths = [len(t.context.token_ids) for t in many]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # what Lightning's bf16-true does around training_step
    try:
        means = rollout_means(many)
    finally:
        torch.set_default_dtype(default)
    assert means["rollout/sequence_tokens"] == pytest.approx(sum(lengths) / len(lengths), rel=1e-12)
    assert means["rollout/turns"] == pytest.approx(sum(len(t.turns) for t in many) / len(many), rel=1e-12)
    assert means["reward/total"] == pytest.approx(sum(t.scores["total"] for t in many) / len(many), rel=1e-12)
    without_crops = [t for t in trajectories if not t.outcome.crop_boxes]
    assert without_crops  # the tiny random policy rarely crops
    # a step without any crop logs NaN crop statistics, never an earlier step's value
    means = rollout_means(without_crops)
    assert math.isnan(means["rollout/iou"]) and math.isnan(means["rollout/bbox_ratio"])
    assert means["rollout/tool_call_rate"] == 0.0
