"""The learning curve of a run: each GRPO step's key metrics, kept in checkpoints, summarised as first vs last
quarter (what `make train` prints at the end, so a run that does not learn is seen at once)."""

from __future__ import annotations

import math
from typing import Sequence

import lightning as L

TRACKED = ("reward/total", "reward/acc", "rollout/tool_calls")


def first_and_last_quarter(values: Sequence[float]) -> tuple[float, float]:
    """The mean of the first and of the last quarter of ``values`` (at least one value each; ``values`` not empty)."""
    k = max(1, math.ceil(len(values) / 4))
    return sum(values[:k]) / k, sum(values[-k:]) / k


class LearningCurve(L.Callback):
    """Records ``names`` after every GRPO step (from the logged metrics); saved in and restored from checkpoints,
    so a resumed run summarises its whole history."""

    def __init__(self, names: tuple[str, ...] = TRACKED) -> None:
        self.names = names
        self.history: dict[str, list[float]] = {name: [] for name in names}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for name in self.names:
            if name in trainer.callback_metrics:
                self.history[name].append(float(trainer.callback_metrics[name]))

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {name: list(state_dict["history"].get(name, [])) for name in self.names}

    def quarters(self) -> dict[str, dict[str, float]]:
        """Per metric: the mean over the first and the last quarter of the steps (at least one step each)."""
        result = {}
        for name, values in self.history.items():
            if values:
                first, last = first_and_last_quarter(values)
                result[name] = {"first_quarter": first, "last_quarter": last, "change": last - first,
                                "steps": len(values)}
        return result

    def report(self) -> str:
        """One line per metric: first-quarter mean -> last-quarter mean (change)."""
        lines = ["learning curve (mean of the first vs the last quarter of the GRPO steps):"]
        for name, q in self.quarters().items():
            lines.append(f"  {name:<20} {q['first_quarter']:7.3f} -> {q['last_quarter']:7.3f}  "
                         f"({q['change']:+.3f} over {q['steps']} steps)")
        return "\n".join(lines)
