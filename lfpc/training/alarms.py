"""Collapse alarms: thresholds on per-step rollout metrics that warn (and optionally stop the run) when the policy
stops using the crop tool, breaks the output format, or its groups stop carrying a learning signal."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import lightning as L

log = logging.getLogger(__name__)

# config field -> (logged metric, whether the alarm trips below (True) or above (False) the threshold)
THRESHOLDS = {
    "min_tool_call_rate": ("rollout/tool_call_rate", True),
    "max_invalid_call_rate": ("rollout/invalid_call_rate", False),
    "min_format_rate": ("reward/fmt", True),
    "max_zero_adv_groups": ("groups/zero_adv", False),
}


@dataclass(frozen=True)
class AlarmConfig:
    """Thresholds (None disables one), how many consecutive steps one must trip before it warns (``patience``),
    and whether a warning also checkpoints and stops the run (``stop``)."""

    min_tool_call_rate: float | None = 0.05
    max_invalid_call_rate: float | None = 0.5
    min_format_rate: float | None = 0.2
    max_zero_adv_groups: float | None = 0.9
    patience: int = 5
    stop: bool = False

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"alarms.patience must be >= 1, got {self.patience}")


def tripped(metrics: Mapping[str, float], config: AlarmConfig) -> dict[str, str]:
    """The thresholds this step's ``metrics`` cross: config field -> message (a missing metric never trips)."""
    crossed = {}
    for name, (metric, below) in THRESHOLDS.items():
        threshold = getattr(config, name)
        if threshold is None or metric not in metrics:
            continue
        value = float(metrics[metric])
        if (value < threshold) if below else (value > threshold):
            crossed[name] = f"{metric} = {value:.3g} {'<' if below else '>'} {threshold:g}"
    return crossed


class CollapseAlarms(L.Callback):
    """Checks :data:`THRESHOLDS` after every GRPO step against the logged metrics; a threshold crossed for
    ``patience`` consecutive steps is logged as a warning, shown in the progress bar (:attr:`active`) and, with
    ``stop``, saves ``<checkpoint_dir>/alarm.ckpt`` and stops training, the reason kept in :attr:`stopped`."""

    def __init__(self, config: AlarmConfig, checkpoint_dir: str | Path) -> None:
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir)
        self.steps = 0
        self.streaks: dict[str, int] = {}
        self.active: dict[str, str] = {}
        self.stopped: str | None = None  # why the run was stopped (None: it was not)

    @property
    def checkpoint(self) -> Path:
        """Where a stop saves the run's state."""
        return self.checkpoint_dir / "alarm.ckpt"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        crossed = tripped(trainer.callback_metrics, self.config)
        self.streaks = {name: self.streaks.get(name, 0) + 1 for name in crossed}
        self.active = {name: message for name, message in crossed.items()
                       if self.streaks[name] >= self.config.patience}
        if not self.active:
            return
        text = (f"collapse alarm at GRPO step {self.steps}: " + "; ".join(self.active.values())
                + f" for {self.config.patience}+ consecutive steps")
        log.warning(text)
        if self.config.stop:
            trainer.save_checkpoint(str(self.checkpoint))
            trainer.should_stop = True
            self.stopped = text
            log.error(f"{text}; stopping (alarms.stop=true), checkpoint {self.checkpoint}")

    def state_dict(self) -> dict:
        return {"steps": self.steps, "streaks": self.streaks}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps = state_dict["steps"]
        self.streaks = dict(state_dict["streaks"])
