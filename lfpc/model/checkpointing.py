"""Activation checkpointing of a Qwen2.5-VL policy for training."""

from __future__ import annotations

import torch
from torch.distributed._composable import checkpoint


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Checkpoint every decoder layer and vision block (transformers' gradient checkpointing), and the vision tower
    as a whole around them: the forward keeps only the tower's input (the patches), not each block's input, so
    none of the vision activations stay alive through the language model's forward and backward; the tower is run
    again (its blocks still checkpointed) when the backward reaches it. Call before LoRA and FSDP2 wrap the model.
    """
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpoint(model.model.visual)
