"""Offline resolution selection from the training config (the same conf/ as train.py).  Examples:

    python -m lfpc.resolution.select +stage=infogap                 # what Stage I trains with
    python -m lfpc.resolution.select resolution=answer_divergence resolution.stop=all model=qwen2_5_vl_7b

Prints the statistics (also logged and written to ``<manifest>.stats.json``). A single-process train.py runs the
same selection itself when ``resolution=answer_divergence`` finds no cached result; a multi-process launch must not
(every rank would build a model before the process group exists, and a vLLM engine would open a 1-rank group that
Lightning then takes for its own), so it fails and prints this command with the run's overrides.
"""

from __future__ import annotations

import json
import shlex
from typing import Callable, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lfpc.data.records import Sample
from lfpc.judge import Judge
from lfpc.model.loading import model_fingerprint
from lfpc.resolution.selection import AnswerFn, SelectionConfig, SelectionResult, rollout_answerer, select_resolutions


def selection_config(cfg: DictConfig) -> SelectionConfig:
    """The :class:`SelectionConfig` of a composed config (``resolution`` group, global budget, seed)."""
    r = cfg.resolution
    return SelectionConfig(strategy=r.strategy, max_tokens=cfg.vision.global_max_tokens, scale=r.scale,
                           min_tokens=r.min_tokens, reference_max_tokens=r.reference_max_tokens, stop=r.stop,
                           never_diverged=r.never_diverged, seed=cfg.seed, max_new_tokens=r.max_new_tokens,
                           batch_samples=r.batch_samples, judge=cfg.judge.get("model"))


def selection_judge(cfg: DictConfig) -> Judge | None:
    """The judge of free-form answers no rule compares (``judge.model``), loaded on its first use on the
    selection's device; None without one."""
    if not cfg.judge.get("model"):
        return None
    loaded: list[Judge] = []

    def judge(question: str, truth: str, answer: str) -> bool:
        if not loaded:
            from lfpc.judge import load_judge
            from lfpc.rollout.factory import resolve_device
            loaded.append(load_judge(cfg.judge.model, cfg.judge.cache, resolve_device(cfg.resolution.device)))
        return loaded[0](question, truth, answer)

    return judge


def rollout_answerer_factory(cfg: DictConfig, path: str, config: SelectionConfig) -> Callable[[], AnswerFn]:
    """A function building the processor and the ``rollout`` backend of ``cfg`` (on first use only)."""

    def make() -> AnswerFn:
        from lfpc.rollout.codec import ChatCodec
        from lfpc.rollout.factory import engine_from_run_config
        max_tokens = max(config.max_tokens, config.reference_max_tokens or 0)
        codec = ChatCodec.for_model(path, max_tokens)
        engine = engine_from_run_config(cfg, codec, path, cfg.resolution.device)
        return rollout_answerer(engine, codec, config.max_new_tokens)

    return make


def selection_command() -> str:
    """The command that runs this run's selection as a single process (the same overrides)."""
    try:
        overrides = [shlex.quote(o) for o in HydraConfig.get().overrides.task]
    except ValueError:  # not under @hydra.main
        overrides = ["<the training run's overrides>"]
    return " ".join(["python -m lfpc.resolution.select", *overrides])


def missing_selection(manifest: str) -> Callable[[], AnswerFn]:
    """An answerer factory that refuses: the manifest lacks samples and this process must not compute them."""

    def refuse() -> AnswerFn:
        raise RuntimeError(f"the resolution manifest {manifest} lacks samples of this run, and a multi-process launch "
                           f"cannot compute them; run the selection once as a single process, then relaunch:\n"
                           f"    {selection_command()}")

    return refuse


def run_selection(cfg: DictConfig, path: str, samples: Sequence[Sample], progress: bool = True,
                  compute_missing: bool = True) -> SelectionResult:
    """Select (or load from ``resolution.manifest``) the display size of every sample with the model at ``path``;
    with ``compute_missing`` False, samples missing from the manifest raise (with the command to compute them)."""
    config = selection_config(cfg)
    make_answerer = (rollout_answerer_factory(cfg, path, config) if compute_missing
                     else missing_selection(cfg.resolution.manifest))
    return select_resolutions(samples, config, cfg.resolution.manifest, model_fingerprint(path), make_answerer,
                              progress=progress, judge=selection_judge(cfg))


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    from lfpc.config import load_samples, model_path
    result = run_selection(cfg, model_path(cfg), list(dict.fromkeys(load_samples(cfg.data))))  # a mix may repeat
    stats = result.stats.as_dict()
    print(json.dumps({"manifest": str(cfg.resolution.manifest), **stats}, indent=1))
    return stats


if __name__ == "__main__":
    main()
