"""Training dynamics (paper Figures 5 and 6) from the metrics a training run logged.

A run folder (``train.py``'s Hydra folder) holds ``csv/version_N/metrics.csv`` (one per launch; a resumed run adds
a version) and, with the default logger, a wandb offline run under ``wandb/``. Both hold the same rows: one per
GRPO step, keyed by Lightning's global step (``step`` in the CSV, ``trainer/global_step`` in wandb). Loaded runs
are frames indexed by ``grpo_step`` (1, 2, ...) with one column per logged metric.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.wandb_log import read_history, run_files

# logged key -> panel title; the six curves of Figures 5 and 6
DYNAMICS_METRICS: dict[str, str] = {
    "reward/total": "Reward",
    "rollout/tool_calls": "Tool calls per trajectory",
    "rollout/iou": "IoU of the crop with a GT box",
    "rollout/overlap": "Overlap (coverage of B1)",
    "rollout/bbox_ratio": "Crop area / image area",
    "rollout/crop_tokens": "Visual tokens per crop",
}
STEP_KEY = "reward/total"  # logged once per GRPO step


def _per_grpo_step(rows: Sequence[dict], step_key: str, where: str) -> pd.DataFrame:
    frame = pd.DataFrame([r for r in rows if r.get(STEP_KEY) is not None])
    if frame.empty:
        raise ValueError(f"{where}: no GRPO step was logged (no {STEP_KEY!r} rows)")
    frame = frame.rename(columns={step_key: "global_step"})
    frame = frame.sort_values("global_step", kind="stable").drop_duplicates("global_step", keep="last")
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="grpo_step")
    return frame


def read_csv_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The per-step rows of every ``csv/version_*/metrics.csv`` of a run (empty cells: NaN)."""
    paths = sorted(Path(run_dir).glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no csv/version_*/metrics.csv (was the run logged with logger=csv?)")
    rows = []
    for path in paths:
        with path.open(newline="") as handle:
            rows += [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
    return _per_grpo_step(rows, "step", str(run_dir))


def read_wandb_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The per-step history rows of every wandb offline run file of a run (see :mod:`analysis.wandb_log`)."""
    files = run_files(run_dir)
    if not files:
        raise FileNotFoundError(f"{run_dir}: no wandb offline run (wandb/*/run-*.wandb)")
    rows = [row for path in files for row in read_history(path)]
    return _per_grpo_step(rows, "trainer/global_step", str(run_dir))


def load_metrics(run_dir: str | Path, source: str = "auto") -> pd.DataFrame:
    """A run's per-GRPO-step metrics from ``source``: ``csv``, ``wandb`` or ``auto`` (CSV when logged, else wandb)."""
    if source == "csv" or (source == "auto" and any(Path(run_dir).glob("csv/version_*/metrics.csv"))):
        return read_csv_metrics(run_dir)
    if source in ("wandb", "auto"):
        return read_wandb_metrics(run_dir)
    raise ValueError(f"source must be csv, wandb or auto, got {source!r}")


def final_values(frame: pd.DataFrame, metrics: Sequence[str], last: int = 5) -> dict[str, float | None]:
    """Per metric, the mean of its last ``last`` logged values (None when never logged, e.g. IoU without crops)."""
    values: dict[str, float | None] = {}
    for metric in metrics:
        logged = frame[metric].dropna() if metric in frame else pd.Series(dtype=float)
        values[metric] = float(logged.tail(last).mean()) if len(logged) else None
    return values


def parse_runs(spec: str) -> dict[str, Path]:
    """``"Name=path;Name=path"`` (e.g. an environment variable) -> ``{name: path}``; empty string -> {}."""
    runs = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"expected 'Name=run folder' items separated by ';', got {item!r}")
        runs[name.strip()] = Path(path.strip())
    return runs


def long_table(runs: Mapping[str, pd.DataFrame], metrics: Sequence[str] = tuple(DYNAMICS_METRICS)) -> pd.DataFrame:
    """The plotted values as rows (run, grpo_step, metric, value), for a CSV beside the figure."""
    parts = [frame[[m]].dropna().reset_index().rename(columns={m: "value"}).assign(run=name, metric=m)
             for name, frame in runs.items() for m in metrics if m in frame]
    columns = ["run", "grpo_step", "metric", "value"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def moving_average(series: pd.Series, window: int) -> pd.Series:
    """Trailing mean over the last ``window`` logged values (fewer at the start), the usual smoothing of noisy
    per-step training curves; NaN entries (steps where the metric was not logged) are left out first."""
    if window < 1:
        raise ValueError(f"the moving-average window must be >= 1 step, got {window}")
    return series.dropna().rolling(window, min_periods=1).mean()


def plot_dynamics(runs: Mapping[str, pd.DataFrame], metrics: Mapping[str, str] = DYNAMICS_METRICS,
                  title: str | None = None, columns: int = 3, smooth: int = 0) -> Figure:
    """One panel per metric, one curve per run (x: GRPO step); a metric no run logged gets an empty panel that
    says so (e.g. IoU when no trajectory cropped). ``smooth`` > 1 overlays each curve's moving average over that
    many logged steps (:func:`moving_average`) on the raw curve, drawn faint."""
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (metric, label) in zip(axes, metrics.items()):
        plotted = False
        for name, frame in runs.items():
            if metric in frame and frame[metric].notna().any():
                series = frame[metric].dropna()
                if smooth > 1:
                    (raw,) = ax.plot(series.index, series.to_numpy(), alpha=0.3)
                    average = moving_average(series, smooth)
                    ax.plot(average.index, average.to_numpy(), color=raw.get_color(),
                            label=f"{name} (mean of {smooth})")
                else:
                    ax.plot(series.index, series.to_numpy(), marker="o" if len(series) < 20 else None, label=name)
                plotted = True
        ax.set_title(label)
        ax.set_xlabel("GRPO step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if plotted:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, f"{metric}\nnot logged", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    return figure


def load_runs(runs: Mapping[str, str | Path], source: str = "auto") -> dict[str, pd.DataFrame]:
    """``{name: run folder}`` -> ``{name: per-GRPO-step metrics}`` (see :func:`load_metrics`)."""
    return {name: load_metrics(folder, source) for name, folder in runs.items()}


def write_figure(runs: Mapping[str, pd.DataFrame], out_png: str | Path, title: str | None = None,
                 metrics: Mapping[str, str] = DYNAMICS_METRICS, smooth: int = 0) -> Figure:
    """Plot ``metrics`` (default :data:`DYNAMICS_METRICS`) of the loaded runs into ``out_png`` (``smooth``: see
    :func:`plot_dynamics`), the plotted raw values beside it (same name, ``.csv``); returns the figure."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure = plot_dynamics(runs, metrics, title=title, smooth=smooth)
    figure.savefig(out_png, dpi=120)
    long_table(runs, tuple(metrics)).to_csv(out_png.with_suffix(".csv"), index=False)
    return figure
