"""Build the rollout backend a config names (``rollout=hf`` or ``rollout=vllm``), for training and evaluation alike."""

from __future__ import annotations

import gc
from typing import Any, Mapping

import torch

from lfpc.rollout.base import RolloutEngine
from lfpc.rollout.codec import ChatCodec

BACKENDS = ("hf", "vllm")


def build_engine(cfg: Mapping[str, Any], codec: ChatCodec, model_path: str, device: torch.device | str, *,
                 dtype: str = "float32", attn_implementation: str = "sdpa", batch_size: int = 16,
                 seed: int = 0, trainer_bytes: int = 0) -> RolloutEngine:
    """The rollout engine of ``cfg`` (the ``rollout`` config group) serving the checkpoint at ``model_path``.

    ``hf``: a transformers replica on ``device`` (``dtype``, ``attn_implementation``, ``batch_size`` apply; every
    other key of ``cfg``, e.g. ``kept_cache_gib``, is passed to :class:`~lfpc.rollout.hf.HFRolloutEngine`).
    ``vllm``: a colocated vLLM engine (``lfpc.rollout.vllm_engine``); every other key of ``cfg`` is passed to it,
    and images are processed with the codec's min/max pixels so both sides see the same grids; ``trainer_bytes``
    (what the trainer keeps on the GPU during rollouts) sizes its memory share when ``gpu_memory_utilization`` is
    null.
    """
    options = dict(cfg)
    backend = options.pop("backend", None)
    if backend == "hf":
        from lfpc.model.loading import load_model
        from lfpc.rollout.hf import HFRolloutEngine
        model = load_model(model_path, dtype=dtype, attn_implementation=attn_implementation).to(device)
        return HFRolloutEngine(model, codec.pad_id, codec.image_pad_id, batch_size=batch_size, **options)
    if backend == "vllm":
        from lfpc.rollout.vllm_engine import VLLMRolloutEngine
        size = codec.image_processor.size
        options.setdefault("dtype", dtype)
        return VLLMRolloutEngine(model_path, codec.image_pad_id, min_pixels=size["shortest_edge"],
                                 max_pixels=size["longest_edge"], device=device, seed=seed,
                                 trainer_bytes=trainer_bytes, **options)
    raise ValueError(f"unknown rollout backend {backend!r}; set rollout.backend to one of {BACKENDS}")


def release_engine(engine: RolloutEngine) -> None:
    """Give an engine that is done its memory back: ``close()`` when it has one (vLLM: weights and KV cache
    discarded, engine shut down), then the collector and CUDA's cache (the transformers replica is freed with its
    last reference)."""
    close = getattr(engine, "close", None)
    if close is not None:
        close()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def engine_from_run_config(cfg, codec: ChatCodec, model_path: str, device: str = "auto") -> RolloutEngine:
    """The engine a composed run config names (``rollout`` and ``model`` groups): for evaluation and selection."""
    return build_engine(cfg.rollout, codec, model_path, resolve_device(device), dtype=cfg.model.dtype,
                        attn_implementation=cfg.model.attn_implementation, batch_size=cfg.model.rollout_batch_size,
                        seed=cfg.seed)
