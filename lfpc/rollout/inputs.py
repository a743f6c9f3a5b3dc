"""Batch token-level contexts into Qwen-VL model inputs (one function for rollouts and training, every family)."""

from __future__ import annotations

from typing import Sequence

import torch

from lfpc.rollout.base import Context


def batch_inputs(contexts: Sequence[Context], pad_id: int, image_pad_id: int, padding_side: str = "right",
                 device: torch.device | str = "cpu", pixels: bool = True) -> dict[str, torch.Tensor]:
    """Pad contexts to one length and concatenate their images in order.

    Returns ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` (1 on image tokens, used by the model to
    compute M-RoPE positions) and, when any context has images, ``image_grid_thw`` and (with ``pixels``)
    ``pixel_values``.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    length = max(len(c.token_ids) for c in contexts)
    input_ids = torch.full((len(contexts), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(contexts), length), dtype=torch.long)
    for row, context in enumerate(contexts):
        n = len(context.token_ids)
        span = slice(length - n, length) if padding_side == "left" else slice(0, n)
        input_ids[row, span] = torch.tensor(context.token_ids, dtype=torch.long)
        attention_mask[row, span] = 1
    mm_token_type_ids = ((input_ids == image_pad_id) & attention_mask.bool()).int()
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": mm_token_type_ids}
    grids = [g for c in contexts for g in c.image_grid_thw]
    if grids:
        batch["image_grid_thw"] = torch.stack(grids)
    if grids and pixels:
        batch["pixel_values"] = torch.cat([p for c in contexts for p in c.pixel_values])
    return {k: v.to(device) for k, v in batch.items()}
