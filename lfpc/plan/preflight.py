"""train.py's preflight: plan the launch before any weights load and refuse one that does not fit."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class PlanDoesNotFit(RuntimeError):
    """A launch whose planned memory exceeds the declared GPU (the message names the numbers and the knob)."""


def preflight(cfg) -> None:
    """Plan ``cfg``'s launch (``plan.preflight``: auto = on GPU launches only) and raise :class:`PlanDoesNotFit`
    when it does not fit ``hardware.gpu_memory_gib``."""
    mode = cfg.plan.preflight
    on_gpu = cfg.trainer.accelerator in ("gpu", "cuda") or (
        cfg.trainer.accelerator == "auto" and torch.cuda.is_available())
    if mode is False or (mode == "auto" and not on_gpu):
        log.info("memory preflight skipped (%s; plan.preflight=%s): python -m lfpc.plan plans any launch",
                 "a CPU run" if not on_gpu else "off", mode)
        return
    from lfpc.plan.planner import make_plan  # here: a CPU run never imports the planner

    plan = make_plan(cfg)
    if not plan.fits:
        raise PlanDoesNotFit(f"this launch does not fit; nothing was loaded.\n{plan.text()}")
    log.info("memory preflight:\n%s", plan.text())
