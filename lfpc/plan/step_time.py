"""A GRPO step's time per rank from FLOPs at a stated MFU (forward and backward of the policy tokens, rollout
prefill) and from memory traffic for decoding, with where the time goes. Planned, not measured."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from lfpc.plan.rollout import RolloutPlan
from lfpc.plan.trajectories import Workload


@dataclass(frozen=True)
class ModelFlops:
    """Forward FLOPs of the model's parts, from its parameter counts (a weightless meta-device build)."""

    lm_layers: int          # parameters of the decoder layers
    lm_head: int
    vision: int
    layers: int
    hidden: int
    vision_hidden: int
    window_patches: int     # patches per ViT attention window
    full_attention_blocks: int
    vision_blocks: int
    patches_per_token: int

    @classmethod
    def of(cls, model_config) -> "ModelFlops":
        with torch.device("meta"):
            model = Qwen2_5_VLForConditionalGeneration._from_config(model_config)
        inner, v, t = model.model, model_config.vision_config, model_config.text_config
        window = (v.window_size // v.patch_size) ** 2
        return cls(sum(p.numel() for p in inner.language_model.layers.parameters()), model.lm_head.weight.numel(),
                   sum(p.numel() for p in inner.visual.parameters()), t.num_hidden_layers, t.hidden_size,
                   v.hidden_size, window, len(v.fullatt_block_indexes), v.depth, v.spatial_merge_size ** 2)

    def forward(self, context: int, new: int, visual: int, logits: int) -> float:
        """Forward FLOPs over ``new`` tokens appended to a context growing to ``context`` tokens (causal
        attention), ``visual`` of them through the ViT, the LM head at ``logits`` positions."""
        before = context - new
        attention = 2 * self.layers * self.hidden * (context ** 2 - before ** 2)  # QK^T and AV, causal
        patches = visual * self.patches_per_token
        per_image = patches  # the worst case for the full-attention blocks: one image holds them all
        vit_attention = 4 * self.vision_hidden * patches * (
            self.full_attention_blocks * per_image + (self.vision_blocks - self.full_attention_blocks)
            * self.window_patches)
        return (2 * self.lm_layers * new + attention + 2 * self.vision * patches + vit_attention
                + 2 * self.lm_head * logits)


@dataclass(frozen=True)
class StepTime:
    """Seconds per rank of each part of one GRPO step, and the assumptions behind them."""

    seconds: dict[str, float]
    mfu: float
    decode_bandwidth_share: float
    trajectories: int
    workload: Workload

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def plan_step_time(cfg, model_config, workload: Workload, rollout: RolloutPlan, trajectories: int,
                   old_logprobs: bool) -> StepTime:
    """Step time of ``trajectories`` per rank, each of ``workload``: rollout prefill (prefix-cached: each token
    prefilled once, each image encoded once) and decode (each step reads the weights and the live KV, with as many
    sequences at once as the KV cache holds), the old-log-prob forward (when ``old_logprobs``) and the update's
    forward and backward (plus the recomputed forward under gradient checkpointing)."""
    flops = ModelFlops.of(model_config)
    compute = cfg.hardware.peak_tflops * 1e12 * cfg.plan.mfu
    w = workload
    policy = w.response_tokens
    prefill = flops.forward(w.context_tokens - policy, w.context_tokens - policy, w.visual_tokens, 0)
    decode_flops = flops.forward(w.context_tokens, policy, 0, policy)
    full = flops.forward(w.context_tokens, w.context_tokens, w.visual_tokens, policy)
    concurrent = max(1, min(rollout.live_sequences, rollout.kv_tokens // max(w.context_tokens, 1)))
    steps = trajectories * policy / concurrent
    step_bytes = rollout.weights + concurrent * w.context_tokens * rollout.kv_bytes_per_token
    bandwidth = cfg.hardware.memory_bandwidth_gbps * 1e9 * cfg.plan.decode_bandwidth_share
    passes = 3 + int(cfg.model.gradient_checkpointing)  # forward + backward (2x), + the recomputed forward
    seconds = {
        "rollout prefill": trajectories * prefill / compute,
        "rollout decode": max(steps * step_bytes / bandwidth, trajectories * decode_flops / compute),
        "old log-probs": trajectories * full / compute if old_logprobs else 0.0,
        "update": cfg.grpo.ppo_epochs * passes * trajectories * full / compute,
    }
    return StepTime(seconds, cfg.plan.mfu, cfg.plan.decode_bandwidth_share, trajectories, workload)
