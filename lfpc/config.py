"""Turn a composed Hydra config into the objects a run needs (one place for train.py, eval.py and sweeps)."""

from __future__ import annotations

import math

from omegaconf import DictConfig, ListConfig, OmegaConf

from lfpc.data.records import Sample, load_jsonl
from lfpc.grpo.objective import PolicyLossConfig
from lfpc.rewards import RewardConfig
from lfpc.rollout.episodes import EpisodeConfig
from lfpc.training.display import DisplaySizer
from lfpc.training.module import GRPOConfig, PolicyConfig


def model_path(cfg: DictConfig) -> str:
    """The local model folder of this run: ``init_from`` if set, else ``model.path`` (built first for the tiny model)."""
    if cfg.get("init_from"):
        return str(cfg.init_from)
    if cfg.model.get("build_tiny"):
        from lfpc.model.tiny import build_tiny_model
        from lfpc.model.warmup import warm_up
        base = build_tiny_model(f"{cfg.model.path}-random", seed=cfg.model.get("seed", 0))
        w = cfg.model.get("warmup")
        if not w or not w.steps:
            return str(base)
        return str(warm_up(base, cfg.model.path, load_samples(w.data), steps=w.steps,
                           global_max_tokens=w.global_max_tokens, crop_max_tokens=w.crop_max_tokens))
    return str(cfg.model.path)


def load_samples(data: DictConfig) -> list[Sample]:
    """The training samples named by the ``data`` config group (generating the synthetic set if needed)."""
    if data.kind == "synthetic":
        from lfpc.data.synthetic import generate_synthetic
        size_range = data.get("size_range")
        path = generate_synthetic(data.dir, num_samples=data.num_samples, image_size=tuple(data.image_size),
                                  seed=data.seed, size_range=tuple(size_range) if size_range else None,
                                  task=data.get("task", "scenes"))
        return load_jsonl(path)
    if data.kind == "jsonl":
        return load_jsonl(data.path)
    if data.kind == "mix":
        from lfpc.data.mix import mix_by_ratio
        sources = [(name, load_samples(source), source.ratio) for name, source in data.sources.items()]
        return mix_by_ratio(sources, data.get("num_samples"), seed=data.get("seed", 0))
    raise ValueError(f"unknown data.kind {data.kind!r} (expected 'synthetic', 'jsonl' or 'mix')")


def policy_config(cfg: DictConfig, path: str) -> PolicyConfig:
    m = cfg.model
    return PolicyConfig(path=path, dtype=m.dtype, attn_implementation=m.attn_implementation,
                        gradient_checkpointing=m.gradient_checkpointing, fsdp_param_dtype=m.fsdp_param_dtype,
                        global_max_tokens=cfg.vision.global_max_tokens, rollout_batch_size=m.rollout_batch_size)


def per_rank(cfg: DictConfig, key: str) -> int:
    """``grpo.<key>``, a global batch size (over every rank, as the paper states them), divided over the ranks."""
    total, world = cfg.grpo[key], world_size(cfg)
    if total % world:
        raise ValueError(f"grpo.{key}={total} is global (summed over ranks) and must divide by the {world} ranks")
    return total // world


def grpo_config(cfg: DictConfig) -> GRPOConfig:
    """The per-rank :class:`GRPOConfig` of ``cfg`` (``grpo.mini_batch_size`` is global in the config)."""
    g = OmegaConf.to_container(cfg.grpo, resolve=True)
    g.pop("prompts_per_step")
    g["mini_batch_size"] = per_rank(cfg, "mini_batch_size")
    g["loss"] = PolicyLossConfig(**g["loss"])
    g["lr"] = g["lr"] * cfg.get("lr_scale", 1.0)
    return GRPOConfig(**g)


def episode_config(cfg: DictConfig) -> EpisodeConfig:
    return EpisodeConfig(**OmegaConf.to_container(cfg.episode, resolve=True))


def reward_config(cfg: DictConfig) -> RewardConfig:
    return RewardConfig(**OmegaConf.to_container(cfg.reward, resolve=True))


def display_sizer(cfg: DictConfig, path: str, samples: list[Sample]) -> DisplaySizer:
    """The resolution strategy of ``cfg``; ``answer_divergence`` loads the offline selection of ``samples`` with
    the model at ``path`` (a single-process run computes what the manifest lacks, a multi-process one fails)."""
    r = cfg.resolution
    selected = None
    if r.strategy == "answer_divergence":
        from lfpc.resolution.select import run_selection
        selected = run_selection(cfg, path, samples, compute_missing=world_size(cfg) == 1).sizes
    return DisplaySizer(r.strategy, cfg.vision.global_max_tokens, r.scale, r.min_tokens, seed=cfg.seed,
                        selected=selected)


def world_size(cfg: DictConfig) -> int:
    """Processes of the configured launch: ``trainer.devices`` (a count or a list of ids) x ``trainer.num_nodes``."""
    devices = cfg.trainer.devices
    per_node = len(devices) if isinstance(devices, ListConfig) else int(devices)
    return per_node * cfg.trainer.num_nodes


def trainable_samples(samples: list[Sample], sizer: DisplaySizer, cfg: DictConfig) -> list[Sample]:
    """The samples the resolution selection kept (``never_diverged: drop`` removes some)."""
    if sizer.strategy != "answer_divergence":
        return samples
    kept = [s for s in samples if s.id in sizer.selected]
    if not kept:
        raise ValueError(f"resolution selection dropped every sample (never_diverged="
                         f"{cfg.resolution.never_diverged}); use never_diverged=hardest or original")
    return kept


def updates_per_step(cfg: DictConfig) -> int:
    """Optimizer steps in one GRPO step (Lightning counts these as its global steps); the same on every rank."""
    trajectories = cfg.grpo.prompts_per_step * cfg.grpo.group_size
    return cfg.grpo.ppo_epochs * math.ceil(trajectories / cfg.grpo.mini_batch_size)

