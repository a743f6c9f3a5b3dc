"""Turn a definition's finished runs into its paper table (``<name>.md`` + ``<name>.csv``) or figure (PNG + CSV).

Collectors (``collector:`` in the definition):

* ``eval`` (Tables 1, 2, 3, 5, 6, 7): the eval results folders rendered by :mod:`lfpc.evaluation.tables`;
* ``ablation`` (Tables 4, 8, 9, 10): the table's paper layout (:data:`lfpc.evaluation.tables.LAYOUTS`), one row per
  evaluated run and budget, and the final value of training metrics (mean of the last :data:`FINAL_STEPS` logged
  GRPO steps);
* ``cost`` (Table 11): per training job, devices, GRPO steps, time per step from the logs, wall time (job folder
  start, ``.hydra/config.yaml``, to ``summary.json``) and device-hours (GPU-hours on GPUs);
* ``hyperparameters`` (Table 12): :data:`HYPERPARAMETERS` read back from each job's ``.hydra/config.yaml``;
* ``figure`` (Figures 5, 6): the training dynamics of the runs named in ``groups``;
* ``miniature`` (the paper in miniature): Tables 1/3/5 with bootstrap intervals, Figures 5/6 and the targets check,
  written to ``RESULTS.md`` (:mod:`experiments.miniature`).

Paper values sit beside the rows: for eval tables in :mod:`lfpc.evaluation.paper_numbers`, for the others in the
definition's ``paper`` / ``paper_columns``, each followed by the difference ours - paper; "?" marks a cell the paper
does not have, "–" a value not measured.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from experiments.definitions import Definition
from experiments.layout import TrainJob
from experiments.runs import eval_folders, eval_labels, job_cost, train_jobs
from lfpc.config import SELECTION_STATS
from lfpc.evaluation import paper_numbers, tables
from lfpc.files import atomic_write
from lfpc.evaluation.paper_numbers import PaperRow
from lfpc.evaluation.tables import Column, Results, Table, load_results

FINAL_STEPS = 5
NEVER_DIVERGED_NOTE = ("Never diverged: the samples whose answer was the same at every pyramid level (or had no valid "
                       "answer on the original view); they train at resolution.never_diverged's view (hardest: the "
                       "16-token level, the default; original; drop: left out).")


def _write(table: Table, out: Path, name: str) -> str:
    text = tables.table_markdown(table)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{name}.md", text + "\n")
    tables.write_csv(table, out / f"{name}.csv")
    return text


def _paper_note(definition: Definition) -> str:
    return (f"(paper) rows: {paper_numbers.PAPER}, Table {definition.number} (from experiments/tables/"
            f"{definition.name}.yaml); ? = no such cell there.")


# ----------------------------------------------------------------------------------------------------------------
# Eval tables (1, 2, 3, 5, 6, 7) and ablations (4, 8, 9, 10)

def collect_eval(definition: Definition, runs_dir: Path, out: Path) -> str:
    """Render the definition's paper table from its eval results with :func:`lfpc.evaluation.tables.render`."""
    folders = eval_folders(definition, runs_dir)
    if not folders:
        raise FileNotFoundError(f"{runs_dir}: no eval results of {definition.name} (eval/<label>/<benchmark>/"
                                f"metrics.json); run `python -m experiments run {definition.name}` first")
    return tables.render(folders, out, [definition.number])


def _train_column(metric: str, finals: dict[str, dict[str, float | None]]) -> Column:
    return Column(f"train/{metric}", f"train {metric}", "iou",
                  lambda results, label, budget, variant: finals.get(label, {}).get(metric))


def selection_stats(job: TrainJob) -> dict | None:
    """The statistics of the job's offline resolution selection (its ``resolution_stats.json``), None without."""
    path = job.dir / SELECTION_STATS
    return json.loads(path.read_text()) if path.is_file() else None


def _never_diverged_column(jobs: list[TrainJob]) -> list[Column]:
    """Table 9's column of the share of samples whose answer never diverged (those get ``never_diverged``'s view),
    when any job ran the selection."""
    shares = {job.label: 100.0 * stats["never_diverged_fraction"] for job in jobs
              if (stats := selection_stats(job)) is not None}
    if not shares:
        return []
    return [Column("selection/never_diverged", "never diverged (%)", "pct",
                   lambda results, label, budget, variant: shares.get(label))]


def ablation_table(definition: Definition, runs_dir: Path) -> Table:
    """The paper's layout of the definition's table (:data:`lfpc.evaluation.tables.LAYOUTS`), one row per evaluated
    label and budget with the final value of each of ``train_metrics`` after it, then the share of samples the
    offline selection found never diverging (jobs that ran it); the definition's paper rows (``paper:``) under their
    labels, with the difference ours - paper."""
    from analysis.dynamics import final_values, load_metrics

    folders, labels = eval_folders(definition, runs_dir), eval_labels(definition, runs_dir)
    results = load_results(folders) if folders else Results([])
    jobs = [job for job in train_jobs(definition, runs_dir) if job.label in labels]
    finals = {job.label: final_values(load_metrics(job.dir), definition.train_metrics, FINAL_STEPS) for job in jobs}
    never_diverged = _never_diverged_column(jobs)
    table = tables.build_table(definition.number or 0, results, definition.paper, labels,
                               [*(_train_column(m, finals) for m in definition.train_metrics), *never_diverged])
    notes = [*table.notes, f"train <metric>: mean of the last {FINAL_STEPS} logged GRPO steps of the run's training "
                           "metric."]
    if never_diverged:
        notes.append(NEVER_DIVERGED_NOTE)
    return dataclasses.replace(table, title=definition.title, notes=notes)


# ----------------------------------------------------------------------------------------------------------------
# Cost (Table 11)

COST_COLUMNS = (  # key (also of paper values), header, kind
    ("devices", "Devices", "count"), ("grpo_steps", "GRPO steps", "count"), ("step_s", "s / step", "sec"),
    ("rollout_pct", "Rollout %", "pct"), ("wall_h", "Wall (h)", "num"), ("device_h", "Device-h", "num"),
)


def _paper_cost_row(row: PaperRow) -> list[str]:
    return [f"{row.name} (paper)", "A100", *(tables.format_cell(row.values.get(key), kind, "?")
                                            for key, _, kind in COST_COLUMNS)]


def selection_cost(job: TrainJob, cost: dict[str, Any]) -> dict[str, Any] | None:
    """The cost of the job's offline resolution selection (its ``resolution_stats.json``): the time its manifest's
    records took to compute, over every call (a single process on one device: ``devices``), None when the job ran
    none. Statistics written before the total was kept give the job's own call only."""
    stats = selection_stats(job)
    if stats is None:
        return None
    wall_h, devices = stats.get("total_seconds", stats["seconds"]) / 3600, stats.get("devices", 1)
    return {**dict.fromkeys(key for key, _, _ in COST_COLUMNS), "accelerator": cost["accelerator"],
            "devices": devices, "wall_h": wall_h, "device_h": wall_h * devices}


def stage_ratio_note(costs: dict[str, dict[str, Any]], definition: Definition) -> str | None:
    """The measured Stage II : Stage I device-hours beside the paper's (Table 11: 96 / 320 = 0.3), from the jobs
    of each stage (``costs``: stage -> the first job's cost); None without both stages measured."""
    first, second = costs.get("infogap"), costs.get("grounding")
    if not first or not second or not first.get("device_h") or second.get("device_h") is None:
        return None
    paper = {p.label: p.values.get("device_h") for p in definition.paper}
    theirs = (f"; paper {paper['stage2'] / paper['stage1']:.2f} ({paper['stage2']:g} / {paper['stage1']:g} "
              "A100-h)" if paper.get("stage1") and paper.get("stage2") is not None else "")
    return (f"Stage II : Stage I device-hours: measured {second['device_h'] / first['device_h']:.2f} "
            f"({second['label']} / {first['label']}){theirs}.")


def cost_table(definition: Definition, runs_dir: Path) -> Table:
    """One row per training job, then one for its offline resolution selection (label ``<job>: resolution
    selection``): accelerator and :data:`COST_COLUMNS`, the paper's row after its label; the paper's other rows
    (DeepEyes, the total) follow."""
    rows, labels, never_diverged, by_stage = [], [], [], {}
    for job in train_jobs(definition, runs_dir):
        cost = job_cost(job)
        by_stage.setdefault(cost["stage"], {**cost, "label": job.label})
        if (stats := selection_stats(job)) is not None:
            share = f"{100 * stats['never_diverged_fraction']:.1f}%"
            never_diverged.append(f"{job.label}: {stats['never_diverged']}/{stats['total']} ({share}) -> "
                                  f"{stats['never_diverged_policy']}")
        selection = selection_cost(job, cost)
        for label, measured in ((job.label, cost), (f"{job.label}: resolution selection", selection)):
            if measured is None:
                continue
            labels.append(label)
            rows.append([label, str(measured["accelerator"]),
                         *(tables.format_cell(measured[key], kind, "–") for key, _, kind in COST_COLUMNS)])
            rows += [_paper_cost_row(p) for p in definition.paper if p.label == label]
    rows += [_paper_cost_row(p) for p in definition.paper if p.label not in labels]
    notes = ["Wall time: from the job's start (its .hydra/config.yaml) to its summary.json, model loading, resolution "
             "selection and export included (a resumed job counts from its last start); a job's resolution selection "
             "row: the time its manifest's records took to compute, over every call, on the one device it ran on. "
             "s / step: mean time of a GRPO step from the logs (weight sync + rollout + update); Rollout %: rollout's "
             "share of it. Device-h = wall time x devices: GPU-hours when the accelerator is gpu."]
    if never_diverged:
        notes.append(f"{NEVER_DIVERGED_NOTE} {'; '.join(never_diverged)}.")
    if (ratio := stage_ratio_note(by_stage, definition)) is not None:
        notes.append(ratio)
    if definition.paper:
        notes.append(_paper_note(definition))
    return Table(definition.number or 0, definition.title,
                 ["Run", "Accelerator", *(header for _, header, _ in COST_COLUMNS)], rows, notes)


# ----------------------------------------------------------------------------------------------------------------
# Hyper-parameters (Table 12)

HYPERPARAMETERS: tuple[tuple[str, Callable[[DictConfig], Any]], ...] = (
    ("stage", lambda c: c.stage),
    ("accelerator", lambda c: c.trainer.accelerator),
    ("devices", lambda c: c.trainer.devices),
    ("GRPO steps", lambda c: c.trainer.max_steps),
    ("prompts / step", lambda c: c.grpo.prompts_per_step),
    ("rollouts / prompt", lambda c: c.grpo.group_size),
    ("PPO mini-batch (prompts)", lambda c: c.grpo.mini_batch_size / c.grpo.group_size),
    ("micro-batch / device", lambda c: c.grpo.micro_batch_size),
    ("PPO epochs", lambda c: c.grpo.ppo_epochs),
    ("learning rate", lambda c: c.grpo.lr * c.get("lr_scale", 1.0)),
    ("clip low / high", lambda c: f"{c.grpo.loss.clip_low}/{c.grpo.loss.clip_high}"),
    ("KL coef", lambda c: c.grpo.loss.kl_coef),
    ("entropy coef", lambda c: c.grpo.loss.entropy_coef),
    ("loss aggregation", lambda c: c.grpo.loss.aggregation),
    ("temperature", lambda c: c.grpo.temperature),
    ("max turns", lambda c: c.episode.max_turns),
    ("max tokens / turn", lambda c: c.episode.max_new_tokens_per_turn),
    ("max response tokens / episode", lambda c: c.episode.max_response_tokens),
    ("dual-clip c", lambda c: c.grpo.loss.get("dual_clip")),
    ("global view tokens", lambda c: c.vision.global_max_tokens),
    ("crop tokens", lambda c: c.episode.crop_max_tokens),
    ("resolution", lambda c: c.resolution.strategy),
    ("reward weights acc/fmt/tool", lambda c: f"{c.reward.w_acc}/{c.reward.w_fmt}/{c.reward.w_tool}"),
    ("grounding reward", lambda c: c.reward.iou_mode + (" + L1" if c.reward.use_l1 else "")),
    ("tau", lambda c: c.reward.tau),
)


def format_value(value: Any, missing: str) -> str:
    """A hyper-parameter as printed: integral floats as integers, other floats in %g."""
    if value is None:
        return missing
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def hyperparameter_table(definition: Definition, runs_dir: Path) -> Table:
    """One row per :data:`HYPERPARAMETERS` entry, one column per training job, then the paper's columns."""
    jobs = train_jobs(definition, runs_dir)
    configs = [OmegaConf.load(job.dir / ".hydra" / "config.yaml") for job in jobs]
    known = {name for name, _ in HYPERPARAMETERS}
    for column, values in definition.paper_columns.items():
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{definition.name}: paper column {column!r} names unknown rows {sorted(unknown)}")
    rows = [[name, *(format_value(get(c), "–") for c in configs),
             *(format_value(values.get(name), "?") for values in definition.paper_columns.values())]
            for name, get in HYPERPARAMETERS]
    notes = ["Read back from each job's .hydra/config.yaml; prompts and PPO mini-batch are global (all devices); "
             "learning rate includes lr_scale."]
    if definition.paper_columns:
        notes.append(f"Paper columns: the paper's settings (Table 12 of {paper_numbers.PAPER}); "
                     "? = not given there.")
    return Table(definition.number or 0, definition.title,
                 ["Hyper-parameter", *(j.label for j in jobs), *definition.paper_columns], rows, notes)


# ----------------------------------------------------------------------------------------------------------------
# Figures (5, 6)

def collect_figure(definition: Definition, runs_dir: Path, out: Path) -> str:
    """Figure ``<name>.png`` (and the plotted values, ``<name>.csv``) of the runs named in ``groups``."""
    from analysis.dynamics import load_runs, write_figure

    jobs = {job.label: job.dir for job in train_jobs(definition, runs_dir)}
    missing = [label for label in definition.groups.values() if label not in jobs]
    if missing:
        raise FileNotFoundError(f"{runs_dir}: no training run for {missing} (found {sorted(jobs)})")
    runs = load_runs({name: jobs[label] for name, label in definition.groups.items()})
    png = out / f"{definition.name}.png"
    write_figure(runs, png, title=f"Figure {definition.number}: {definition.title}")
    return f"### Figure {definition.number}: {definition.title}\n\n![{definition.name}]({png})"


# ----------------------------------------------------------------------------------------------------------------

TABLE_BUILDERS: dict[str, Callable[[Definition, Path], Table]] = {
    "ablation": ablation_table, "cost": cost_table, "hyperparameters": hyperparameter_table,
}


def collect(definition: Definition, runs_dir: Path, out: Path | None = None) -> str:
    """Write the definition's table or figure from ``runs_dir`` into ``out`` (default ``<runs_dir>/results``);
    returns it as markdown."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir} is not a folder of runs")
    out = Path(out) if out is not None else runs_dir / "results"
    if definition.collector == "eval":
        return collect_eval(definition, runs_dir, out)
    if definition.collector == "figure":
        return collect_figure(definition, runs_dir, out)
    if definition.collector == "miniature":
        from experiments.miniature import collect_miniature
        return collect_miniature(definition, runs_dir, out)
    return _write(TABLE_BUILDERS[definition.collector](definition, runs_dir), out, definition.name)
