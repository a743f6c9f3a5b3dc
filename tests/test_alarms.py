"""Collapse alarms fed the per-step metrics of a collapsing run, and the group diagnostics they watch."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from lfpc.grpo.advantages import group_diagnostics
from lfpc.training.alarms import AlarmConfig, CollapseAlarms, tripped
from lfpc.training.run import GRPOProgressBar

# A run whose tool use collapses: healthy for 3 steps, then no crops, then the format breaks too.
COLLAPSE = [
    {"rollout/tool_call_rate": 0.8, "rollout/invalid_call_rate": 0.1, "reward/fmt": 0.9, "groups/zero_adv": 0.2},
    {"rollout/tool_call_rate": 0.6, "rollout/invalid_call_rate": 0.1, "reward/fmt": 0.9, "groups/zero_adv": 0.3},
    {"rollout/tool_call_rate": 0.3, "rollout/invalid_call_rate": 0.2, "reward/fmt": 0.9, "groups/zero_adv": 0.5},
    {"rollout/tool_call_rate": 0.02, "rollout/invalid_call_rate": 0.2, "reward/fmt": 0.8, "groups/zero_adv": 0.8},
    {"rollout/tool_call_rate": 0.0, "rollout/invalid_call_rate": 0.7, "reward/fmt": 0.1, "groups/zero_adv": 0.95},
    {"rollout/tool_call_rate": 0.0, "rollout/invalid_call_rate": 0.9, "reward/fmt": 0.0, "groups/zero_adv": 1.0},
]


class FakeTrainer:
    """What the callback reads and writes on a Lightning trainer."""

    def __init__(self) -> None:
        self.callback_metrics: dict[str, torch.Tensor] = {}
        self.should_stop = False
        self.saved: list[str] = []

    def save_checkpoint(self, path: str) -> None:
        self.saved.append(path)


def feed(alarms: CollapseAlarms, trainer: FakeTrainer, steps: list[dict]) -> list[dict[str, str]]:
    active = []
    for index, metrics in enumerate(steps):
        trainer.callback_metrics = {k: torch.tensor(v) for k, v in metrics.items()}
        alarms.on_train_batch_end(trainer, None, None, None, index)
        active.append(dict(alarms.active))
    return active


def test_alarms_trip_after_patience_consecutive_steps_and_warn(caplog, tmp_path):
    alarms = CollapseAlarms(AlarmConfig(patience=2), tmp_path)
    trainer = FakeTrainer()
    with caplog.at_level(logging.WARNING, logger="lfpc.training.alarms"):
        active = feed(alarms, trainer, COLLAPSE)
    # tool-call rate < 0.05 from step 4: alarm at steps 5 and 6; format, invalid and zero-adv from step 5: at 6
    assert [sorted(a) for a in active] == [[], [], [], [], ["min_tool_call_rate"],
                                           ["max_invalid_call_rate", "max_zero_adv_groups", "min_format_rate",
                                            "min_tool_call_rate"]]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "collapse alarm at GRPO step 5: rollout/tool_call_rate = 0 < 0.05" in warnings[0]
    assert "reward/fmt = 0 < 0.2" in warnings[1] and not trainer.should_stop and not trainer.saved

    bar = GRPOProgressBar(1, alarms)
    bar._trainer = SimpleNamespace(progress_bar_metrics={}, loggers=[])
    assert "min_tool_call_rate" in bar.get_metrics(bar._trainer, SimpleNamespace())["ALARM"]


def test_a_recovered_metric_resets_its_streak(tmp_path):
    alarms = CollapseAlarms(AlarmConfig(patience=2, min_format_rate=None, max_invalid_call_rate=None,
                                        max_zero_adv_groups=None), tmp_path)
    rates = [0.0, 0.5, 0.0, 0.0]
    active = feed(alarms, FakeTrainer(), [{"rollout/tool_call_rate": r} for r in rates])
    assert [bool(a) for a in active] == [False, False, False, True]
    assert alarms.state_dict() == {"steps": 4, "streaks": {"min_tool_call_rate": 2}}


def test_stop_saves_a_checkpoint_and_stops_with_the_reason(caplog, tmp_path):
    alarms = CollapseAlarms(AlarmConfig(patience=3, stop=True), tmp_path)
    trainer = FakeTrainer()
    with caplog.at_level(logging.WARNING, logger="lfpc.training.alarms"):
        feed(alarms, trainer, COLLAPSE[:5])
    assert not trainer.should_stop and alarms.stopped is None
    feed(alarms, trainer, COLLAPSE[5:])
    assert trainer.should_stop and trainer.saved == [str(tmp_path / "alarm.ckpt")]
    assert alarms.stopped.startswith("collapse alarm at GRPO step 6: rollout/tool_call_rate = 0 < 0.05")
    assert any("stopping (alarms.stop=true)" in r.getMessage() for r in caplog.records)


def test_disabled_thresholds_and_missing_metrics_never_trip():
    config = AlarmConfig(min_tool_call_rate=None)
    assert tripped({"rollout/tool_call_rate": 0.0}, config) == {}
    assert tripped({}, AlarmConfig()) == {}
    with pytest.raises(ValueError, match="patience"):
        AlarmConfig(patience=0)


def test_group_diagnostics_count_groups_without_signal_and_the_reward_spread():
    rewards = torch.tensor([1.0, 1.0, 0.0, 2.0, 3.0])
    groups = torch.tensor([0, 0, 1, 1, 2])
    stats = group_diagnostics(rewards, groups)
    assert stats["groups/zero_adv"] == pytest.approx(2 / 3)      # group 0 constant, group 2 a singleton
    assert stats["groups/reward_spread"] == pytest.approx(1 / 3)  # stds 0, 1, 0
