"""Render results folders into the layouts of the paper's Tables 1-10 (markdown and CSV).

    python -m lfpc.evaluation.tables RESULTS_DIR... [--out DIR] [--tables 1 2 3 5 6 7]

Each results folder is one ``eval.py`` run (its ``metrics.json``); folders with the same label (e.g. one per
benchmark) form one model's rows, in the order the label first appears on the command line, one row per token
budget (and row variant: Table 1's crop modes, Table 7's subset tests). Columns follow the paper: HR-Bench 8K,
HR-Bench 4K and V* (then any other benchmark found), with their sub-tasks (FSP / FCP, Attr / Spatial). Under a row
the paper reports (:mod:`lfpc.evaluation.paper_numbers`) come the paper's row and the difference ours - paper; the
paper's other rows follow the table. Units are the paper's: accuracy in percent, IoU x100, time in seconds per
question; "–" means not measured (or not defined, e.g. IoU without GT boxes).
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from lfpc.evaluation import paper_numbers
from lfpc.evaluation.paper_numbers import MODE_ROWS
from lfpc.files import atomic_output, atomic_write
from lfpc.model.families import DEFAULT

BENCHMARKS = {  # name -> (short name, sub-tasks in paper order: single-target, multi-target), in the paper's order
    "hrbench_8k": ("HR-8K", ("FSP", "FCP")),
    "hrbench_4k": ("HR-4K", ("FSP", "FCP")),
    "vstar": ("V*", ("Attr", "Spatial")),
    "synthetic": ("Synthetic", ("single", "cross")),
    "patterns": ("Patterns", ("single",)),
}
PAPER_BENCHMARKS = ("hrbench_8k", "hrbench_4k", "vstar")
DECIMALS = {"pct": 1, "iou": 3, "sec": 2, "num": 2, "count": 0}
MODE_NAMES = {"pred": "pred", "gt": "GT", "noise": "noise", "direct": "direct"}


class Results:
    """The metrics of several results folders, indexed by label, benchmark, budget, mode and sub-task."""

    def __init__(self, summaries: Sequence[dict]) -> None:
        self.rows: dict[tuple, dict] = {}
        self.subsets: dict[tuple, dict] = {}
        self.labels: list[str] = []
        self.backbones: dict[str, str] = {}  # label -> backbone family (summaries before families: Qwen2.5-VL)
        for summary in summaries:
            label = str(summary["label"])
            if label not in self.labels:
                self.labels.append(label)
            self.backbones[label] = str(summary.get("backbone", DEFAULT.label))
            for row in summary["rows"]:
                self.rows[(label, row["benchmark"], row["budget"], row["mode"], row["subtask"])] = row
            for row in summary.get("subsets", []):
                self.subsets[(label, row["benchmark"], row["budget"])] = row
        names = {key[1] for key in self.rows}
        self.benchmarks = [b for b in BENCHMARKS if b in names] + sorted(names - set(BENCHMARKS))

    def metric(self, label: str, benchmark: str, budget: int, mode: str, name: str,
               subtask: str = "overall") -> float | None:
        """A metric of one row, or None when it was not measured."""
        row = self.rows.get((label, benchmark, budget, mode, subtask))
        return None if row is None else row.get(name)

    def budgets(self, label: str) -> list[int]:
        """The token budgets evaluated for ``label``, ascending."""
        return sorted({key[2] for key in self.rows if key[0] == label})

    def subtasks(self, benchmark: str) -> tuple[str, ...]:
        """The sub-tasks of ``benchmark`` (paper order for the known benchmarks)."""
        if benchmark in BENCHMARKS:
            return BENCHMARKS[benchmark][1]
        return tuple(sorted({k[4] for k in self.rows if k[1] == benchmark and k[4] != "overall"}))


def load_results(dirs: Sequence[str | Path]) -> Results:
    """Read ``metrics.json`` from each results folder."""
    summaries = []
    for folder in dirs:
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a results folder (no metrics.json); run eval.py into it first")
        summaries.append(json.loads(path.read_text()))
    return Results(summaries)


# ----------------------------------------------------------------------------------------------------------------
# Table layouts

Getter = Callable[[Results, str, "int | None", "str | None"], "float | None"]
"""(results, label, budget, row variant) -> the value in display units."""


@dataclass(frozen=True)
class Column:
    """One value column: ``key`` (``<benchmark>/<what>``, also the key of paper values), header, unit kind."""

    key: str
    header: str
    kind: str
    get: Getter


@dataclass(frozen=True)
class Table:
    """A rendered table: header cells, body rows (already formatted) and notes."""

    number: int
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str]


@dataclass(frozen=True)
class Layout:
    """A paper table's layout: its columns per benchmark, the benchmarks the paper reports in it (others found in
    the results follow them) and its row variants (key, name), e.g. the crop modes of Table 1."""

    title: str
    columns: Callable[[Results, str], list[Column]]
    note: str
    benchmarks: tuple[str, ...] = PAPER_BENCHMARKS
    variants: tuple[tuple[str | None, str], ...] = ((None, ""),)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _short(benchmark: str) -> str:
    return BENCHMARKS.get(benchmark, (benchmark,))[0]


def _header(benchmark: str, subtask: str, what: str = "") -> str:
    return " ".join(filter(None, (_short(benchmark), "Overall" if subtask == "overall" else subtask, what)))


def _acc(benchmark: str, subtask: str = "overall", mode: str = "pred") -> Getter:
    """Accuracy (%) in crop mode ``mode``, or in the row variant's mode when the table's rows are crop modes."""
    return lambda r, label, budget, variant: _pct(
        r.metric(label, benchmark, budget, variant or mode, "accuracy", subtask))


def _iou(benchmark: str, subtask: str, name: str = "last_iou") -> Getter:
    """Mean IoU x100 (as the paper prints it) of the last crop with the GT box B1, crop mode pred: over questions
    with a crop (``last_iou``) or over all, no crop counting 0 (``last_iou_or_0``)."""
    return lambda r, label, budget, variant: _pct(r.metric(label, benchmark, budget, "pred", name, subtask))


def _mean(benchmark: str, name: str) -> Getter:
    return lambda r, label, budget, variant: r.metric(label, benchmark, budget, "pred", name)


def _drop(benchmark: str) -> Getter:
    def get(r: Results, label: str, budget: int | None, variant: str | None) -> float | None:
        pred, noise = _acc(benchmark)(r, label, budget, None), _acc(benchmark, mode="noise")(r, label, budget, None)
        return None if pred is None or noise is None else pred - noise
    return get


def _subset(benchmark: str, what: str) -> Getter:
    """Table 7: accuracy (%) of the row's subset test (``<test>/<condition>``) or its size ``n``."""
    def get(r: Results, label: str, budget: int | None, variant: str | None) -> float | None:
        test, condition = str(variant).split("/")
        row = r.subsets.get((label, benchmark, budget), {})
        return row.get(f"{test}_n") if what == "n" else _pct(row.get(f"{test}_{condition}_accuracy"))
    return get


def _subtask_acc(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/{s}", _header(b, s), "pct", _acc(b, s)) for s in (*r.subtasks(b), "overall")]


def _subtask_acc_iou(r: Results, b: str) -> list[Column]:
    columns = [c for s in r.subtasks(b) for c in (Column(f"{b}/{s}", _header(b, s, "Acc"), "pct", _acc(b, s)),
                                                   Column(f"{b}/{s}/iou", _header(b, s, "IoU"), "pct", _iou(b, s)))]
    return [*columns, Column(f"{b}/overall", _header(b, "overall", "Acc"), "pct", _acc(b)),
            Column(f"{b}/overall/iou0", _header(b, "overall", "IoU no-crop=0"), "pct",
                   _iou(b, "overall", "last_iou_or_0"))]


def _multi_target(r: Results, b: str) -> list[Column]:
    """The multi-target sub-task (FCP, Spatial: the second of the benchmark's), the whole benchmark without one."""
    subtasks = r.subtasks(b)
    subtask = subtasks[1] if len(subtasks) > 1 else "overall"
    return [Column(f"{b}/{subtask}", _header(b, subtask), "pct", _acc(b, subtask))]


def _noise_drop(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/pred", _header(b, "", "pred"), "pct", _acc(b)),
            Column(f"{b}/noise", _header(b, "", "noise"), "pct", _acc(b, mode="noise")),
            Column(f"{b}/drop", _header(b, "", "drop"), "pct", _drop(b))]


def _cost(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/overall", _header(b, "", "Acc"), "pct", _acc(b)),
            Column(f"{b}/time_s", _header(b, "", "Time (s)"), "sec", _mean(b, "time_s")),
            Column(f"{b}/tool_calls", _header(b, "", "calls/q"), "num", _mean(b, "tool_calls")),
            Column(f"{b}/visual_tokens", _header(b, "", "vis. tok/q"), "count", _mean(b, "visual_tokens"))]


def _subset_test(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/overall", _header(b, "", "Acc"), "pct", _subset(b, "accuracy")),
            Column(f"{b}/n", _header(b, "", "n"), "count", _subset(b, "n"))]


_SUBTASKS_NOTE = ("Accuracy (%) per sub-task and overall, crop mode pred (HR-Bench: over all its rows, its official "
                  "cycle-averaged score when every cycle is complete; both are in metrics.json).")
_HR_BOXES = (" HR-Bench releases no GT boxes, and the paper's own HR-Bench annotations were not released: its IoU, "
             "Ground Truth and GT-test cells need a box file (<file stem>.boxes.json, see lfpc/data/benchmarks.py "
             "load_hrbench; experiments run the gt mode where one exists) and are – without one.")
LAYOUTS: dict[int, Layout] = {
    1: Layout("Crop substitution tests", _subtask_acc,
              "Accuracy (%) with the model's own crop (prediction), the crop replaced by uniform noise (Random Noise), "
              "the GT box B1 cropped instead (Ground Truth), and answering without the tool (direct)." + _HR_BOXES,
              variants=(*MODE_ROWS, ("direct", "direct"))),
    2: Layout("Main results", _subtask_acc, _SUBTASKS_NOTE + " Budget = global-image visual tokens."),
    3: Layout("Baseline / Stage-I / Stage-II", _subtask_acc_iou,
              "Accuracy (%) and mean IoU (x100) of the last crop with the GT box B1 (questions with a crop) per "
              "sub-task, crop mode pred; IoU no-crop=0: over every question, no crop counting 0 (Figures 5/6 plot "
              "another IoU: the best crop against any nested GT box)." + _HR_BOXES),
    4: Layout("Stage-II data and L1 reward", _subtask_acc, _SUBTASKS_NOTE),
    5: Layout("Noise-crop drop", _noise_drop, "Accuracy (%) with the model's crop and with a noise crop; drop = pred "
                                              "- noise (points), the paper's column. A model that reads its crops "
                                              "drops."),
    6: Layout("Accuracy and time per question", _cost,
              "Accuracy (%), wall time per question (s), tool calls and visual tokens (global view + crops) per "
              "question, crop mode pred.", benchmarks=("hrbench_8k", "hrbench_4k")),
    7: Layout("GT test / noise test on subsets", _subset_test,
              "(a) GT test: the questions whose predicted crop covers the GT box B1 less than the coverage threshold "
              "(eval.gt_test_coverage), answered with the model's crop (prediction) and with B1 cropped (GT); "
              "(b) noise test: the questions answered wrongly without the tool (direct) but right with the model's "
              "crop, answered with it and with a noise crop. Accuracy (%) on each subset; n = subset size."
              + _HR_BOXES,
              variants=(("gt_test/pred", "(a) prediction"), ("gt_test/gt", "(a) GT"),
                        ("noise_test/pred", "(b) prediction"), ("noise_test/noise", "(b) RandNoise"))),
    8: Layout("Mixed data vs two stages", _subtask_acc, _SUBTASKS_NOTE),
    9: Layout("Resolution selection strategies", _multi_target,
              "Accuracy (%) on the multi-target sub-task (HR-Bench FCP, V* Spatial), crop mode pred."),
    10: Layout("Stage-II reward design", _subtask_acc_iou,
               "HR-Bench 8K: accuracy (%) and mean IoU (x100) of the last crop with B1 per sub-task (questions with a "
               "crop), crop mode pred; IoU no-crop=0: over every question, no crop counting 0." + _HR_BOXES,
               benchmarks=("hrbench_8k",)),
}


def format_cell(value: float | None, kind: str, missing: str) -> str:
    """``value`` with the decimals of its column ``kind``, or ``missing`` when there is no value."""
    return missing if value is None else f"{value:.{DECIMALS[kind]}f}"


def paper_cell(row: paper_numbers.PaperRow, column: Column) -> str:
    """A paper value as printed: "-" where the paper prints "-", "?" where the paper has no such cell."""
    return format_cell(row.values[column.key], column.kind, "-") if column.key in row.values else "?"


def difference_cell(ours: float | None, row: paper_numbers.PaperRow, column: Column) -> str:
    """Ours - the paper's value, signed, where both exist."""
    theirs = row.values.get(column.key)
    return "" if ours is None or theirs is None else f"{ours - theirs:+.{DECIMALS[column.kind]}f}"


def build_table(number: int, results: Results, paper: Sequence[paper_numbers.PaperRow] | None = None,
                labels: Sequence[str] | None = None, extra: Sequence[Column] = ()) -> Table:
    """Table ``number`` in the paper's layout (:data:`LAYOUTS`) from ``results``: one row per label (default: the
    results' labels), budget and row variant with any value, each followed by the matching paper row and the
    difference ours - paper; the paper rows without a result row follow. ``paper``: default the rows of
    :mod:`lfpc.evaluation.paper_numbers`; ``extra``: columns after the layout's (e.g. training metrics)."""
    if number not in LAYOUTS:
        raise ValueError(f"no layout for table {number}; choose from {sorted(LAYOUTS)}")
    layout = LAYOUTS[number]
    paper = paper_numbers.rows_of(number) if paper is None else list(paper)
    benchmarks = [*layout.benchmarks, *(b for b in results.benchmarks if b not in PAPER_BENCHMARKS)]
    columns = [c for b in benchmarks for c in layout.columns(results, b)] + list(extra)
    named = len(layout.variants) > 1
    settings = dict(layout.variants)
    rows, shown = [], []

    def lead(name: str, budget: int | None, variant: str | None) -> list[str]:
        return [name, "–" if budget is None else str(budget), *([settings.get(variant, "")] if named else [])]

    def shown_name(label: str) -> str:
        """The label, with its backbone when it is not the paper's (Qwen2.5-VL)."""
        backbone = results.backbones.get(label, DEFAULT.label)
        return label if backbone == DEFAULT.label else f"{label} [{backbone}]"

    for label in labels if labels is not None else results.labels:
        for budget in results.budgets(label) or [None]:
            for variant, _ in layout.variants:
                values = [c.get(results, label, budget, variant) for c in columns]
                if all(v is None for v in values):
                    continue
                rows.append([*lead(shown_name(label), budget, variant), *(format_cell(v, c.kind, "–")
                                                              for v, c in zip(values, columns))])
                for row in paper:
                    if row.label == label and row.budget in (None, budget) and row.variant == variant:
                        shown.append(row)
                        rows.append([*lead(f"{row.name} (paper)", row.budget, variant),
                                     *(paper_cell(row, c) for c in columns)])
                        rows.append([*lead("Δ ours - paper", budget, variant),
                                     *(difference_cell(v, row, c) for v, c in zip(values, columns))])
    rest = [row for row in paper if row not in shown]
    rows += [[*lead(f"{row.name} (paper)", row.budget, row.variant), *(paper_cell(row, c) for c in columns)]
             for row in rest]
    notes = [layout.note, *truncation_note(results, labels if labels is not None else results.labels, benchmarks)]
    if paper:
        notes.append(f"(paper) rows: {paper_numbers.PAPER}, Table {number}, in its units (IoU x100); "
                     "- = printed as - there, ? = no such cell there.")
        notes += [paper_numbers.TABLE_NOTES[number]] if number in paper_numbers.TABLE_NOTES else []
        notes += [f"{row.name}: {row.note}" for row in paper if row.note]
    headers = ["Model", "Budget", *(["Setting"] if named else []), *(c.header for c in columns)]
    return Table(number, layout.title, headers, rows, notes)


def truncation_note(results: Results, labels: Sequence[str], benchmarks: Sequence[str]) -> list[str]:
    """The table note on episodes a token cap ended before an answer (they score wrong), per label, benchmark,
    budget and crop mode where there were any; none when no result records it (folders evaluated before)."""
    counted = [(key, row) for key, row in results.rows.items() if key[0] in labels and key[1] in benchmarks
               and key[4] == "overall" and row.get("truncated") is not None]
    if not counted:
        return []
    cut = [f"{label} {_short(benchmark)} {budget} {mode}: {round(row['truncated'] * row['num_questions'])}/"
           f"{row['num_questions']}" for (label, benchmark, budget, mode, _), row in counted if row["truncated"] > 0]
    if not cut:
        return ["No episode was ended by a token cap (episode.max_new_tokens_per_turn, max_response_tokens, "
                "max_context_tokens)."]
    return ["Episodes ended by a token cap before an answer, scored wrong (metrics.json truncated): "
            + "; ".join(cut) + "."]


# ----------------------------------------------------------------------------------------------------------------
# Output

def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table_markdown(table: Table) -> str:
    """The table as markdown with its title and notes."""
    body = markdown_table(table.headers, table.rows) if table.rows else "(no results for this table)"
    return "\n\n".join([f"### Table {table.number}: {table.title}", body, *(f"_{n}_" for n in table.notes)])


def write_csv(table: Table, path: Path) -> None:
    """The table as CSV (missing values as empty cells)."""
    with atomic_output(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.headers)
        writer.writerows([["" if cell in ("–", "?") else cell for cell in row] for row in table.rows])


def summary_markdown(rows: Sequence[dict]) -> str:
    """The metric rows of one run (``metrics.json`` ``rows``) as a markdown table: accuracy as the plain mean over
    rows and, for HR-Bench, as its official score (per cycle, averaged over cycles); IoU x100 (of the GT box B1,
    and per target box: V* Spatial questions have two)."""
    headers = ["Benchmark", "Budget", "Mode", "Subtask", "N", "Acc (%)", "Acc cycles (%)", "IoU first", "IoU last",
               "IoU targets", "Calls/q", "Vis. tok/q", "s/q"]
    body = [[r["benchmark"], str(r["budget"]), r["mode"], r["subtask"], str(r["num_questions"]),
             format_cell(_pct(r["accuracy"]), "pct", "–"), format_cell(_pct(r.get("cycle_accuracy")), "pct", "–"),
             format_cell(_pct(r["first_iou"]), "pct", "–"), format_cell(_pct(r["last_iou"]), "pct", "–"),
             format_cell(_pct(r.get("target_iou")), "pct", "–"),
             format_cell(r["tool_calls"], "num", "–"),
             format_cell(r["visual_tokens"], "count", "–"), format_cell(r["time_s"], "sec", "–")] for r in rows]
    return markdown_table(headers, body)


def render(dirs: Sequence[str | Path], out: str | Path, numbers: Sequence[int] = tuple(LAYOUTS)) -> str:
    """Write ``table<N>.md`` and ``table<N>.csv`` into ``out`` for each table; return all tables as markdown."""
    results = load_results(dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for number in numbers:
        table = build_table(number, results)
        text = table_markdown(table)
        atomic_write(out / f"table{number}.md", text + "\n")
        write_csv(table, out / f"table{number}.csv")
        parts.append(text)
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lfpc.evaluation.tables", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="results folders written by eval.py (with metrics.json)")
    parser.add_argument("--out", default="tables", help="folder for table<N>.md / table<N>.csv (default: tables)")
    parser.add_argument("--tables", type=int, nargs="+", default=list(LAYOUTS), choices=sorted(LAYOUTS),
                        help="which tables (default: all)")
    args = parser.parse_args(argv)
    print(render(args.results, args.out, args.tables))


if __name__ == "__main__":
    main()
