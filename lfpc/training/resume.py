"""Interruptions and resuming: a run continues only in its own folder with its own composed config, and a SIGTERM
(a cluster preemption) saves a checkpoint and exits non-zero with the command that resumes the run."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lfpc.files import atomic_output

MAY_CHANGE_ON_RESUME = ("ckpt_path", "trainer.max_steps")


def run_folder(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint saved by ``train.py`` (``<run>/checkpoints/<name>.ckpt``)."""
    return Path(ckpt_path).resolve().parent.parent


def resume_command(run: Path, max_steps: str = "<N>") -> str:
    """The ``train.py`` command that continues ``run`` in place: its own overrides, its last checkpoint, its folder."""
    saved = run / ".hydra" / "overrides.yaml"
    overrides = (yaml.safe_load(saved.read_text()) or []) if saved.is_file() else []
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in (*MAY_CHANGE_ON_RESUME, "hydra.run.dir")]
    args = [*kept, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run}",
            f"trainer.max_steps={max_steps}"]
    return "python train.py " + " ".join(shlex.quote(a) for a in args)


def _flatten(tree: object, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def check_resume(cfg: DictConfig) -> None:
    """Refuse to resume ``cfg.ckpt_path`` in another folder or with another composed config than its run's own
    (``<run>/.hydra/config.yaml``); only ``ckpt_path`` and ``trainer.max_steps`` may change. The message names the
    differing keys and the command that resumes the run."""
    run = run_folder(cfg.ckpt_path)
    saved = run / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ValueError(f"ckpt_path {cfg.ckpt_path} is not in a train.py run folder (no {saved}): its config "
                         "cannot be checked; resume from <run>/checkpoints/last.ckpt")
    before = _flatten(OmegaConf.to_container(OmegaConf.load(saved), resolve=False))
    now = _flatten(OmegaConf.to_container(cfg, resolve=False))
    changed = sorted(k for k in before.keys() | now.keys()
                     if k not in MAY_CHANGE_ON_RESUME and before.get(k, "<absent>") != now.get(k, "<absent>"))
    if Path(cfg.output_dir).resolve() != run:
        changed.insert(0, f"output folder (hydra.run.dir={run})")
    if changed:
        raise ValueError(f"resuming {cfg.ckpt_path} with another config than its run's: {changed[:10]}"
                         f"{' ...' if len(changed) > 10 else ''}; resume with:\n  {resume_command(run)}")


class CheckpointOnSigterm(L.Callback):
    """Save ``<dirpath>/last.ckpt`` when Lightning stops a run on SIGTERM (after the GRPO step in progress)."""

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / "last.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)


def stopped_by_sigterm(run: Path, grpo_steps: int) -> SystemExit:
    """The non-zero exit of a run stopped by SIGTERM, saying how to resume it."""
    return SystemExit(f"stopped by SIGTERM after {grpo_steps} GRPO step(s); checkpoint "
                      f"{run / 'checkpoints' / 'last.ckpt'}; resume with:\n  {resume_command(run)}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint files, written whole or not at all (a killed save never replaces a good checkpoint),
    and a damaged one refused by name with what to do instead of a deep ``torch.load`` error.

    Loading unpickles the file (``weights_only=False``, as Lightning does): resume only checkpoints you trust."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_output(path) as tmp:
            torch.save(checkpoint, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())

    def load_checkpoint(self, path, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, pickle.UnpicklingError) as err:
            real = Path(path).resolve()
            kept = sorted(str(p) for p in real.parent.rglob("*.ckpt") if p.resolve() != real)
            raise ValueError(
                f"checkpoint {path}{f' (-> {real})' if real != Path(path).absolute() else ''} is damaged and cannot be "
                f"resumed ({type(err).__name__}: {str(err)[:200]}); "
                + (f"resume from another checkpoint of the run with ckpt_path=... ({', '.join(kept)}), or "
                   if kept else "the run keeps no other checkpoint; ")
                + "move the damaged file away to start over") from None
