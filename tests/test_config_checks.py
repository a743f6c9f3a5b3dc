"""A composed training config is checked before anything is built; every refusal names the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lfpc.training.run import train

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def run_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"output_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
                                            "logger=csv", *overrides])


@pytest.mark.parametrize("override, message", [
    ("grpo.lr=fast", "config key grpo.lr must be a number > 0, got 'fast'"),
    ("grpo.lr=0", "config key grpo.lr must be a number > 0, got 0"),
    ("grpo.group_size=0", "config key grpo.group_size must be an integer >= 2, got 0"),
    ("grpo.group_size=1", "config key grpo.group_size must be an integer >= 2, got 1 (GRPO's advantage is a "
                          "rollout's reward minus its group's mean: in a group of one it is always 0"),
    ("grpo.prompts_per_step=2.5", "config key grpo.prompts_per_step must be an integer >= 1, got 2.5"),
    ("trainer.max_steps=-5", "config key trainer.max_steps must be an integer >= 0, got -5"),
    ("grpo.top_p=1.5", "config key grpo.top_p must be a number > 0 and <= 1, got 1.5"),
    ("lr_scale=true", "config key lr_scale must be a number > 0, got True"),
    ("max_image_pixels=0", "config key max_image_pixels must be an integer >= 1, got 0"),
])
def test_bad_setting_is_refused_before_anything_is_built(tmp_path, override, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        train(run_cfg(tmp_path, override))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_more_prompts_per_step_than_samples_is_refused(tmp_path):
    cfg = run_cfg(tmp_path, "model=tiny", "model.warmup.steps=0", "data=synthetic", "data.num_samples=2",
                  "data.image_size=[256,256]", "grpo=tiny", "grpo.prompts_per_step=4")
    with pytest.raises(ValueError, match="config key grpo.prompts_per_step is 4 but there are only 2 training samples"):
        train(cfg)
    assert not (tmp_path / "out" / "hf_model").exists()
