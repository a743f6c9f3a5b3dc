"""Aggregate per-question records into benchmark metrics with torchmetrics.

Rows are per (benchmark, budget, mode, subtask), with ``subtask == "overall"`` for all questions of the group:
accuracy (and HR-Bench's cycle-averaged accuracy); IoU and coverage of the first/last crop with the GT box (over
questions with a crop and a GT box; ``last_iou_or_0`` over every question with a GT box, no crop counting 0) and
the mean per-target IoU (V*: each target box's best crop); tool calls,
crops, visual tokens and wall time per question; ``truncated``, the share of episodes a token cap ended before an
answer (None for records written before it was kept). :func:`substitution_subsets` gives the GT test and the noise
test of Table 7 on their subsets of questions.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import torch
from torchmetrics.aggregation import MeanMetric

from lfpc.agent.env import MODES

QUESTION_METRICS = ("accuracy", "first_iou", "last_iou", "last_iou_or_0", "first_coverage", "last_coverage",
                    "target_iou", "tool_calls", "crops", "visual_tokens", "truncated", "time_s")
SUBTASK_ORDER = ("FSP", "FCP", "Attr", "Spatial", "single", "cross")  # then any other, then "overall"


def _mean() -> MeanMetric:
    return MeanMetric().set_dtype(torch.float64)  # float64: 1/3 stays 0.333..., not 0.33333334


def question_values(record: dict) -> dict[str, float | None]:
    """The value each of :data:`QUESTION_METRICS` takes for one record (None: not defined for this question)."""
    values = {name: record.get(name) for name in QUESTION_METRICS if name not in ("accuracy", "last_iou_or_0")}
    values["accuracy"] = float(record["correct"])
    iou, boxed = record.get("last_iou"), record.get("gt_box") is not None
    values["last_iou_or_0"] = 0.0 if iou is None and boxed else iou
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


def cycle_accuracy(outcomes: Iterable[tuple[str, bool]]) -> float | None:
    """HR-Bench's official score: the accuracy of each cycle (option rotation), averaged over the cycles; None
    when no outcome (cycle, correct) names a cycle."""
    by_cycle: dict[str, list[bool]] = defaultdict(list)
    for cycle, correct in outcomes:
        if cycle:
            by_cycle[cycle].append(correct)
    if not by_cycle:
        return None
    return sum(sum(c) / len(c) for c in by_cycle.values()) / len(by_cycle)


def summarize(records: Iterable[dict]) -> list[dict]:
    """One row per (benchmark, budget, mode, subtask) plus an ``overall`` row per (benchmark, budget, mode); rows of
    a benchmark with cycles (HR-Bench) also hold ``cycle_accuracy`` (:func:`cycle_accuracy`), else None."""
    groups: dict[tuple, dict[str, QuestionMeans]] = defaultdict(lambda: defaultdict(QuestionMeans))
    cycles: dict[tuple, list[tuple[str, bool]]] = defaultdict(list)
    for record in records:
        key = (record["benchmark"], record["budget"], record["mode"])
        for subtask in (record["subtask"], "overall"):
            groups[key][subtask].update(record)
            cycles[(*key, subtask)].append((record.get("cycle") or "", bool(record["correct"])))
    rows = []
    for (benchmark, budget, mode), by_subtask in sorted(groups.items(), key=_group_rank):
        for subtask in sorted(by_subtask, key=_subtask_rank):
            rows.append({"benchmark": benchmark, "budget": budget, "mode": mode, "subtask": subtask,
                         **by_subtask[subtask].compute(),
                         "cycle_accuracy": cycle_accuracy(cycles[(benchmark, budget, mode, subtask)])})
    return rows


SUBSET_TESTS = {"gt_test": ("pred", "gt"), "noise_test": ("pred", "noise")}  # test -> conditions compared


def _subset_tests(modes: dict[str, dict], gt_coverage: float) -> list[str]:
    """The Table 7 tests a question belongs to, given its record per crop mode.

    GT test: the last crop of ``pred`` mode covers B1 less than ``gt_coverage`` (a question without a crop has no
    predicted region and is left out). Noise test: wrong in ``direct`` mode, right in ``pred`` mode. Only questions
    evaluated in both conditions of a test count.
    """
    pred = modes.get("pred")
    if pred is None:
        return []
    tests = []
    if "gt" in modes and pred.get("last_coverage") is not None and pred["last_coverage"] < gt_coverage:
        tests.append("gt_test")
    if "noise" in modes and "direct" in modes and pred["correct"] and not modes["direct"]["correct"]:
        tests.append("noise_test")
    return tests


def substitution_subsets(records: Sequence[dict], gt_coverage: float) -> list[dict]:
    """Per (benchmark, budget), the GT test and the noise test of paper Table 7 (supplementary Sec. 9).

    (a) GT test: the questions whose predicted crop poorly covers the GT box B1 (coverage of B1 by the last crop
    of ``pred`` mode below ``gt_coverage``), answered with the model's crop (``pred``) and with B1 cropped (``gt``).
    (b) Noise test: the questions answered wrongly without the tool (``direct``) but right with the model's crop
    (``pred``), answered with it and with a noise crop (``noise``). A question can be in both subsets.
    ``<test>_<condition>_accuracy`` is the accuracy on the subset (None when it is empty), ``<test>_n`` its size.
    """
    by_key: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for record in records:
        by_key[(record["benchmark"], record["budget"], record["id"])][record["mode"]] = record
    tests: dict[tuple, dict[str, MeanMetric]] = defaultdict(
        lambda: {f"{test}_{c}": _mean() for test, conditions in SUBSET_TESTS.items() for c in conditions})
    for (benchmark, budget, _), modes in by_key.items():
        for test in _subset_tests(modes, gt_coverage):
            for condition in SUBSET_TESTS[test]:
                tests[(benchmark, budget)][f"{test}_{condition}"].update(float(modes[condition]["correct"]))
    rows = []
    for (benchmark, budget), metrics in sorted(tests.items()):
        row: dict = {"benchmark": benchmark, "budget": budget, "gt_test_coverage": gt_coverage}
        for test, conditions in SUBSET_TESTS.items():
            row[f"{test}_n"] = metrics[f"{test}_{conditions[0]}"].update_count
            for condition in conditions:
                metric = metrics[f"{test}_{condition}"]
                row[f"{test}_{condition}_accuracy"] = float(metric.compute()) if metric.update_count else None
        rows.append(row)
    return rows
