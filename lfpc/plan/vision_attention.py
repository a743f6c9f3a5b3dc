"""The ViT's windowed attention as one call in a plan. transformers' sdpa path for Qwen2.5-VL loops in Python over
the attention windows (about a thousand calls per 16k-token image and block), each one a slow fake-tensor op in a
plan; its varlen branch makes one call over all patches, which allocates the same output and gradients (the loop's
per-window outputs are all alive until they are concatenated). The tiny-model test checks the plan against the
loop run for real."""

from __future__ import annotations

import torch
from transformers import AttentionInterface

# "flash" in the name routes transformers' Qwen2.5-VL ViT through its one-call (cu_seqlens) branch
ONE_CALL = "lfpc_plan_flash_one_call"


def _one_call_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Attention over every patch at once, ``[1, heads, patches, dim]`` in, ``[1, patches, heads, dim]`` out."""
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=scaling)
    return output.transpose(1, 2), None


def one_call_vision_attention(model: torch.nn.Module) -> None:
    """Route every ViT attention of ``model`` (a Qwen2.5-VL, LoRA-wrapped or not) through one call per block."""
    AttentionInterface.register(ONE_CALL, _one_call_attention)
    for module in model.modules():
        if type(module).__name__ == "Qwen2_5_VLVisionAttention":
            module.config._attn_implementation = ONE_CALL
