"""The paper in miniature (``python -m experiments run miniature``): its runs collected into tables, figures, a
targets check and ``RESULTS.md``.

``experiments/tables/miniature.yaml`` trains the baseline, Stage I and Stage II (from Stage I) and evaluates each on
the held-out pattern test split at a low and a high global-view budget in the four crop modes. From the per-question
records (``eval/<label>/<benchmark>/records.jsonl``) this module builds, each cell with its bootstrap 95% interval
over test questions (:mod:`lfpc.evaluation.bootstrap`):

* Table 1 (miniature): accuracy with the model's crop, the GT box, a noise crop and no tool (the tests of §3);
* Table 3 (miniature): accuracy and IoU x100 of the scored (last) crop with the GT box B1 (§5.3, Table 3);
* Table 5 (miniature): the noise drop, pred accuracy minus noise accuracy, questions paired (§5.3, Table 5);
* Table 10 (miniature): Stage II's grounding reward varied (conditional IoU, IoU without the coverage threshold, no
  IoU reward) from the same Stage I model, accuracy and IoU x100 (§5.4, Table 10);

plus the training dynamics of Figures 5 and 6 (supplementary §8) as PNGs, and the first and last quarter of Stage
I's and Stage II's crop area and B1 coverage (Figure 6's finding). All of it goes into a summary
(``<out>/miniature.json``) that :func:`results_markdown` renders; the report lands in ``<out>/RESULTS.md`` and, for
runs of the definition's own size, in the definition's ``report`` file at the repository root.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from experiments.definitions import Definition
from experiments.layout import job_label, load_manifest
from experiments.runs import eval_folders, job_cost, train_jobs
from lfpc.evaluation import tables
from lfpc.evaluation.bootstrap import (LEVEL, RESAMPLES, Interval, bootstrap_mean, bootstrap_paired_difference,
                                       per_question)
from lfpc.evaluation.records import load_run_records
from lfpc.evaluation.tables import Table
from lfpc.training.curve import first_and_last_quarter

ROOT = Path(__file__).resolve().parents[1]
BASELINE, STAGE1, STAGE2 = "baseline", "stage1", "stage2"  # the train steps (and eval labels) of miniature.yaml
TABLE10 = "table10"  # the train step of miniature.yaml that sweeps Stage II's reward (its labels: table10[reward=...])
TABLE10_REWARDS = {"iou": "conditional IoU", "iou_nothresh": "IoU without threshold", "none": "no IoU reward"}


def table10_label(reward: str) -> str:
    """The eval label of the Table 10 run with Stage II's ``reward`` (a job of the ``table10`` sweep)."""
    return job_label(TABLE10, f"reward={reward}")


NAMES = {BASELINE: "Baseline", STAGE1: "Stage I", STAGE2: "Stage II",
         **{table10_label(reward): f"Stage II, {name}" for reward, name in TABLE10_REWARDS.items()}}
CORE = (BASELINE, STAGE1, STAGE2)  # the models of Tables 1, 3 and 5
MODES = ("pred", "gt", "noise", "direct")
PANELS = {  # logged key -> panel title: the curves of Figures 5 and 6 the miniature logs
    "reward/total": "Reward", "reward/acc": "Accuracy reward", "rollout/tool_calls": "Tool calls per trajectory",
    "rollout/iou": "IoU of the crop with a GT box", "rollout/overlap": "Overlap (coverage of B1)",
    "rollout/bbox_ratio": "Crop area / image area",
}
FIGURES = {  # name -> (title, runs): Figure 5 (§8.1) and Figure 6 (§8.2)
    "figure5": ("Figure 5 (miniature): training dynamics, baseline vs Stage I", (BASELINE, STAGE1)),
    "figure6": ("Figure 6 (miniature): Stage II (grounding reward) after Stage I (no grounding reward)",
                (STAGE1, STAGE2)),
}
IOU_GAIN, ACC_GAIN, DROP_MIN, DROP_RATIO = 10.0, 10.0, 10.0, 2.0  # the targets, in points (see check_targets)
HIGH_LOSS_MAX = 5.0  # points Stage I may lose to the baseline at the high budget
COVERAGE_SLACK = 0.05  # Figure 6: B1 coverage may fall this much while the crops shrink
DYNAMICS = ("rollout/bbox_ratio", "rollout/overlap")  # Figure 6's crop area / image area and B1 coverage
TIE = 1e-9  # a figure on its target's threshold (up to float rounding) meets it


# ----------------------------------------------------------------------------------------------------------------
# Per-question records -> summary rows with intervals

def load_records(folders: Sequence[Path]) -> dict[str, list[dict]]:
    """``{label: records}`` of eval results folders: the records each folder's ``metrics.json`` summarises (see
    :func:`lfpc.evaluation.records.load_run_records`), under its label."""
    by_label: dict[str, list[dict]] = {}
    for folder in folders:
        if not (Path(folder) / "records.jsonl").is_file():
            raise FileNotFoundError(f"{folder}: no records.jsonl (the per-question records eval.py writes)")
        metrics, records = load_run_records(folder)
        by_label.setdefault(metrics["label"], []).extend(records)
    return by_label


def _as_dict(interval: Interval | None, scale: float = 100.0) -> dict | None:
    return None if interval is None else dataclasses.asdict(interval.scaled(scale))


def summarize_records(records: Sequence[dict], resamples: int = RESAMPLES, seed: int = 0) -> list[dict]:
    """One row per (benchmark, budget) of one model's records: ``n`` (questions in pred mode), ``acc`` per crop
    mode, ``iou`` (IoU x100 of the last crop with B1, pred mode, questions with a crop), ``iou_n`` and ``drop``
    (pred - noise accuracy, paired questions); every value in percent / points as ``{value, low, high}``."""
    rows = []
    for benchmark, budget in sorted({(r["benchmark"], r["budget"]) for r in records}):
        group = [r for r in records if r["benchmark"] == benchmark and r["budget"] == budget]
        mode = {m: [r for r in group if r["mode"] == m] for m in MODES}
        correct = {m: per_question(mode[m], "correct") for m in MODES}
        iou = per_question(mode["pred"], "last_iou")
        boot = dict(resamples=resamples, seed=seed)
        rows.append({
            "benchmark": benchmark, "budget": budget, "n": len(mode["pred"]),
            "acc": {m: _as_dict(bootstrap_mean(list(correct[m].values()), **boot)) if correct[m] else None
                    for m in MODES},
            "iou": _as_dict(bootstrap_mean(list(iou.values()), **boot)) if iou else None,
            "iou_n": sum(v is not None for v in iou.values()),
            "drop": _as_dict(bootstrap_paired_difference(correct["pred"], correct["noise"], **boot)),
            "chance": chance_accuracy(mode["pred"]),
        })
    return rows


def chance_accuracy(records: Sequence[dict]) -> float | None:
    """Accuracy (%) of guessing an option uniformly at random on these questions; None unless every record lists
    its options (free-form questions have no chance level)."""
    counts = [len(r.get("options") or ()) for r in records]
    if not counts or 0 in counts:
        return None
    return 100.0 * sum(1 / c for c in counts) / len(counts)


# ----------------------------------------------------------------------------------------------------------------
# Summary -> tables and targets

def _interval(value: Mapping | None) -> Interval | None:
    return None if value is None else Interval(**value)


def format_interval(value: Interval | Mapping | None) -> str:
    """``"62.0 [55.0, 69.0]"`` (one decimal), ``"–"`` when not measured."""
    i = value if isinstance(value, Interval) else _interval(value)
    return "–" if i is None else f"{i.value:.1f} [{i.low:.1f}, {i.high:.1f}]"


def miniature_tables(summary: Mapping) -> list[Table]:
    """Tables 1, 3 and 5 (miniature) of a summary, one row per model of :data:`CORE` and budget, and Table 10, one row
    per Stage II reward and budget."""
    level = f"{100 * summary['level']:.0f}%"
    ci = (f"Value [{level} interval]: bootstrap over the {summary['benchmark']} test questions ({summary['resamples']} "
          f"resamples, seed {summary['seed']}). Budget: global-view visual tokens.")

    def table(number: int, title: str, headers: list[str], cells, note: str, labels=CORE) -> Table:
        body = [[model["name"], str(row["budget"]), *cells(row)]
                for label in labels for model in summary["models"] if model["label"] == label
                for row in model["rows"]]
        return Table(number, f"{title} (miniature)", ["Model", "Budget", *headers], body, [note, ci])

    tables_ = [
        table(1, "Crop substitution tests", [f"Acc {tables.MODE_NAMES[m]} (%)" for m in MODES],
              lambda r: [format_interval(r["acc"][m]) for m in MODES],
              "Accuracy (%) with the model's own crop (pred), the GT box B1 cropped instead (GT), the crop replaced "
              "by noise (noise), and answering without the tool (direct); paper §3."),
        table(3, "Baseline / Stage I / Stage II", ["N", "Acc (%)", "IoU x100", "N cropped"],
              lambda r: [str(r["n"]), format_interval(r["acc"]["pred"]), format_interval(r["iou"]), str(r["iou_n"])],
              "Accuracy (%) in pred mode and IoU x100 of the scored (last) crop with the GT box B1, over the questions "
              "with a crop (N cropped of N); paper §5.3, Table 3."),
        table(5, "Noise-crop drop", ["Acc pred (%)", "Acc noise (%)", "Drop (points)"],
              lambda r: [format_interval(r["acc"]["pred"]), format_interval(r["acc"]["noise"]),
                         format_interval(r["drop"])],
              "Drop = pred accuracy - noise accuracy, questions resampled in pairs across the two modes; a model that "
              "reads its crops drops (paper §5.3, Table 5)."),
    ]
    table10 = [table10_label(reward) for reward in TABLE10_REWARDS]
    if any(model["label"] in table10 for model in summary["models"]):
        tables_.append(table(10, "Stage II grounding reward", ["Acc (%)", "IoU x100", "N cropped"],
                             lambda r: [format_interval(r["acc"]["pred"]), format_interval(r["iou"]), str(r["iou_n"])],
                             "Stage II from the same Stage I model with the conditional IoU reward (granted when the "
                             "crop covers >= 0.9 of B1), IoU without that condition, and no IoU reward; pred mode, "
                             "IoU x100 of the last crop with B1 (paper §5.4, Table 10).", table10))
    return tables_


@dataclass(frozen=True)
class Target:
    """One target of the miniature: what is claimed, whether it is met (None: not measured) and the figures."""

    claim: str
    met: bool | None
    figures: str

    @property
    def status(self) -> str:
        return "NOT MEASURED" if self.met is None else "MET" if self.met else "NOT MET"


def check_targets(summary: Mapping) -> list[Target]:
    """The targets, on point estimates (intervals shown). At the low budget: Stage I accuracy >= baseline + 10 points
    (Table 3); Stage I noise drop >= 10 points and >= 2x the baseline's (Table 5); Stage II IoU >= Stage I + 10
    points with accuracy not lower (Table 3); as a check that the accuracy is earned, Stage I's accuracy interval
    above the chance level of its options; Table 10's orderings, conditional IoU > IoU without threshold > no IoU
    reward in both IoU and accuracy. At the high budget: Stage I accuracy at most 5 points below the baseline's.
    Figure 6: over Stage II's training the crop area falls while B1 coverage stays (within 0.05)."""
    low, high = min(summary["budgets"]), max(summary["budgets"])
    by_budget = {(model["label"], r["budget"]): r for model in summary["models"] for r in model["rows"]}

    def get(label: str, *path: str, budget: int = low) -> Interval | None:
        value = by_budget.get((label, budget))
        for key in path:
            value = None if value is None else value[key]
        return _interval(value)

    def show(label: str, *path: str, budget: int = low) -> str:
        return f"{NAMES[label]} {format_interval(get(label, *path, budget=budget))}"

    at = f"at {low} tokens"
    b_acc, s1_acc, s2_acc = (get(x, "acc", "pred") for x in (BASELINE, STAGE1, STAGE2))
    b_drop, s1_drop = get(BASELINE, "drop"), get(STAGE1, "drop")
    s1_iou, s2_iou = get(STAGE1, "iou"), get(STAGE2, "iou")
    targets = []
    claim = f"Stage I accuracy {at} >= baseline + {ACC_GAIN:g} points (Table 3)"
    if b_acc is None or s1_acc is None:
        targets.append(Target(claim, None, "not evaluated"))
    else:
        gain = s1_acc.value - b_acc.value
        targets.append(Target(claim, gain >= ACC_GAIN - TIE, f"{show(STAGE1, 'acc', 'pred')} vs "
                              f"{show(BASELINE, 'acc', 'pred')}: {gain:+.1f} points"))
    claim = f"Stage I noise drop {at} >= {DROP_MIN:g} points and >= {DROP_RATIO:g}x the baseline's (Table 5)"
    if b_drop is None or s1_drop is None:
        targets.append(Target(claim, None, "not evaluated"))
    else:
        needed = max(DROP_MIN, DROP_RATIO * b_drop.value)
        targets.append(Target(claim, s1_drop.value >= needed - TIE,
                              f"{show(STAGE1, 'drop')} vs {show(BASELINE, 'drop')} points: needs >= {needed:.1f}"))
    claim = f"Stage II IoU {at} >= Stage I + {IOU_GAIN:g} points, accuracy not lower (Table 3)"
    if None in (s1_iou, s2_iou, s1_acc, s2_acc):
        targets.append(Target(claim, None, "not evaluated (or no crop)"))
    else:
        gain = s2_iou.value - s1_iou.value
        targets.append(Target(claim, gain >= IOU_GAIN - TIE and s2_acc.value >= s1_acc.value - TIE,
                              f"IoU x100 {show(STAGE2, 'iou')} vs {show(STAGE1, 'iou')}: {gain:+.1f}; accuracy "
                              f"{show(STAGE2, 'acc', 'pred')} vs {show(STAGE1, 'acc', 'pred')}: "
                              f"{s2_acc.value - s1_acc.value:+.1f}"))
    claim = f"Stage I accuracy {at} above chance: the interval's lower bound exceeds guessing among the options"
    chance = (by_budget.get((STAGE1, low)) or {}).get("chance")
    if s1_acc is None or chance is None:
        targets.append(Target(claim, None, "not evaluated (or no options)"))
    else:
        targets.append(Target(claim, s1_acc.low > chance + TIE,
                              f"{show(STAGE1, 'acc', 'pred')} vs chance {chance:.1f}"))
    targets.append(_high_budget_target(get, show, high))
    targets.append(_table10_target(get, at))
    targets.append(_figure6_target(summary.get("dynamics", {}).get(STAGE2)))
    return targets


def _high_budget_target(get, show, high: int) -> Target:
    claim = f"Stage I accuracy at {high} tokens at most {HIGH_LOSS_MAX:g} points below the baseline's"
    b_acc, s1_acc = get(BASELINE, "acc", "pred", budget=high), get(STAGE1, "acc", "pred", budget=high)
    if b_acc is None or s1_acc is None:
        return Target(claim, None, "not evaluated")
    loss = b_acc.value - s1_acc.value
    return Target(claim, loss <= HIGH_LOSS_MAX + TIE, f"{show(STAGE1, 'acc', 'pred', budget=high)} vs "
                                                       f"{show(BASELINE, 'acc', 'pred', budget=high)}: {-loss:+.1f}")


def _table10_target(get, at: str) -> Target:
    claim = (f"Table 10 {at}: conditional IoU > IoU without threshold > no IoU reward, in IoU x100 and in accuracy "
             f"(Stage II from the same Stage I model)")
    order = list(TABLE10_REWARDS)
    holds, figures = [], []
    for metric, path in (("IoU x100", ("iou",)), ("accuracy", ("acc", "pred"))):
        values = [get(table10_label(reward), *path) for reward in order]
        if None in values:
            return Target(claim, None, f"not evaluated (or no crop): {metric}")
        pairs = [(a, b, values[i].value > values[i + 1].value) for i, (a, b) in enumerate(zip(order, order[1:]))]
        holds += [held for *_, held in pairs]
        figures.append(f"{metric} " + ", ".join(f"{TABLE10_REWARDS[r]} {format_interval(v)}"
                                                for r, v in zip(order, values))
                       + " (" + "; ".join(f"{TABLE10_REWARDS[a]} > {TABLE10_REWARDS[b]}: {'holds' if held else 'no'}"
                                          for a, b, held in pairs) + ")")
    return Target(claim, all(holds), "; ".join(figures))


def _figure6_target(dynamics: Mapping | None) -> Target:
    claim = (f"Figure 6: over Stage II's training the crop area ratio falls while B1 coverage stays (falls by at most "
             f"{COVERAGE_SLACK:g}); first vs last quarter of its logged steps")
    if not dynamics or any(dynamics.get(metric) is None for metric in DYNAMICS):
        return Target(claim, None, "not logged (no crops)")
    (area_first, area_last), (cover_first, cover_last) = (dynamics[metric] for metric in DYNAMICS)
    met = area_last < area_first and cover_last >= cover_first - COVERAGE_SLACK - TIE
    return Target(claim, met, f"crop area / image area {area_first:.3f} -> {area_last:.3f}; "
                              f"B1 coverage {cover_first:.3f} -> {cover_last:.3f}")


def quarter_means(frame, metric: str) -> list[float] | None:
    """Means of the first and last quarter of a run's logged values of ``metric``, as the learning curve takes them
    (:func:`lfpc.training.curve.first_and_last_quarter`); None when never logged."""
    logged = frame[metric].dropna().tolist() if metric in frame else []
    return [float(v) for v in first_and_last_quarter(logged)] if logged else None


def targets_text(targets: Sequence[Target]) -> str:
    """The targets check as printed: one ``MET`` / ``NOT MET`` line per target with its figures."""
    return "\n".join(["Targets of the miniature:"] + [f"  {t.status:<12} {t.claim}: {t.figures}" for t in targets])


# ----------------------------------------------------------------------------------------------------------------
# RESULTS.md

def machine_description() -> str:
    """CPU cores available to this process (as ``nproc`` counts them), the CPU model (``/proc/cpuinfo``), the OS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.is_file() else []
    return f"{cores} CPU cores (nproc), {models[0] if models else platform.processor() or 'CPU model unknown'}; " \
           f"{platform.system()} {platform.release()}, Python {platform.python_version()}"


def reproduce_command(definition: Definition, size: str | None, runs_dir: Path) -> str:
    """The ``python -m experiments run`` command that makes (or resumes) these runs and this report."""
    parts = ["python -m experiments run", definition.name]
    size = size or definition.size
    if size != definition.size:
        parts += ["--size", size]
    if Path(runs_dir).resolve() != (ROOT / "experiments_out" / definition.name / size).resolve():
        parts += ["--out", str(runs_dir)]
    return " ".join(parts)


def _link(path: str, base: Path | None) -> str:
    return os.path.relpath(path, base) if base is not None and Path(path).is_absolute() else path


def results_markdown(summary: Mapping, base: Path | None = None) -> str:
    """The report of a summary (see :func:`collect_miniature`): setup, targets, Tables 1/3/5, figures (paths relative
    to ``base``, the report's folder), training runs and wall times."""
    commands = summary["commands"]
    wall = f"{sum(c['wall_s'] for c in commands) / 60:.1f} min" if commands else "not recorded (no manifest.json)"
    lines = [
        f"# {summary['title']}", "",
        "The paper's two-stage recipe at toy scale (the ~2M-parameter Qwen2.5-VL of `models/mini` on the synthetic "
        "pattern task): baseline, Stage I, Stage II and Table 10's Stage II rewards, evaluated on "
        f"{summary['n']} held-out "
        f"`{summary['benchmark']}` questions at global-view budgets {' / '.join(map(str, summary['budgets']))} "
        f"visual tokens{' (low / high)' if len(summary['budgets']) == 2 else ''}.", "",
        f"* Command: `{summary['command']}`",
        f"* Machine: {summary['machine']}",
        f"* Date: {summary['date']}",
        f"* Code: {summary['code']}",
        f"* Wall time of the runs: {wall}", "",
        "## Targets", "",
        *[f"* **{t.status}** {t.claim}: {t.figures}" for t in check_targets(summary)], "",
        "## Tables", "",
        *[tables.table_markdown(t) + "\n" for t in miniature_tables(summary)],
        "## Training dynamics", "",
        *[f"![{name}]({_link(figure['png'], base)})\n\n_{figure['title']}; plotted values: "
          f"`{_link(figure['csv'], base)}`._\n" for name, figure in summary["figures"].items()],
        "## Runs", "",
        tables.markdown_table(["Run", "GRPO steps", "s / step"],
                              [[r["label"], str(r["grpo_steps"]), tables.format_cell(r["step_s"], "sec", "–")]
                               for r in summary["runs"]]),
    ]
    if commands:
        walls = [[f"{c['kind']} {c['name']}", f"{c['wall_s'] / 60:.1f}"] for c in commands]
        lines += ["", tables.markdown_table(["Command", "Wall (min)"], walls)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# The collector

def publish_artifacts(summary: Mapping, out: Path, folder: Path) -> dict:
    """Copy the tables, figures and summary of ``out`` into ``folder`` (a tracked folder beside the repository's
    report, as ``experiments_out/`` is not committed); returns the summary with its figures pointing there."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(out.iterdir()):
        if path.is_file() and path.suffix in {".png", ".csv", ".md", ".json"} and path.name != "RESULTS.md":
            shutil.copy2(path, folder / path.name)
    figures = {name: {**figure, "png": str(folder / Path(figure["png"]).name),
                      "csv": str(folder / Path(figure["csv"]).name)} for name, figure in summary["figures"].items()}
    return {**summary, "figures": figures}


def collect_miniature(definition: Definition, runs_dir: Path, out: Path, resamples: int = RESAMPLES,
                      seed: int = 0) -> str:
    """Write ``miniature.json``, ``table{1,3,5}.md/.csv``, ``figure{5,6}.png/.csv`` and ``RESULTS.md`` into ``out``
    (and, when the runs are of the definition's size, the report into the definition's ``report`` file at the
    repository root with its artefacts in ``results/<name>/``); returns the report and the targets check."""
    from analysis.dynamics import load_runs, write_figure

    folders = eval_folders(definition, runs_dir)
    if not folders:
        raise FileNotFoundError(f"{runs_dir}: no eval results of {definition.name}; run `python -m experiments run "
                                f"{definition.name}` first")
    manifest = load_manifest(Path(runs_dir))
    models = [{"label": label, "name": NAMES.get(label, label), "rows": summarize_records(records, resamples, seed)}
              for label, records in load_records(folders).items()]
    benchmarks = sorted({row["benchmark"] for model in models for row in model["rows"]})
    if len(benchmarks) != 1:
        raise ValueError(f"{runs_dir}: the miniature evaluates one benchmark, found {benchmarks}")
    jobs = {job.label: job for job in train_jobs(definition, runs_dir)}
    out.mkdir(parents=True, exist_ok=True)
    plotted = list(dict.fromkeys(label for _, labels in FIGURES.values() for label in labels))
    missing = [label for label in plotted if label not in jobs]
    if missing:
        raise FileNotFoundError(f"{runs_dir}: no training run for {missing} (found {sorted(jobs)})")
    frames = load_runs({label: jobs[label].dir for label in plotted})  # each run's metrics read once
    figures = {}
    for name, (title, labels) in FIGURES.items():
        png = out / f"{name}.png"
        write_figure({NAMES[label]: frames[label] for label in labels}, png, title, PANELS)
        figures[name] = {"title": title, "png": str(png), "csv": str(png.with_suffix(".csv"))}
    dynamics = {label: {metric: quarter_means(frames[label], metric) for metric in DYNAMICS}
                for label in (STAGE1, STAGE2)}
    costs = {label: job_cost(job) for label, job in jobs.items()}
    summary = {
        "title": definition.title, "benchmark": benchmarks[0],
        "n": max(row["n"] for model in models for row in model["rows"]),
        "budgets": sorted({row["budget"] for model in models for row in model["rows"]}),
        "resamples": resamples, "level": LEVEL, "seed": seed, "models": models, "figures": figures,
        "dynamics": dynamics,
        "runs": [{"label": label, "grpo_steps": cost["grpo_steps"], "step_s": cost["step_s"]}
                 for label, cost in costs.items()],
        "commands": [{k: c[k] for k in ("kind", "name", "wall_s")} for c in manifest["commands"] if "wall_s" in c],
        "code": ", ".join(sorted({c.get("code", "not recorded") for c in manifest["commands"]})) or "not recorded",
        "command": reproduce_command(definition, manifest.get("size"), Path(runs_dir)),
        "machine": machine_description(), "date": datetime.date.today().isoformat(),
    }
    (out / "miniature.json").write_text(json.dumps(summary, indent=1))
    for table in miniature_tables(summary):
        (out / f"table{table.number}.md").write_text(tables.table_markdown(table) + "\n")
        tables.write_csv(table, out / f"table{table.number}.csv")
    reports = {out / "RESULTS.md": summary}
    if definition.report and manifest.get("size") == definition.size:
        reports[ROOT / definition.report] = publish_artifacts(summary, out, ROOT / "results" / definition.name)
    for path, shown in reports.items():
        path.write_text(results_markdown(shown, path.parent))
    return "\n\n".join([results_markdown(summary, Path.cwd()), targets_text(check_targets(summary)),
                        "Written: " + ", ".join(str(p) for p in reports)])
