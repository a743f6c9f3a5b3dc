"""GRPO policy objective as pure tensor functions: token log-probs, KL, loss aggregation, clipped surrogate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

AGGREGATIONS = ("token_mean", "seq_mean", "seq_sum_norm")


def _float_rows(logits: Tensor, temperature: float) -> Iterator[Tensor]:
    """Lazily give ``logits[b] / temperature`` as fresh float32 ``[T, V]`` tensors, one batch row at a time.

    Working row by row keeps the transient memory to one float32 ``[T, V]`` row (plus what autograd saves),
    instead of a float32 copy of the whole ``[B, T, V]`` tensor and another for the softmax's exponentials.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return (row.to(torch.float32, copy=True).div_(temperature) for row in logits)


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probability (float32, ``[B, T]``) of ``targets`` under ``softmax(logits / temperature)``.

    ``logits[:, t]`` must already be the distribution that produced ``targets[:, t]`` (shift before calling).
    """
    rows = _float_rows(logits, temperature)
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"targets must be {tuple(logits.shape[:2])} to match logits, got {tuple(targets.shape)}")
    logprobs = [
        row.gather(-1, target.long().unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1)
        for row, target in zip(rows, targets)
    ]
    return torch.stack(logprobs) if logprobs else logits.new_zeros(targets.shape, dtype=torch.float32)


def token_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy (float32, ``[B, T]``) of ``softmax(logits / temperature)`` at every position."""
    rows = [
        torch.logsumexp(row, dim=-1) - (torch.softmax(row, dim=-1) * row).sum(-1)
        for row in _float_rows(logits, temperature)
    ]
    return torch.stack(rows) if rows else logits.new_zeros(logits.shape[:2], dtype=torch.float32)


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(policy || ref), per token: ``exp(ref - lp) - (ref - lp) - 1`` (>= 0)."""
    diff = ref_logprobs - logprobs
    return torch.exp(diff) - diff - 1


def aggregate(values: Tensor, mask: Tensor, mode: str, norm_length: int | None = None) -> Tensor:
    """Reduce per-token ``values`` ``[B, T]`` over the tokens where ``mask`` is set, to a scalar.

    * ``token_mean`` (DAPO): sum over all masked tokens / number of masked tokens in the batch.
    * ``seq_mean`` (GRPO): mean over sequences of each sequence's token mean; sequences with an empty mask
      are left out of the mean.
    * ``seq_sum_norm`` (Dr.GRPO): per sequence, token sum / ``norm_length``; then mean over all sequences.

    Masked-out positions never reach the result (not even as NaN/inf), and an empty mask gives 0, not NaN.
    """
    if values.dim() != 2 or mask.shape != values.shape:
        raise ValueError(
            f"values and mask must be [B, T] of the same shape, got {tuple(values.shape)} and {tuple(mask.shape)}"
        )
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {AGGREGATIONS}")
    mask = mask.bool()
    masked = torch.where(mask, values, torch.zeros_like(values))
    if mode == "token_mean":
        return masked.sum() / mask.sum().clamp(min=1)
    if mode == "seq_mean":
        counts = mask.sum(-1)
        per_sequence = masked.sum(-1) / counts.clamp(min=1)
        return per_sequence.sum() / (counts > 0).sum().clamp(min=1)
    if norm_length is None or norm_length <= 0:
        raise ValueError(f"aggregation 'seq_sum_norm' needs a positive norm_length, got {norm_length}")
    return masked.sum() / (norm_length * max(values.shape[0], 1))


@dataclass
class PolicyLossConfig:
    """Hyper-parameters of :func:`policy_loss` (defaults: DAPO-style asymmetric clip, token-mean, no KL/entropy)."""

    clip_low: float = 0.2
    clip_high: float = 0.28
    aggregation: str = "token_mean"
    norm_length: int | None = None
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    dual_clip: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.clip_low < 1:
            raise ValueError(f"clip_low must be in [0, 1) so that 1 - clip_low > 0, got {self.clip_low}")
        if self.clip_high < 0:
            raise ValueError(f"clip_high must be >= 0, got {self.clip_high}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; expected one of {AGGREGATIONS}")
        if self.norm_length is not None and self.norm_length <= 0:
            raise ValueError(f"norm_length must be a positive token count, got {self.norm_length}")
        if self.aggregation == "seq_sum_norm" and self.norm_length is None:
            raise ValueError("aggregation 'seq_sum_norm' (Dr.GRPO) needs norm_length, e.g. the max response length")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.entropy_coef < 0:
            raise ValueError(f"entropy_coef must be >= 0, got {self.entropy_coef}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 (3 is typical) or None, got {self.dual_clip}")


def truncated_is_weights(old_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor, cap: float = 2.0) -> Tensor:
    """Truncated importance weights ``min(exp(old - rollout), cap)`` for the rollout-engine/trainer mismatch.

    Detached, ``[B, T]``; 0 where ``mask`` is not set. Pass the result as ``is_weights`` to :func:`policy_loss`.
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    _check_token_shapes(mask, old_logprobs=old_logprobs, rollout_logprobs=rollout_logprobs)
    with torch.no_grad():
        mask = mask.bool()
        log_weights = torch.where(mask, old_logprobs - rollout_logprobs, torch.zeros_like(old_logprobs))
        return torch.where(mask, log_weights.exp().clamp(max=cap), torch.zeros_like(log_weights))


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: PolicyLossConfig,
    ref_logprobs: Tensor | None = None,
    entropy: Tensor | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with per-sequence ``advantages`` ``[B]`` broadcast over the masked tokens ``[B, T]``.

    Per token: ``max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))`` with ``r = exp(logprobs - old_logprobs)``;
    with ``cfg.dual_clip = c`` and ``A < 0`` the loss is further capped at ``-A c``. ``is_weights`` multiplies
    the per-token surrogate. Loss = pg_loss + kl_coef * k3(logprobs, ref_logprobs) - entropy_coef * entropy,
    each term aggregated with ``cfg.aggregation``. ``mask`` is 1 on policy-generated tokens only (0 on prompt,
    padding and tool-response tokens); values at masked-out positions are ignored, NaN/inf included.

    Returns the scalar loss and detached metrics: ``pg_loss``, ``clip_frac``, ``approx_kl`` (k3 estimate of
    KL(old || new) over masked tokens), ``ratio_mean``, plus ``dual_clip_frac``, ``kl``, ``entropy`` when used.
    """
    _check_token_shapes(mask, logprobs=logprobs, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs,
                        entropy=entropy, is_weights=is_weights)
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B] = {tuple(logprobs.shape[:1])}, got {tuple(advantages.shape)}")
    if cfg.kl_coef > 0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")
    if cfg.entropy_coef > 0 and entropy is None:
        raise ValueError("entropy_coef > 0 needs entropy")

    mask = mask.bool()

    def keep(x: Tensor) -> Tensor:  # zero masked-out positions first, so no NaN/inf enters exp() or backward
        return torch.where(mask, x, torch.zeros_like(x))

    def reduce(x: Tensor) -> Tensor:
        return aggregate(x, mask, cfg.aggregation, cfg.norm_length)

    def token_mean(x: Tensor) -> Tensor:
        return aggregate(x.detach(), mask, "token_mean")

    logprobs, old_logprobs = keep(logprobs), keep(old_logprobs)
    adv = advantages.to(logprobs.dtype).unsqueeze(-1)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high)
    clip_active = clipped > unclipped  # the clipped branch wins: no gradient through this token
    per_token = torch.where(clip_active, clipped, unclipped)
    metrics: dict[str, Tensor] = {}
    if cfg.dual_clip is not None:
        dual_active = (adv < 0) & (per_token > -adv * cfg.dual_clip)
        per_token = torch.where(dual_active, (-adv * cfg.dual_clip).expand_as(per_token), per_token)
        metrics["dual_clip_frac"] = token_mean(dual_active.to(logprobs.dtype))
    if is_weights is not None:
        per_token = per_token * keep(is_weights.detach())

    pg_loss = reduce(per_token)
    loss = pg_loss
    metrics.update(
        pg_loss=pg_loss.detach(),
        clip_frac=token_mean(clip_active.to(logprobs.dtype)),
        approx_kl=token_mean(kl_k3(old_logprobs, logprobs)),
        ratio_mean=token_mean(ratio),
    )
    if ref_logprobs is not None:
        kl = reduce(kl_k3(logprobs, keep(ref_logprobs)))
        loss = loss + cfg.kl_coef * kl
        metrics["kl"] = kl.detach()
    if entropy is not None:
        mean_entropy = reduce(entropy)
        loss = loss - cfg.entropy_coef * mean_entropy
        metrics["entropy"] = mean_entropy.detach()
    return loss, metrics


def _check_token_shapes(mask: Tensor, **tensors: Tensor | None) -> None:
    """Raise ``ValueError`` unless ``mask`` is 2-D and every given tensor has its shape."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != mask.shape:
            raise ValueError(f"{name} must have the mask's shape {tuple(mask.shape)}, got {tuple(tensor.shape)}")
