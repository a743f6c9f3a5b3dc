"""Resuming continues a run only in its own folder with its own composed config; the refusal says how to resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lfpc.training.resume import check_resume, resume_command

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
STAGE1 = ["+stage=infogap", "trainer.max_steps=3"]


def composed(out: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"output_dir={out}", "cache_dir=/tmp/cache", *overrides])


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    """A Stage I run folder as train.py leaves it: the composed config and the overrides in .hydra/."""
    run = tmp_path / "stage1"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(composed(run, *STAGE1), run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(STAGE1))
    return run


def test_resuming_in_place_with_the_runs_config_is_accepted(run):
    check_resume(composed(run, "+stage=infogap", "trainer.max_steps=6", f"ckpt_path={run}/checkpoints/last.ckpt"))


def test_resuming_without_the_stage_is_refused_naming_keys_and_the_command(run):
    cfg = composed(run, "trainer.max_steps=6", f"ckpt_path={run}/checkpoints/last.ckpt")
    with pytest.raises(ValueError, match=r"with another config than its run's: \[.*'resolution.strategy'.*'stage'") as err:
        check_resume(cfg)
    assert str(err.value).endswith(f"python train.py +stage=infogap ckpt_path={run}/checkpoints/last.ckpt "
                                   f"hydra.run.dir={run} 'trainer.max_steps=<N>'")


def test_resuming_into_a_new_folder_is_refused(run, tmp_path):
    cfg = composed(tmp_path / "new", *STAGE1, f"ckpt_path={run}/checkpoints/last.ckpt")
    with pytest.raises(ValueError, match=rf"\['output folder \(hydra.run.dir={run}\)'"):
        check_resume(cfg)


def test_a_checkpoint_outside_a_run_folder_is_refused(tmp_path):
    cfg = composed(tmp_path, f"ckpt_path={tmp_path}/elsewhere/last.ckpt")
    with pytest.raises(ValueError, match=r"is not in a train.py run folder \(no .*config.yaml\)"):
        check_resume(cfg)


def test_resume_command_keeps_the_runs_overrides(run):
    assert resume_command(run, "6") == (f"python train.py +stage=infogap ckpt_path={run}/checkpoints/last.ckpt "
                                        f"hydra.run.dir={run} trainer.max_steps=6")
