"""One evaluation run from a composed ``eval`` config: load, evaluate (resuming), write metrics.json and CSV.

A results folder holds ``records.jsonl`` (one line per question x mode x budget), ``settings.json`` (what the
records depend on, the model's fingerprint included; a rerun with other settings or other weights is refused, and
so is one whose questions or images differ from the recorded ones), ``metrics.json`` and ``metrics.csv`` (per
sub-task) over the records of the last run's plan (its questions, ``eval.limit``, modes and budgets), which
``metrics.json`` names (``plan``).
One process at a time writes a folder (``.lock``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lfpc import config as C
from lfpc.evaluation.data import load_benchmark, shuffles
from lfpc.evaluation.metrics import QUESTION_METRICS, substitution_subsets, summarize
from lfpc.evaluation.records import RecordLog
from lfpc.evaluation.runner import EvalPlan, check_modes, evaluate_samples, pending, plan_records, plan_summary
from lfpc.files import atomic_output, single_writer, write_json
from lfpc.model.families import backbone_of
from lfpc.model.loading import model_fingerprint
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.factory import engine_from_run_config
from lfpc.vision.images import set_max_image_pixels

CSV_COLUMNS = ("benchmark", "budget", "mode", "subtask", "num_questions") + QUESTION_METRICS + ("cycle_accuracy",)


def eval_plan(cfg: DictConfig) -> EvalPlan:
    """The :class:`EvalPlan` of ``cfg.eval`` and ``cfg.episode`` (a single budget or mode may be given bare)."""
    e = cfg.eval
    budgets = e.budgets if OmegaConf.is_list(e.budgets) else [e.budgets]
    modes = e.modes if OmegaConf.is_list(e.modes) else [e.modes]
    return EvalPlan(budgets=tuple(budgets), modes=tuple(modes), episode=C.episode_config(cfg),
                    batch_size=e.batch_size, seed=cfg.seed)


def run_settings(cfg: DictConfig, plan: EvalPlan, model: str) -> dict:
    """What the records of a results folder depend on (budgets, modes and batching may change between runs): the
    model's path and fingerprint (weights rewritten in place count as another model), the benchmark settings, the
    seed and the episode limits. The questions themselves are checked record by record
    (:meth:`lfpc.evaluation.records.RecordLog.check_questions`)."""
    episode = dataclasses.asdict(plan.episode)
    episode.pop("crop_mode")
    if episode["prompt"] == "lfpc":  # our prompt: recorded as before prompt presets existed, so old folders resume
        episode.pop("prompt")
    benchmark = OmegaConf.to_container(cfg.benchmark, resolve=True)
    benchmark.pop("budgets", None)
    return {"model": model, "model_fingerprint": model_fingerprint(model), "benchmark": benchmark, "seed": cfg.seed,
            "shuffle_options": shuffles(cfg.benchmark, cfg.eval.shuffle_options), "episode": episode}


def check_settings(out: Path, settings: dict, has_records: bool) -> None:
    """Write ``settings.json`` while the folder has no records (a first run, or one that stopped before its first
    batch); refuse to add records made with other settings later."""
    path = out / "settings.json"
    if not path.exists() or not has_records:
        write_json(path, settings)
        return
    previous = json.loads(path.read_text())
    changed = sorted(k for k in settings.keys() | previous.keys() if settings.get(k) != previous.get(k))
    if changed:
        raise ValueError(f"{out} holds records made with other settings (changed: {changed}); evaluate into another "
                         f"folder (e.g. another label=...) or delete {path} to mix them knowingly")


def write_metrics(out: Path, summary: dict) -> None:
    """``metrics.json`` (everything) and ``metrics.csv`` (one row per benchmark, budget, mode and sub-task)."""
    write_json(out / "metrics.json", summary)
    with atomic_output(out / "metrics.csv") as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summary["rows"])


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate as configured into ``cfg.output_dir`` (resuming what is there, one process at a time); returns the
    metrics summary."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with single_writer(out):
        return _evaluate(cfg, out)


def _evaluate(cfg: DictConfig, out: Path) -> dict:
    plan = eval_plan(cfg)
    set_max_image_pixels(cfg.max_image_pixels)
    samples = load_benchmark(cfg.benchmark, cfg.seed, cfg.eval.shuffle_options, cfg.eval.limit)
    check_modes(samples, plan.modes, cfg.benchmark.name)
    path = C.model_path(cfg)
    log = RecordLog(out / "records.jsonl")
    check_settings(out, run_settings(cfg, plan, path), has_records=bool(log.records))
    log.check_questions(samples)
    if pending(samples, plan, log.done):
        max_tokens = max(max(plan.budgets), plan.episode.crop_max_tokens)
        codec = ChatCodec.for_model(path, max_tokens)
        evaluate_samples(engine_from_run_config(cfg, codec, path, cfg.eval.device), codec, samples, plan, log, cfg.benchmark.name,
                         progress=cfg.eval.progress, image_ids={s.id for s in samples[:cfg.viewer.questions]},
                         thumbnail_px=cfg.viewer.thumbnail_px)
    records = plan_records(samples, plan, log)  # this run's questions, modes and budgets only
    summary = {"label": cfg.label, "model": path, "backbone": backbone_of(path).label, "output_dir": str(out),
               "plan": plan_summary(samples, plan), "rows": summarize(records),
               "subsets": substitution_subsets(records, cfg.eval.gt_test_coverage)}
    write_metrics(out, summary)
    return summary
