"""Trainer-side log-prob forward over multi-turn, multi-image trajectories."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
from torch.utils.checkpoint import checkpoint

from lfpc.grpo.objective import token_entropy, token_logprobs
from lfpc.model.lora import base_model
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


HEAD_CHUNK = 2048  # policy positions per LM-head call: [2048, vocab] float32 logits are ~1.2 GiB at 152k words


def final_hidden_states(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The ``[B, T, H]`` output of the language model's final norm for ``inputs``, the LM head run on no position.

    The whole model runs through its own (under FSDP2: the root module's) forward, so sharded parameters are
    gathered as usual; the root keeps its parameters, the LM head's included, gathered after its forward.
    """
    captured: list[torch.Tensor] = []
    norm = base_model(model).model.language_model.norm
    handle = norm.register_forward_hook(lambda _module, _args, output: captured.append(output))
    try:
        model(**inputs, use_cache=False, logits_to_keep=inputs["input_ids"].new_zeros(0))
    finally:
        handle.remove()
    return captured[-1]


def lm_head(model) -> torch.nn.Linear:
    """The model's LM head, checked to be a plain linear layer (it is applied as ``F.linear`` of its weight)."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        raise TypeError(f"the policy's LM head must be a plain torch.nn.Linear (no adapter on it), got {type(head)}")
    return head


def _head_values(weight: torch.Tensor, bias: torch.Tensor | None, hidden: torch.Tensor, targets: torch.Tensor,
                 temperature: float, with_entropy: bool, suppressed: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Log-probs ``[C]`` of ``targets`` (and entropies ``[C]`` when asked) from the hidden states ``[C, H]``, the
    ``suppressed`` token ids' logits at -inf."""
    logits = torch.nn.functional.linear(hidden, weight, bias).unsqueeze(0)
    if suppressed is not None:
        logits = logits.index_fill(-1, suppressed, float("-inf"))
    values = (token_logprobs(logits, targets.unsqueeze(0), temperature)[0],)
    return values + (token_entropy(logits, temperature)[0],) if with_entropy else values


def saved_tensors_on_host() -> torch.autograd.graph.saved_tensors_hooks:
    """A context in which the tensors the forward saves for the backward are kept in host memory (pinned where
    there is a GPU) and copied back when the backward needs them."""
    return torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available())


def sequence_logprobs(model, contexts: Sequence[Context], pad_id: int, image_pad_id: int, temperature: float = 1.0,
                      with_entropy: bool = False, position_ids: torch.Tensor | None = None, offload: bool = False,
                      head_chunk: int = HEAD_CHUNK, suppress_token_ids: Sequence[int] = ()
                      ) -> dict[str, torch.Tensor]:
    """Log-probs ``[B, T-1]`` of tokens 1..T-1 of each context under ``model`` (entropy too when asked), computed
    at each row's own policy positions only and 0 elsewhere.

    The LM head runs per row, on at most ``head_chunk`` of its policy positions at a time; under autograd each
    chunk is checkpointed (its logits are recomputed in the backward), so the logits of one chunk are alive at
    a time: a Qwen2.5-VL sequence is mostly image tokens, and ``[B, T, V]`` logits would dominate update memory.
    A single row is run without padding, hence without an attention mask. ``offload`` keeps the tensors saved
    for the backward (with gradient checkpointing: each checkpointed layer's input) in host memory.
    M-RoPE positions come from ``mm_token_type_ids`` and ``image_grid_thw`` (the model derives them unless
    ``position_ids`` is given), so every image of a multi-turn sequence gets its 3-D positions.
    """
    device = next(model.parameters()).device
    inputs = batch_inputs(contexts, pad_id, image_pad_id, padding_side="right", device=device)
    if len(contexts) == 1:
        inputs.pop("attention_mask")  # all ones: no mask to build, and sdpa runs its causal kernel
    if position_ids is not None:
        inputs["position_ids"] = position_ids.to(device)
    mask = shifted_policy_tensors(contexts, device)["mask"]
    targets = inputs["input_ids"][:, 1:]
    saved = saved_tensors_on_host() if offload else nullcontext()
    suppressed = torch.tensor(list(suppress_token_ids), device=device) if suppress_token_ids else None
    with saved:
        hidden = final_hidden_states(model, inputs)  # position p predicts token p + 1
        head = lm_head(model)  # applied functionally: no module call after the model's (FSDP2, MemTracker)
        rows, columns, values = [], [], []
        for row, context in enumerate(contexts):
            policy = [p - 1 for p, is_policy in enumerate(context.policy_mask) if is_policy and p > 0]
            for positions in torch.tensor(policy, dtype=torch.long, device=device).split(head_chunk):
                args = (head.weight, head.bias, hidden[row, positions], targets[row, positions], temperature,
                        with_entropy, suppressed)
                values.append(checkpoint(_head_values, *args, use_reentrant=False) if torch.is_grad_enabled()
                              else _head_values(*args))
                rows.append(torch.full_like(positions, row))
                columns.append(positions)
        index = (torch.cat(rows), torch.cat(columns)) if values else None
        names = ("logprobs", "entropy") if with_entropy else ("logprobs",)
        if index is None:
            return {name: mask.new_zeros(mask.shape) for name in names}
        sources = [torch.cat([v[k] for v in values]) for k in range(len(names))]
        # in the head's dtype (the mask is in the default dtype, bf16 under bf16-true precision)
        return {name: source.new_zeros(mask.shape).index_put(index, source) for name, source in zip(names, sources)}
