"""The PPO-style policy update of one GRPO step: epochs over shuffled mini-batches, accumulated micro-batches."""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from lfpc.distributed import rank_share
from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.grpo.micro_batches import micro_batches
from lfpc.grpo.objective import PolicyLossConfig, policy_loss, truncated_is_weights
from lfpc.rollout.base import Context


def optimizer_steps(num_trajectories: int, mini_batch_size: int, ppo_epochs: int) -> int:
    """Optimizer steps in the update of one GRPO step: ``ppo_epochs`` passes over ceil(trajectories / mini-batch)."""
    return ppo_epochs * -(-num_trajectories // mini_batch_size)


class PolicyUpdate:
    """Runs the update of one GRPO step on ``policy`` (any device layout; ``backward`` may be Lightning's).

    ``reference`` is the frozen policy the KL term is measured against; it is needed when ``loss.kl_coef > 0``.
    ``micro_batch_tokens`` turns on token-budget micro-batching (:func:`lfpc.grpo.micro_batches.micro_batches`);
    ``offload_min_tokens`` keeps the tensors the backward needs (with gradient checkpointing: each checkpointed
    layer's input) in host memory for the micro-batches of at least that many (padded) tokens;
    ``defer_grad_sync`` (FSDP2) reduces gradients over the ranks once per optimizer step, after the last
    micro-batch, at the cost of an unsharded gradient accumulated on every rank.
    ``suppress_token_ids``: log-probs renormalised without these tokens (see :func:`sequence_logprobs`).
    """

    def __init__(self, policy: torch.nn.Module, optimizer, loss: PolicyLossConfig, pad_id: int, image_pad_id: int,
                 mini_batch_size: int, micro_batch_size: int, ppo_epochs: int = 1, max_grad_norm: float = 1.0,
                 temperature: float = 1.0, tis_cap: float | None = None, reference: torch.nn.Module | None = None,
                 backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                 micro_batch_tokens: int | None = None, offload_min_tokens: int | None = None,
                 defer_grad_sync: bool = True, suppress_token_ids: Sequence[int] = ()) -> None:
        if offload_min_tokens is not None and offload_min_tokens < 1:
            raise ValueError(f"offload_min_tokens must be a positive token count or None, got {offload_min_tokens}")
        if loss.kl_coef > 0 and reference is None:
            raise ValueError("kl_coef > 0 needs the reference policy to measure the KL against")
        self.policy, self.optimizer, self.loss, self.reference = policy, optimizer, loss, reference
        self.pad_id, self.image_pad_id = pad_id, image_pad_id
        self.mini, self.micro, self.epochs = mini_batch_size, micro_batch_size, ppo_epochs
        self.max_grad_norm, self.temperature, self.tis_cap = max_grad_norm, temperature, tis_cap
        self.backward = backward
        self.micro_tokens, self.offload_min, self.defer_sync = micro_batch_tokens, offload_min_tokens, defer_grad_sync
        self.suppressed = tuple(suppress_token_ids)

    def micro_batches_of(self, contexts: Sequence[Context], indices: Sequence[int]) -> list[list[int]]:
        """``indices`` (into ``contexts``) grouped into micro-batches by this update's row and token limits."""
        groups = micro_batches([len(contexts[i].token_ids) for i in indices], self.micro, self.micro_tokens)
        return [[indices[k] for k in group] for group in groups]

    def __call__(self, contexts: Sequence[Context], advantages: torch.Tensor, seed: int = 0) -> dict[str, float]:
        """Update on ``contexts`` with per-sequence ``advantages``; returns mean loss statistics."""
        old = self.logprobs(contexts) if optimizer_steps(len(contexts), self.mini, self.epochs) > 1 else None
        rng = random.Random(seed)
        totals: dict[str, list[float]] = {}
        for _ in range(self.epochs):
            order = list(range(len(contexts)))
            rng.shuffle(order)
            for start in range(0, len(order), self.mini):
                stats = self._step(contexts, order[start:start + self.mini], advantages, old)
                for key, value in stats.items():
                    totals.setdefault(key, []).append(value)
        return {key: sum(values) / len(values) for key, values in totals.items()}

    def _step(self, contexts, mini: list[int], advantages: torch.Tensor, old) -> dict[str, float]:
        device = next(self.policy.parameters()).device
        micros = self.micro_batches_of(contexts, mini)
        tokens = [sum(contexts[j].num_policy_tokens for j in micro) for micro in micros]
        # token_mean is the mean over every rank's tokens (DAPO), not the mean of per-rank means
        ranks = rank_share(sum(tokens), device) if self.loss.aggregation == "token_mean" else 1.0
        sums: dict[str, float] = {}
        for k, (micro, count) in enumerate(zip(micros, tokens)):
            self._set_grad_sync(k == len(micros) - 1)
            batch = [contexts[j] for j in micro]
            aligned = shifted_policy_tensors(batch, device)
            current = sequence_logprobs(self.policy, batch, self.pad_id, self.image_pad_id, self.temperature,
                                        with_entropy=self.loss.entropy_coef > 0, offload=self.offloads(batch),
                                        suppress_token_ids=self.suppressed)
            width = current["logprobs"].shape[1]
            old_lp = current["logprobs"].detach() if old is None else torch.stack([old[j][:width] for j in micro])
            is_weights = (truncated_is_weights(old_lp, aligned["rollout_logprobs"], aligned["mask"], self.tis_cap)
                          if self.tis_cap else None)
            ref_lp = self._reference_logprobs(batch) if self.loss.kl_coef > 0 else None
            loss, metrics = policy_loss(current["logprobs"], old_lp, advantages[micro].to(device), aligned["mask"],
                                        self.loss, ref_logprobs=ref_lp, entropy=current.get("entropy"),
                                        is_weights=is_weights)
            # weight micro-batches so the accumulated gradient equals the mini-batch aggregate
            share = count / max(sum(tokens), 1) if self.loss.aggregation == "token_mean" else len(micro) / len(mini)
            self.backward(loss * share * ranks)
            for key, value in {"loss": loss, **metrics}.items():
                sums[f"train/{key}"] = sums.get(f"train/{key}", 0.0) + float(value.detach()) * share
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # no gradient memory held between steps (rollouts, sync)
        sums["train/grad_norm"] = float(grad_norm)
        return sums

    def offloads(self, batch: Sequence[Context]) -> bool:
        """Whether the micro-batch ``batch`` is large enough (rows x longest row) to offload its activations."""
        padded = len(batch) * max(len(c.token_ids) for c in batch)
        return self.offload_min is not None and padded >= self.offload_min

    def _set_grad_sync(self, last: bool) -> None:
        """Under FSDP2 with ``defer_grad_sync``: reduce gradients over the ranks only in the ``last`` micro-batch's
        backward (no-op without FSDP2)."""
        if self.defer_sync and hasattr(self.policy, "set_requires_gradient_sync"):
            self.policy.set_requires_gradient_sync(last)

    @torch.no_grad()
    def _reference_logprobs(self, batch: Sequence[Context]) -> torch.Tensor:
        return sequence_logprobs(self.reference, batch, self.pad_id, self.image_pad_id, self.temperature)["logprobs"]

    @torch.no_grad()
    def logprobs(self, contexts: Sequence[Context]) -> list[torch.Tensor]:
        """Per-context log-prob rows of the current policy (the PPO "old" policy before any update), computed in the
        update's micro-batches, all padded to the longest context so any later micro-batch can stack its rows."""
        width = max(len(c.token_ids) for c in contexts) - 1
        rows: list[torch.Tensor | None] = [None] * len(contexts)
        for micro in self.micro_batches_of(contexts, range(len(contexts))):
            batch = [contexts[i] for i in micro]
            lp = sequence_logprobs(self.policy, batch, self.pad_id, self.image_pad_id, self.temperature,
                                   suppress_token_ids=self.suppressed)["logprobs"]
            for row, i in enumerate(micro):
                rows[i] = torch.nn.functional.pad(lp[row], (0, width - lp.shape[1]))
        return rows
