"""GRPO learns: on a fixed small information-gap problem the real training loop (Lightning, the GRPO module, the
shipped mini model, HF rollouts) raises the reward within a few steps, and the same loop with the advantage sign
flipped does not. A change that breaks learning anywhere on the data path fails here."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

import lfpc
from lfpc.training import module as grpo_module
from lfpc.training.run import train

pytestmark = pytest.mark.slow

# Stage I at the hardest pyramid level (16 tokens: the pattern is illegible without a crop), 8 questions, one tool
# call: cropping and reading pays 2.2, a direct guess at most 1.0.
PROBLEM = ["+stage=baseline", "resolution=hard", "logger=csv", "data.num_samples=8", "trainer.max_steps=LEARN_STEPS",
           "grpo.prompts_per_step=4", "grpo.group_size=8", "grpo.lr=3e-4", "episode.max_turns=1",
           "checkpoint.every_n_steps=100"]
LEARN_STEPS = 6


def run_problem(tmp_path) -> dict:
    overrides = [o.replace("LEARN_STEPS", str(LEARN_STEPS)) for o in PROBLEM]
    with initialize_config_dir(config_dir=str(lfpc.PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"output_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}"])
    return train(cfg)["learning_curve"]


def test_correct_grpo_raises_the_reward(tmp_path):
    curve = run_problem(tmp_path)
    assert curve["reward/total"]["change"] >= 0.2, curve
    assert curve["rollout/tool_calls"]["change"] >= 0.0, curve


def test_flipped_advantages_do_not_raise_the_reward(tmp_path, monkeypatch):
    original = grpo_module.group_advantages
    monkeypatch.setattr(grpo_module, "group_advantages", lambda *args: -original(*args))
    curve = run_problem(tmp_path)
    assert curve["reward/total"]["change"] < 0.1, curve
