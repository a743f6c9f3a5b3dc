"""The rollout engine's memory per rank by vLLM's own rule: it takes ``gpu_memory_utilization`` x the GPU's memory
for its weights, its profiled activations and CUDA graphs, and gives the rest to the KV cache."""

from __future__ import annotations

from dataclasses import dataclass

from lfpc.model.loading import DTYPES

GIB = 2 ** 30
# vLLM's profile run (its batched-token budget through the LM, the largest image through the ViT) plus CUDA graphs:
# stated for a 7B Qwen2.5-VL, not measured (~3-4 GiB of activations and ~1 GiB of graphs)
VLLM_ACTIVATIONS_AND_GRAPHS_GIB = 4.5


@dataclass(frozen=True)
class RolloutPlan:
    """Bytes per rank of the rollout engine and the KV cache it leaves, against the live episodes' demand."""

    backend: str
    budget: int              # what the engine takes of the GPU
    weights: int
    other: int               # activations and graphs (vLLM) or none (HF: its cache is the KV demand itself)
    kv_bytes_per_token: int
    live_sequences: int      # episodes generated at once per rank (prompts x group size)
    longest_sequence: int    # tokens: the longest context the engine must hold

    @property
    def kv_bytes(self) -> int:
        return self.budget - self.weights - self.other

    @property
    def kv_tokens(self) -> int:
        return max(self.kv_bytes, 0) // self.kv_bytes_per_token


def kv_bytes_per_token(model_config, dtype) -> int:
    """Keys and values of one token over every decoder layer (grouped-query heads), in ``dtype``."""
    t = model_config.text_config
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    return t.num_hidden_layers * 2 * t.num_key_value_heads * head_dim * dtype.itemsize


def plan_rollout(cfg, model_config, parameters: int, live_sequences: int, longest_sequence: int,
                 trainer_bytes: int) -> RolloutPlan:
    """The engine of ``cfg.rollout``: vLLM at ``gpu_memory_utilization`` of ``hardware.gpu_memory_gib`` (when null,
    the share the engine itself sizes beside the trainer's ``trainer_bytes``:
    :func:`lfpc.rollout.vllm_engine.memory_share`), or the HF replica (its weights in ``model.dtype`` and the KV of
    ``model.rollout_batch_size`` longest sequences)."""
    r = cfg.rollout
    if r.backend == "vllm":
        from lfpc.rollout.vllm_engine import memory_share

        dtype = DTYPES[r.dtype]
        total = int(cfg.hardware.gpu_memory_gib * GIB)
        share = (r.gpu_memory_utilization if r.gpu_memory_utilization is not None
                 else memory_share(total, trainer_bytes, r.memory_reserve_gib))
        return RolloutPlan("vllm", int(share * total),
                           parameters * dtype.itemsize, int(VLLM_ACTIVATIONS_AND_GRAPHS_GIB * GIB),
                           kv_bytes_per_token(model_config, dtype), live_sequences, longest_sequence)
    dtype = DTYPES[cfg.model.dtype]
    per_token = kv_bytes_per_token(model_config, dtype)
    weights = parameters * dtype.itemsize
    kv = min(cfg.model.rollout_batch_size, live_sequences) * longest_sequence * per_token
    return RolloutPlan("hf", weights + kv, weights, 0, per_token, live_sequences, longest_sequence)
