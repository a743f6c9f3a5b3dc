"""Render results folders into the layouts of the paper's Tables 1, 2, 3, 5, 6 and 7 (markdown and CSV).

    python -m lfpc.evaluation.tables RESULTS_DIR... [--out DIR] [--tables 1 2 3 5 6 7]

Each results folder is one ``eval.py`` run (its ``metrics.json``); folders with the same label (e.g. one per
benchmark) form one model's rows, in the order the label first appears on the command line, one row per token
budget. Where a row corresponds to one the paper reports (see :mod:`lfpc.evaluation.paper_numbers`), the paper's
row follows it. Units: accuracy in percent, IoU in [0, 1], time in seconds per question; "–" means not measured
(or not defined, e.g. IoU without GT boxes) and "?" a paper value not filled in.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from lfpc.evaluation import paper_numbers

BENCHMARKS = {  # name -> (short name, sub-tasks in paper order)
    "vstar": ("V*", ("Attr", "Spatial")),
    "hrbench_4k": ("HR-4K", ("FSP", "FCP")),
    "hrbench_8k": ("HR-8K", ("FSP", "FCP")),
    "synthetic": ("Synthetic", ("single", "cross")),
    "patterns": ("Patterns", ("single",)),
}
DECIMALS = {"pct": 1, "iou": 3, "sec": 2, "num": 2, "count": 0}
MODE_NAMES = {"pred": "pred", "gt": "GT", "noise": "noise", "direct": "direct"}


class Results:
    """The metrics of several results folders, indexed by label, benchmark, budget, mode and sub-task."""

    def __init__(self, summaries: Sequence[dict]) -> None:
        self.rows: dict[tuple, dict] = {}
        self.subsets: dict[tuple, dict] = {}
        self.labels: list[str] = []
        for summary in summaries:
            label = str(summary["label"])
            if label not in self.labels:
                self.labels.append(label)
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

Getter = Callable[[Results, str, int], "float | None"]  # (results, label, budget) -> value in display units


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


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _short(benchmark: str) -> str:
    return BENCHMARKS.get(benchmark, (benchmark,))[0]


def _acc(benchmark: str, mode: str = "pred", subtask: str = "overall") -> Getter:
    return lambda r, label, budget: _pct(r.metric(label, benchmark, budget, mode, "accuracy", subtask))


def _mean(benchmark: str, name: str) -> Getter:
    return lambda r, label, budget: r.metric(label, benchmark, budget, "pred", name)


def _drop(benchmark: str) -> Getter:
    def get(r: Results, label: str, budget: int) -> float | None:
        pred, noise = _acc(benchmark)(r, label, budget), _acc(benchmark, "noise")(r, label, budget)
        return None if pred is None or noise is None else pred - noise
    return get


def _subset(benchmark: str, name: str, percent: bool) -> Getter:
    def get(r: Results, label: str, budget: int) -> float | None:
        value = r.subsets.get((label, benchmark, budget), {}).get(name)
        return _pct(value) if percent else value
    return get


def _table1(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/{m}", f"{_short(b)} {MODE_NAMES[m]}", "pct", _acc(b, m)) for m in MODE_NAMES]


def _table2(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/{s}", f"{_short(b)} {s}", "pct", _acc(b, "pred", s)) for s in (*r.subtasks(b), "overall")]


def _table3(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/acc", f"{_short(b)} Acc", "pct", _acc(b)),
            Column(f"{b}/iou", f"{_short(b)} IoU", "iou", _mean(b, "last_iou"))]


def _table5(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/pred", f"{_short(b)} pred", "pct", _acc(b)),
            Column(f"{b}/noise", f"{_short(b)} noise", "pct", _acc(b, "noise")),
            Column(f"{b}/drop", f"{_short(b)} drop", "pct", _drop(b))]


def _table6(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/acc", f"{_short(b)} Acc", "pct", _acc(b)),
            Column(f"{b}/time_s", f"{_short(b)} s/q", "sec", _mean(b, "time_s")),
            Column(f"{b}/tool_calls", f"{_short(b)} calls/q", "num", _mean(b, "tool_calls")),
            Column(f"{b}/visual_tokens", f"{_short(b)} vis. tok/q", "count", _mean(b, "visual_tokens"))]


def _table7(r: Results, b: str) -> list[Column]:
    return [Column(f"{b}/gt_test", f"{_short(b)} GT test", "pct", _subset(b, "gt_test_accuracy", True)),
            Column(f"{b}/gt_n", f"{_short(b)} GT n", "count", _subset(b, "gt_test_n", False)),
            Column(f"{b}/noise_test", f"{_short(b)} noise test", "pct", _subset(b, "noise_test_accuracy", True)),
            Column(f"{b}/noise_n", f"{_short(b)} noise n", "count", _subset(b, "noise_test_n", False))]


LAYOUTS: dict[int, tuple[str, Callable[[Results, str], list[Column]], str]] = {
    1: ("Crop substitution tests", _table1,
        "Accuracy (%) with the model's own crop (pred), the GT box B1 cropped instead (GT), the crop replaced by "
        "uniform noise (noise), and answering without the tool (direct)."),
    2: ("Main results", _table2, "Accuracy (%) per sub-task and overall, crop mode pred; Budget = global-image "
                                 "visual tokens."),
    3: ("Baseline / Stage I / Stage II", _table3,
        "Accuracy (%) and mean IoU of the last crop with the GT box B1 (questions with a crop), crop mode pred."),
    5: ("Noise-crop drop", _table5, "Accuracy (%) with the model's crop and with a noise crop; drop = pred - noise "
                                    "(points). A model that reads its crops drops."),
    6: ("Accuracy and cost per question", _table6,
        "Accuracy (%), wall time per question (s; a batch's time shared by its questions), tool calls and visual "
        "tokens (global view + crops) per question, crop mode pred."),
    7: ("GT test / noise test on subsets", _table7,
        "GT test: accuracy (%) with the GT crop on the questions answered wrongly with the model's crop; noise test: "
        "accuracy (%) with a noise crop on those answered correctly with it; n = subset size."),
}


def format_cell(value: float | None, kind: str, missing: str) -> str:
    """``value`` with the decimals of its column ``kind``, or ``missing`` when there is no value."""
    return missing if value is None else f"{value:.{DECIMALS[kind]}f}"


def build_table(number: int, results: Results) -> Table:
    """Table ``number`` (1, 2, 3, 5, 6 or 7) from ``results``: one row per label and budget with any value, each
    followed by the corresponding paper rows."""
    if number not in LAYOUTS:
        raise ValueError(f"no layout for table {number}; choose from {sorted(LAYOUTS)}")
    title, columns_of, note = LAYOUTS[number]
    columns = [c for b in results.benchmarks for c in columns_of(results, b)]
    rows, paper_shown = [], False
    for label in results.labels:
        for budget in results.budgets(label):
            values = [c.get(results, label, budget) for c in columns]
            if all(v is None for v in values):
                continue
            rows.append([label, str(budget), *(format_cell(v, c.kind, "–") for v, c in zip(values, columns))])
            for paper in paper_numbers.paper_rows(number, label, budget):
                paper_shown = True
                rows.append([f"{paper.name} (paper)", str(budget),
                             *(format_cell(paper.values.get(c.key), c.kind, "?") for c in columns)])
    notes = [note]
    if paper_shown:
        notes.append(f"(paper) rows: {paper_numbers.PAPER}. ? = not filled in [{paper_numbers.STATUS}].")
    return Table(number, title, ["Model", "Budget", *(c.header for c in columns)], rows, notes)


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
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.headers)
        writer.writerows([["" if cell in ("–", "?") else cell for cell in row] for row in table.rows])


def summary_markdown(rows: Sequence[dict]) -> str:
    """The metric rows of one run (``metrics.json`` ``rows``) as a markdown table."""
    headers = ["Benchmark", "Budget", "Mode", "Subtask", "N", "Acc (%)", "IoU first", "IoU last", "Calls/q",
               "Vis. tok/q", "s/q"]
    body = [[r["benchmark"], str(r["budget"]), r["mode"], r["subtask"], str(r["num_questions"]),
             format_cell(_pct(r["accuracy"]), "pct", "–"), format_cell(r["first_iou"], "iou", "–"),
             format_cell(r["last_iou"], "iou", "–"), format_cell(r["tool_calls"], "num", "–"),
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
        (out / f"table{number}.md").write_text(text + "\n")
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
