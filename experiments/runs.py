"""The runs a definition produced under its output folder (see :mod:`experiments.layout`): its training jobs, its
evaluation folders and what each training job cost. Shared by the table collectors and the miniature's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments.definitions import Definition
from experiments.layout import TrainJob, eval_dir, find_train_jobs

STEP_TIMES = ("time/sync", "time/rollout", "time/update")


def train_jobs(definition: Definition, runs_dir: Path) -> list[TrainJob]:
    """Every training job folder of the definition found under ``runs_dir``, in definition and sweep order."""
    return [job for step in definition.train for job in find_train_jobs(runs_dir, step.name)]


def eval_labels(definition: Definition, runs_dir: Path) -> list[str]:
    """The labels the definition evaluates (base-model labels and evaluated train jobs), in definition order."""
    labels: list[str] = []
    for step in definition.eval:
        found = [step.label] if step.of is None else [j.label for j in find_train_jobs(runs_dir, step.of)]
        labels += [label for label in found if label not in labels]
    return labels


def eval_folders(definition: Definition, runs_dir: Path) -> list[Path]:
    """The eval results folders (with ``metrics.json``) of the definition's labels, in label order."""
    return [path.parent for label in eval_labels(definition, runs_dir)
            for path in sorted(eval_dir(runs_dir, label).glob("*/metrics.json"))]


def job_cost(job: TrainJob) -> dict[str, Any]:
    """Cost measures of a training job (None where its files do not tell)."""
    from analysis.dynamics import load_metrics

    config = OmegaConf.load(job.dir / ".hydra" / "config.yaml")
    cost: dict[str, Any] = {"accelerator": config.trainer.accelerator, "devices": config.trainer.devices,
                            "stage": config.get("stage")}
    summary, start = job.dir / "summary.json", job.dir / ".hydra" / "config.yaml"
    wall_h = (summary.stat().st_mtime - start.stat().st_mtime) / 3600 if summary.is_file() else None
    metrics = load_metrics(job.dir)
    step_times = metrics[[t for t in STEP_TIMES if t in metrics]].sum(axis=1)
    cost.update(grpo_steps=len(metrics), step_s=float(step_times.mean()) if len(metrics) else None,
                rollout_pct=100.0 * float(metrics["time/rollout"].sum() / step_times.sum())
                if "time/rollout" in metrics and step_times.sum() > 0 else None,
                wall_h=wall_h, device_h=None if wall_h is None else wall_h * cost["devices"])
    return cost
