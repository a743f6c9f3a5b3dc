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


def test_a_second_run_in_one_folder_is_refused_before_anything_else(tmp_path, holding):
    from lfpc.training.run import train
    out = tmp_path / "run"
    other = holding(out)  # a running train.py or eval.py
    with pytest.raises(RuntimeError, match=rf"in use by another process \(pid {other.pid}\)"):
        train(composed(out, "data=jsonl", f"data.path={out}/none.jsonl"))  # refused before any data is read
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


class Interrupted:
    """Pickling it raises, as a kill or a full disk would cut a save short after part of the file was written."""

    def __reduce__(self):
        raise KeyboardInterrupt


def test_a_checkpoint_save_cut_short_keeps_the_previous_checkpoint(tmp_path):
    import torch

    from lfpc.training.resume import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"weights": torch.arange(1000), "step": 2}, path)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"weights": torch.arange(1000), "step": 3, "cut": Interrupted()}, path)
    assert io.load_checkpoint(path)["step"] == 2 and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_a_damaged_checkpoint_is_refused_by_name_listing_the_others(tmp_path):
    import torch

    from lfpc.training.resume import AtomicCheckpointIO
    folder, io = tmp_path / "checkpoints", AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.arange(100000), "step": 2}, folder / "kept" / "step=2.ckpt")
    io.save_checkpoint({"weights": torch.arange(100000), "step": 4}, folder / "step=4.ckpt")
    (folder / "last.ckpt").symlink_to("step=4.ckpt")
    for size in (5000, 0):
        with (folder / "step=4.ckpt").open("r+b") as handle:
            handle.truncate(size)
        with pytest.raises(ValueError, match=r"last\.ckpt \(-> .*step=4\.ckpt\) is damaged .*ckpt_path=\.\.\. \(.*kept/step=2\.ckpt"):
            io.load_checkpoint(str(folder / "last.ckpt"))


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_a_second_run_never_replaces_the_running_ones_hydra_config(tmp_path, holding, script):
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "config.yaml").write_text("the running job's config\n")
    root = Path(__file__).resolve().parents[1]
    holding(out)  # the running job
    proc = subprocess.run([sys.executable, script, f"hydra.run.dir={out}", "trainer.max_steps=-1"], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "in use by another process" in proc.stderr
    assert (out / ".hydra" / "config.yaml").read_text() == "the running job's config\n"
    assert sorted(p.name for p in (out / ".hydra").iterdir()) == ["config.yaml"]
