"""Offline resolution selection from the training config (the same conf/ as train.py).  Examples:

    python -m lfpc.resolution.select +stage=infogap                 # what Stage I trains with
    python -m lfpc.resolution.select resolution=answer_divergence resolution.stop=all model=qwen2_5_vl_7b

Prints the statistics (also logged and written to ``<manifest>.stats.json``); train.py runs the same
selection itself when ``resolution=answer_divergence`` finds no cached result.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

import hydra
from omegaconf import DictConfig

from lfpc.data.records import Sample
from lfpc.model.loading import model_fingerprint
from lfpc.resolution.selection import AnswerFn, SelectionConfig, SelectionResult, rollout_answerer, select_resolutions


def selection_config(cfg: DictConfig) -> SelectionConfig:
    """The :class:`SelectionConfig` of a composed config (``resolution`` group, global budget, seed)."""
    r = cfg.resolution
    return SelectionConfig(strategy=r.strategy, max_tokens=cfg.vision.global_max_tokens, scale=r.scale,
                           min_tokens=r.min_tokens, reference_max_tokens=r.reference_max_tokens, stop=r.stop,
                           never_diverged=r.never_diverged, seed=cfg.seed, max_new_tokens=r.max_new_tokens,
                           batch_samples=r.batch_samples)


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


def run_selection(cfg: DictConfig, path: str, samples: Sequence[Sample], progress: bool = True) -> SelectionResult:
    """Select (or load from ``resolution.manifest``) the display size of every sample with the model at ``path``."""
    config = selection_config(cfg)
    return select_resolutions(samples, config, cfg.resolution.manifest, model_fingerprint(path),
                              rollout_answerer_factory(cfg, path, config), progress=progress)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    from lfpc.config import load_samples, model_path
    result = run_selection(cfg, model_path(cfg), load_samples(cfg.data))
    stats = result.stats.as_dict()
    print(json.dumps({"manifest": str(cfg.resolution.manifest), **stats}, indent=1))
    return stats


if __name__ == "__main__":
    main()
