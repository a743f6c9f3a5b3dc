"""The offline GPU check (benchmarks/gpu_offline.py): the prepared .gpu-site/ plus the checkout import the project on a
Python that has only torch, transformers and their dependencies; the command's CPU mode runs every step."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from benchmarks import gpu_offline

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / ".gpu-site"
# what a bare GPU machine lacks (the review of one: torch and transformers, no Lightning, Hydra or OmegaConf), plus
# the project's own install and what only optional features import
ABSENT = ("lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities", "torchmetrics", "fsspec",
          "omegaconf", "hydra", "antlr4", "peft", "wandb", "vllm", "lfpc", "__editable__")


@pytest.mark.skipif(not SITE.is_dir(), reason="`make gpu-site` has not prepared .gpu-site/ (it needs a registry)")
def test_prepared_site_imports_the_project_without_installing_it(tmp_path):
    machine = tmp_path / "machine-site"  # this venv's packages less the absent ones, as on the bare machine
    machine.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(ABSENT) and entry.suffix != ".pth":
            (machine / entry.name).symlink_to(entry)
    code = ("import json, importlib, lfpc, lfpc.training.run, benchmarks.gpu_check, benchmarks.gpu_offline\n"
            "print(json.dumps({m: importlib.import_module(m).__file__ for m in "
            "('lfpc', 'lightning', 'torchmetrics', 'hydra', 'omegaconf', 'torch', 'transformers')}))")
    # -S: no site-packages of this venv (nor its .pth files, the project's editable install among them)
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": f"{SITE}:{ROOT}:{machine}", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    origins = json.loads(proc.stdout.splitlines()[-1])
    assert origins["lfpc"].startswith(str(ROOT / "lfpc"))
    for carried in ("lightning", "torchmetrics", "hydra", "omegaconf"):
        assert origins[carried].startswith(str(SITE)), carried
    for own in ("torch", "transformers"):
        assert origins[own].startswith(str(machine)), own


@pytest.mark.slow
def test_cpu_mode_runs_every_step_and_writes_the_benchmarks_section(tmp_path):
    out = tmp_path / "out"
    code = gpu_offline.main(["--out", str(out), "--device", "cpu", "--work-dir", str(tmp_path / "work")])
    results = json.loads((out / "gpu_offline.json").read_text())
    markdown = (out / "gpu_offline.md").read_text()
    steps = results["steps"]
    assert code == 0 and results["passed"], {k: v.get("log_tail") for k, v in steps.items()}
    assert results["environment"]["missing"] == [] and results["environment"]["lfpc_from_checkout"]
    mini = steps["mini_fsdp2"]
    assert mini["grpo_steps"] == 1 and mini["distributed_checkpoint"] and mini["exported"]
    assert mini["phase_seconds"]["time/update"] > 0 and mini["seconds"] > mini["phase_seconds"]["time/update"]
    check = steps["gpu_check"]
    assert check["passed"] and check["sections"]["train"] == "ok" and check["sections"]["sync_hf"] == "ok"
    assert check["dims"] == "tiny" and check["train_mean"]["step_s"] > 0 and check["resident_gib"]["weights"] > 0
    assert steps["planner"]["status"] == "ok" or steps["planner"]["status"].startswith("skipped: lfpc.plan")
    assert "measured on CPU" in markdown and "| mini_fsdp2 | ok |" in markdown and "| gpu_check | ok |" in markdown
    assert f"Planner: {steps['planner']['status']}" in markdown
