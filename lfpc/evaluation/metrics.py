"""Aggregate per-question records into benchmark metrics with torchmetrics.

Rows are per (benchmark, budget, mode, subtask), with ``subtask == "overall"`` for all questions of the group:
accuracy; IoU and coverage of the first/last crop with the GT box (over questions with a crop and a GT box);
tool calls, crops, visual tokens and wall time per question. :func:`substitution_subsets` gives the GT / noise
tests restricted to the questions the model got wrong / right with its own crops (Table 7).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import torch
from torchmetrics.aggregation import MeanMetric

from lfpc.agent.env import MODES

QUESTION_METRICS = ("accuracy", "first_iou", "last_iou", "first_coverage", "last_coverage", "tool_calls", "crops",
                    "visual_tokens", "time_s")
SUBTASK_ORDER = ("FSP", "FCP", "Attr", "Spatial", "single", "cross")  # then any other, then "overall"


def _mean() -> MeanMetric:
    return MeanMetric().set_dtype(torch.float64)  # float64: 1/3 stays 0.333..., not 0.33333334


def question_values(record: dict) -> dict[str, float | None]:
    """The value each of :data:`QUESTION_METRICS` takes for one record (None: not defined for this question)."""
    values = {name: record[name] for name in QUESTION_METRICS if name != "accuracy"}
    values["accuracy"] = float(record["correct"])
    return {k: None if v is None else float(v) for k, v in values.items()}


class QuestionMeans(torch.nn.Module):
    """Means of :data:`QUESTION_METRICS` over the records given to :meth:`update`; undefined values weigh 0."""

    def __init__(self) -> None:
        super().__init__()
        self.means = torch.nn.ModuleDict({name: _mean() for name in QUESTION_METRICS})
        self.count = 0

    def update(self, record: dict) -> None:
        for name, value in question_values(record).items():
            self.means[name].update(0.0 if value is None else value, weight=0.0 if value is None else 1.0)
        self.count += 1

    def compute(self) -> dict[str, float | None]:
        """``num_questions`` and each mean (None where no question defined the metric)."""
        result: dict[str, float | None] = {"num_questions": self.count}
        for name, metric in self.means.items():
            value = float(metric.compute())
            result[name] = None if value != value else value  # NaN: every weight was 0
        return result


def _subtask_rank(name: str) -> tuple[int, str]:
    if name == "overall":
        return (len(SUBTASK_ORDER) + 1, name)
    return (SUBTASK_ORDER.index(name), name) if name in SUBTASK_ORDER else (len(SUBTASK_ORDER), name)


def _group_rank(item: tuple) -> tuple:
    benchmark, budget, mode = item[0]
    return (benchmark, budget, MODES.index(mode) if mode in MODES else len(MODES), mode)


def summarize(records: Iterable[dict]) -> list[dict]:
    """One row per (benchmark, budget, mode, subtask) plus an ``overall`` row per (benchmark, budget, mode)."""
    groups: dict[tuple, dict[str, QuestionMeans]] = defaultdict(lambda: defaultdict(QuestionMeans))
    for record in records:
        group = groups[(record["benchmark"], record["budget"], record["mode"])]
        group[record["subtask"]].update(record)
        group["overall"].update(record)
    rows = []
    for (benchmark, budget, mode), by_subtask in sorted(groups.items(), key=_group_rank):
        for subtask in sorted(by_subtask, key=_subtask_rank):
            rows.append({"benchmark": benchmark, "budget": budget, "mode": mode, "subtask": subtask,
                         **by_subtask[subtask].compute()})
    return rows


def substitution_subsets(records: Sequence[dict]) -> list[dict]:
    """Per (benchmark, budget): the GT test on the questions answered wrongly in ``pred`` mode (accuracy with the GT
    crop) and the noise test on those answered correctly in ``pred`` mode (accuracy with a noise crop).

    Only questions evaluated in ``pred`` and in the test's mode count; ``*_n`` is their number, and an accuracy
    is None when that subset is empty.
    """
    by_key: dict[tuple, dict[str, bool]] = defaultdict(dict)
    for record in records:
        by_key[(record["benchmark"], record["budget"], record["id"])][record["mode"]] = bool(record["correct"])
    tests: dict[tuple, dict[str, MeanMetric]] = defaultdict(lambda: {"gt": _mean(), "noise": _mean()})
    for (benchmark, budget, _), modes in by_key.items():
        if "pred" not in modes:
            continue
        test = "noise" if modes["pred"] else "gt"
        if test in modes:
            tests[(benchmark, budget)][test].update(float(modes[test]))
    rows = []
    for (benchmark, budget), metrics in sorted(tests.items()):
        row: dict = {"benchmark": benchmark, "budget": budget}
        for test, metric in metrics.items():
            row[f"{test}_test_accuracy"] = float(metric.compute()) if metric.update_count else None
            row[f"{test}_test_n"] = metric.update_count
        rows.append(row)
    return rows
