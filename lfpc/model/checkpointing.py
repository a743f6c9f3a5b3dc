"""Activation checkpointing of a Qwen-VL policy for training."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint
from transformers.utils import ModelOutput


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Checkpoint every decoder layer and vision block (transformers' gradient checkpointing), and encode the images
    one at a time, each image's pass through the vision tower checkpointed (:func:`encode_images_one_at_a_time`).
    Call before LoRA and FSDP2 wrap the model."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    encode_images_one_at_a_time(model.model.visual)


def encode_images_one_at_a_time(tower: torch.nn.Module) -> None:
    """Make ``tower`` (a Qwen-VL vision tower: ``forward(patches, grid_thw)``) run its images one per call and
    concatenate the outputs, which are the same as one call over all of them: every attention of the tower is
    within one image (its windows and full-attention blocks are cut at image boundaries), as is the patch merger.

    Under autograd each image's call is checkpointed: the forward keeps only the patches, not any block's input,
    so no vision activation stays alive through the language model's forward and backward; when the backward
    reaches an image, its pass is run again (blocks still checkpointed) and its backward runs, one image at a
    time, so the tower's backward peak is that of the largest image, not of all a trajectory's images together.
    """
    whole = tower.forward

    def forward(hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs) -> ModelOutput:
        def encode(patches: torch.Tensor, grid: torch.Tensor) -> ModelOutput:
            return whole(patches, grid_thw=grid, **kwargs)

        sizes = grid_thw.prod(-1).tolist()
        outputs = [checkpoint(encode, patches, grid[None], use_reentrant=False) if torch.is_grad_enabled()
                   else encode(patches, grid[None]) for patches, grid in zip(hidden_states.split(sizes), grid_thw)]
        return _concatenated(outputs)

    tower.forward = forward


def _concatenated(outputs: list[ModelOutput]) -> ModelOutput:
    """One output of the per-image outputs ``outputs``: every tensor field (and each tensor of a list field, as
    Qwen3-VL's per-layer DeepStack features) concatenated over the images, in order."""
    fields = {}
    for key, first in outputs[0].items():
        if isinstance(first, torch.Tensor):
            fields[key] = torch.cat([o[key] for o in outputs])
        else:
            fields[key] = [torch.cat(parts) for parts in zip(*(o[key] for o in outputs))]
    return type(outputs[0])(**fields)
