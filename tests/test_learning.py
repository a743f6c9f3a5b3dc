"""GRPO learns: on a fixed small problem the real training loop (Lightning, the GRPO module, the shipped mini model,
HF rollouts) moves the policy the way the reward points within a few steps, and the same loop with the advantage sign
flipped moves it the other way. A change that breaks learning anywhere on the data path fails here.

The problem: the dense L1 grounding reward of Stage II alone (paper Sec. 3.3: 1 minus the normalized L1 distance of
the crop's corners to the closest GT box; 0 without a crop), the 16-token global view, one tool call allowed. GRPO
must raise the reward, i.e. call the tool more often and with closer boxes (measured: reward 0.33 -> 0.79, tool
calls 0.45 -> 0.98 in 8 steps; negated: 0.16 -> 0.00); with the advantages negated it must not.
"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

import lfpc
from lfpc.training import module as grpo_module
from lfpc.training.run import train

pytestmark = pytest.mark.slow

PROBLEM = ["+stage=baseline", "resolution=hard", "reward=l1", "reward.w_acc=0", "reward.w_fmt=0", "reward.w_tool=0",
           "episode.max_turns=1", "logger=csv",
           "data.num_samples=32", "trainer.max_steps=8", "grpo.prompts_per_step=4", "grpo.group_size=8",
           "grpo.lr=1e-4",
           "checkpoint.every_n_steps=100"]


def run_problem(tmp_path) -> dict:
    with initialize_config_dir(config_dir=str(lfpc.PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*PROBLEM, f"output_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}"])
    return train(cfg)["learning_curve"]


def test_correct_grpo_raises_the_reward(tmp_path):
    curve = run_problem(tmp_path)
    assert curve["reward/total"]["change"] >= 0.3, curve
    assert curve["rollout/tool_calls"]["last_quarter"] >= 0.7, curve


def test_flipped_advantages_do_not_raise_the_reward(tmp_path, monkeypatch):
    original = grpo_module.group_advantages
    monkeypatch.setattr(grpo_module, "group_advantages", lambda *args: -original(*args))
    curve = run_problem(tmp_path)
    assert curve["reward/total"]["change"] <= 0.0, curve
    assert curve["rollout/tool_calls"]["last_quarter"] <= 0.3, curve
