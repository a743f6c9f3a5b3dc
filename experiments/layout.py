"""Where the runs of a definition live under its output folder ``<out>``.

* ``<out>/train/<step>/``: the job of an unswept train step, or one folder per job of a sweep, named by Hydra's
  ``override_dirname`` of the swept overrides (``<out>/train/stage2/reward=iou``);
* ``<out>/eval/<label>/<benchmark>/``: ``eval.py`` results folders (``metrics.json``);
* ``<out>/logs/``: one log per command; ``<out>/manifest.json``: the commands run and their status.

A train job's label (its row name, and the ``label`` its evaluation runs under) is the step name, plus the job
folder in brackets for a sweep: ``stage2[reward=iou]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

MANIFEST = "manifest.json"


def train_dir(out: Path, step: str) -> Path:
    return Path(out) / "train" / step


def eval_dir(out: Path, label: str) -> Path:
    return Path(out) / "eval" / label


def job_label(step: str, job: str | None) -> str:
    """``step`` for the single job of an unswept step, ``step[job]`` for a job of a sweep."""
    return step if job is None else f"{step}[{job}]"


@dataclass(frozen=True)
class TrainJob:
    """A finished or running training job folder (it holds ``.hydra/``)."""

    step: str
    name: str | None
    dir: Path

    @property
    def label(self) -> str:
        return job_label(self.step, self.name)


def _job_num(folder: Path) -> int:
    """The job's number in its sweep (Hydra's ``hydra.job.num``), 0 when not recorded."""
    path = folder / ".hydra" / "hydra.yaml"
    hydra = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return int(hydra.get("hydra", {}).get("job", {}).get("num") or 0)


def find_train_jobs(out: Path, step: str) -> list[TrainJob]:
    """The job folders of train step ``step`` under ``out``, in sweep order (empty if it has not run)."""
    folder = train_dir(out, step)
    if (folder / ".hydra").is_dir():
        return [TrainJob(step, None, folder)]
    jobs = [p for p in folder.iterdir() if (p / ".hydra").is_dir()] if folder.is_dir() else []
    return [TrainJob(step, p.name, p) for p in sorted(jobs, key=lambda p: (_job_num(p), p.name))]


def load_manifest(out: Path) -> dict:
    """``<out>/manifest.json`` (empty when there is none); a garbled one is refused with its path."""
    path = out / MANIFEST
    if not path.is_file():
        return {"commands": []}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON manifest ({err}); fix it, or delete it to rerun every command") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("commands"), list):
        raise ValueError(f"{path}: not a runner manifest (no list 'commands'); fix it, or delete it to rerun every "
                         "command")
    return manifest
