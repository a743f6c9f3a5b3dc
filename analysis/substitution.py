"""The crop-substitution analysis (paper Tables 1, 5 and 7 as figures) from ``eval.py`` results folders.

Does the model read its crops? Compare accuracy with its own crop (``pred``), with the GT box B1 cropped instead
(``gt``), with the crop replaced by noise (``noise``) and without the tool (``direct``); and per question, how the
answer changes when the crop is substituted (a model that ignores its crops keeps its answers under ``noise``).
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from lfpc.agent.env import MODES
from lfpc.evaluation.records import load_run_records


def result_folders(spec: str) -> list[Path]:
    """The results folders (holding ``metrics.json``) named by ``spec``: folders or glob patterns separated by ``;``
    (e.g. ``experiments_out/table1/smoke/eval/*/*``), in the given order."""
    folders: list[Path] = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        matches = [Path(part)] if Path(part).is_dir() else sorted(map(Path, glob.glob(part)))
        folders += [m for m in matches if (m / "metrics.json").is_file() and m not in folders]
    return folders


def folder_name(folder: str | Path) -> str:
    """``<label> / <benchmark folder>`` of a results folder."""
    return f"{_summary(Path(folder))['label']} / {Path(folder).name}"


def _summary(folder: Path) -> dict:
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an eval.py results folder (no metrics.json)")
    return json.loads(path.read_text())


def mode_accuracy(folders: Sequence[str | Path]) -> pd.DataFrame:
    """Overall accuracy (%) and question count per label, benchmark, budget and crop mode, modes in paper order."""
    rows = [{"label": str(summary["label"]), "benchmark": row["benchmark"], "budget": row["budget"],
             "mode": row["mode"], "accuracy": 100.0 * row["accuracy"], "questions": row["num_questions"]}
            for summary in map(_summary, folders) for row in summary["rows"] if row["subtask"] == "overall"]
    frame = pd.DataFrame(rows, columns=["label", "benchmark", "budget", "mode", "accuracy", "questions"])
    frame["mode"] = pd.Categorical(frame["mode"], categories=[m for m in MODES if m in set(frame["mode"])],
                                   ordered=True)
    return frame.sort_values(["label", "benchmark", "budget", "mode"], kind="stable").reset_index(drop=True)


def subset_tests(folders: Sequence[str | Path]) -> pd.DataFrame:
    """The GT test and noise test on subsets (Table 7) of each folder, accuracies in %."""
    rows = [{"label": str(summary["label"]), **row} for summary in map(_summary, folders)
            for row in summary.get("subsets", [])]
    frame = pd.DataFrame(rows)
    for column in [c for c in frame.columns if c.endswith("_accuracy")]:
        frame[column] = 100.0 * frame[column].astype(float)
    return frame


def answer_flips(folder: str | Path, test: str = "noise") -> pd.DataFrame:
    """Questions counted by correctness with the model's crop (rows) and in mode ``test`` (columns), over the
    questions evaluated in both modes (all budgets together)."""
    by_question: dict[tuple, dict[str, bool]] = {}
    for record in load_run_records(folder)[1]:  # the records metrics.json summarises, not stale ones
        by_question.setdefault((record["benchmark"], record["budget"], record["id"]), {})[record["mode"]] = bool(
            record["correct"])
    counts = pd.DataFrame(0, index=["pred correct", "pred wrong"], columns=[f"{test} correct", f"{test} wrong"])
    for modes in by_question.values():
        if "pred" in modes and test in modes:
            counts.iloc[0 if modes["pred"] else 1, 0 if modes[test] else 1] += 1
    return counts


def plot_mode_accuracy(frame: pd.DataFrame) -> Figure:
    """Grouped bars: accuracy per crop mode, one group per (label, benchmark, budget)."""
    table = frame.pivot_table(index=["label", "benchmark", "budget"], columns="mode", values="accuracy",
                              observed=True)
    figure = Figure(figsize=(max(5.0, 1.6 * len(table) + 2), 3.6), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / max(1, len(table.columns))
    for k, mode in enumerate(table.columns):
        ax.bar([i + k * width for i in range(len(table))], table[mode].to_numpy(), width, label=str(mode))
    ax.set_xticks([i + width * (len(table.columns) - 1) / 2 for i in range(len(table))],
                  [f"{label}\n{bench} @{budget}" for label, bench, budget in table.index], fontsize="small")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Crop substitution: accuracy per crop mode")
    ax.legend(title="crop", fontsize="small")
    return figure


def plot_flips(flips: Mapping[str, pd.DataFrame]) -> Figure:
    """One 2x2 count matrix per results folder (name -> :func:`answer_flips`)."""
    figure = Figure(figsize=(3.4 * max(1, len(flips)), 3.2), layout="constrained")
    axes = figure.subplots(1, max(1, len(flips)), squeeze=False).ravel()
    for ax, (name, counts) in zip(axes, flips.items()):
        ax.imshow(counts.to_numpy(), cmap="Blues", vmin=0)
        for (i, j), value in pd.DataFrame(counts.to_numpy()).stack().items():
            ax.text(j, i, str(value), ha="center", va="center")
        ax.set_xticks(range(2), counts.columns, fontsize="small")
        ax.set_yticks(range(2), counts.index, fontsize="small")
        ax.set_title(name, fontsize="medium")
    return figure
