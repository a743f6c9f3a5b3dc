"""A composed training config is checked before anything is built; every refusal names the key."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lfpc.training.run import build_strategy, train

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")


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


def test_multi_process_launch_without_a_run_folder_is_refused_naming_the_override(tmp_path):
    # as torchrun runs it: each rank is its own train.py under @hydra.main, here with its default ${now} folder
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "train.py"), "trainer=cpu_fsdp2", f"cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "a 2-process launch needs one run folder for every rank: add hydra.run.dir=<folder>" in proc.stderr
    assert not (tmp_path / "cache").exists()  # refused before anything was built


def test_fsdp2_collectives_wait_three_hours_on_the_paper_launch():
    # rollouts of different lengths per rank must not trip Lightning's 30-minute default
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        trainer = compose("config", overrides=["trainer=fsdp_8gpu", "output_dir=/tmp/out"]).trainer
    assert build_strategy(trainer)._timeout == datetime.timedelta(hours=3)
