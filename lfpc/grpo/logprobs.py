"""Trainer-side log-prob forward over multi-turn, multi-image trajectories."""

from __future__ import annotations

from typing import Sequence

import torch

from lfpc.grpo.objective import token_entropy, token_logprobs
from lfpc.rollout.base import Context
from lfpc.rollout.inputs import batch_inputs


def shifted_policy_tensors(contexts: Sequence[Context], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-padded ``[B, T-1]`` tensors aligned with the predicted tokens 1..T-1: policy mask, rollout log-probs."""
    length = max(len(c.token_ids) for c in contexts)
    mask = torch.zeros(len(contexts), length)
    rollout = torch.zeros(len(contexts), length)
    for row, c in enumerate(contexts):
        mask[row, :len(c.policy_mask)] = torch.tensor(c.policy_mask, dtype=torch.float32)
        rollout[row, :len(c.logprobs)] = torch.tensor(c.logprobs, dtype=torch.float32)
    return {"mask": mask[:, 1:].to(device), "rollout_logprobs": rollout[:, 1:].to(device)}


def imitation_loss(model, contexts: Sequence[Context], pad_id: int, image_pad_id: int) -> torch.Tensor:
    """Mean negative log-likelihood of the policy tokens of ``contexts`` (supervised imitation of scripted turns)."""
    mask = shifted_policy_tensors(contexts)["mask"]
    logprobs = sequence_logprobs(model, contexts, pad_id, image_pad_id)["logprobs"]
    return -(logprobs * mask.to(logprobs.device)).sum() / mask.sum()


def sequence_logprobs(model, contexts: Sequence[Context], pad_id: int, image_pad_id: int, temperature: float = 1.0,
                      with_entropy: bool = False, position_ids: torch.Tensor | None = None
                      ) -> dict[str, torch.Tensor]:
    """Log-probs ``[B, T-1]`` of tokens 1..T-1 of each context under ``model`` (entropy too when asked), computed
    at the policy positions of the batch only and 0 elsewhere.

    The LM head runs only at the positions that predict a policy token in some row (``logits_to_keep`` as an index
    tensor): a Qwen2.5-VL sequence is mostly image tokens, and full ``[B, T, V]`` logits dominate update memory.
    M-RoPE positions come from ``mm_token_type_ids`` and ``image_grid_thw`` (the model derives them unless
    ``position_ids`` is given), so every image of a multi-turn sequence gets its 3-D positions.
    """
    device = next(model.parameters()).device
    inputs = batch_inputs(contexts, pad_id, image_pad_id, padding_side="right", device=device)
    if position_ids is not None:
        inputs["position_ids"] = position_ids.to(device)
    mask = shifted_policy_tensors(contexts, device)["mask"]
    keep = mask.any(dim=0).nonzero().squeeze(1)  # logits at position p predict token p + 1
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    targets = inputs["input_ids"][:, 1:][:, keep]

    def scatter(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(mask.shape).index_copy(1, keep, values) * mask

    out = {"logprobs": scatter(token_logprobs(logits, targets, temperature))}
    if with_entropy:
        out["entropy"] = scatter(token_entropy(logits, temperature))
    return out
