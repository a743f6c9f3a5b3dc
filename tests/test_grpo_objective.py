"""GRPO advantages and policy objective, checked against hand-computed numbers."""

import math

import pytest
import torch

from lfpc.grpo.advantages import group_advantages
from lfpc.grpo.objective import (
    PolicyLossConfig,
    aggregate,
    kl_k3,
    policy_loss,
    token_entropy,
    token_logprobs,
    truncated_is_weights,
)

# ---------------------------------------------------------------- advantages

# Interleaved groups: 10 -> rewards 1, 2, 3; 4 -> rewards 0, 1; 7 -> constant 0.1; 3 -> singleton 5.
GROUP_IDS = torch.tensor([10, 4, 7, 10, 4, 7, 3, 10, 7])
REWARDS = torch.tensor([1.0, 0.0, 0.1, 2.0, 1.0, 0.1, 5.0, 3.0, 0.1])


def test_group_advantages_scaled_by_unbiased_std():
    # group 10: mean 2, unbiased var ((-1)^2 + 0 + 1^2) / 2 = 1 -> std 1 -> advantages -1, 0, 1
    # group 4: mean 0.5, unbiased var (0.25 + 0.25) / 1 = 0.5 -> std 0.70710678 -> -/+ 0.5 / 0.70710678 = -/+ 0.70710678
    # group 7 (constant) and group 3 (singleton): 0
    s = 0.5 / math.sqrt(0.5)
    expected = torch.tensor([-1.0, -s, 0.0, 0.0, s, 0.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(group_advantages(REWARDS, GROUP_IDS, eps=0.0), expected)


def test_group_advantages_default_eps_and_exact_zeros():
    adv = group_advantages(REWARDS, GROUP_IDS)
    # group 10 with eps 1e-6: 1 / (1 + 1e-6) = 0.999999
    assert adv[7].item() == pytest.approx(1 / (1 + 1e-6), rel=1e-7)
    # 0.1 + 0.1 + 0.1 != 0.3 in floating point, yet the constant group and the singleton must be exactly 0
    assert torch.equal(adv[[2, 5, 6, 8]], torch.zeros(4))


def test_group_advantages_unscaled_dr_grpo():
    # r - mean: group 10 -> -1, 0, 1; group 4 -> -0.5, 0.5; constant and singleton -> 0
    expected = torch.tensor([-1.0, -0.5, 0.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(group_advantages(REWARDS, GROUP_IDS, scale=False), expected)


def test_group_advantages_rejects_bad_inputs():
    with pytest.raises(TypeError, match="integer"):
        group_advantages(REWARDS, GROUP_IDS.float())
    with pytest.raises(ValueError, match="same length"):
        group_advantages(REWARDS, GROUP_IDS[:3])


# ---------------------------------------------------------------- log-probs, entropy, k3


def test_token_logprobs_hand_values_and_temperature():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]])
    targets = torch.tensor([[2, 0]])
    # target 2: 3 - log(e^1 + e^2 + e^3) = -log(1 + e^-1 + e^-2) = -log(1.50321472) = -0.40760596
    # target 0: 1 - log(e^1 + e^2 + e^3) = -0.40760596 - 2 = -2.40760596
    torch.testing.assert_close(token_logprobs(logits, targets), torch.tensor([[-0.40760596, -2.40760596]]))
    # temperature 2 -> logits [0.5, 1, 1.5]; target 2: -log(1 + e^-0.5 + e^-1) = -log(1.97441010) = -0.68026972
    out = token_logprobs(logits, targets, temperature=2.0)
    assert out[0, 0].item() == pytest.approx(-0.68026972, abs=1e-6)
    assert torch.equal(logits, torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]]))  # input left untouched


def test_token_logprobs_matches_manual_log_softmax_in_float32():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen) * 4
    targets = torch.randint(0, 11, (3, 5), generator=gen)
    manual = logits - logits.exp().sum(-1, keepdim=True).log()  # log-softmax written out
    expected = manual.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, targets), expected)
    half = token_logprobs(logits.bfloat16(), targets)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected, atol=0.15, rtol=0)  # bf16 rounding of logits of size ~10


def test_token_logprobs_gradient_is_onehot_minus_softmax():
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    token_logprobs(logits, torch.tensor([[1]])).sum().backward()
    # d log p_1 / d logits = onehot(1) - softmax = [0, 1, 0, 0] - 0.25
    torch.testing.assert_close(logits.grad, torch.tensor([[[-0.25, 0.75, -0.25, -0.25]]]))


def test_token_entropy_hand_values():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e4, -1e4]]])
    # uniform over 4: log 4 = 1.38629436
    # p = [0.25, 0.75]: 0.25 * log 4 + 0.75 * log(4/3) = 0.34657359 + 0.21576155 = 0.56233514
    torch.testing.assert_close(token_entropy(logits), torch.tensor([[1.38629436, 0.56233514]]))


def test_kl_k3_hand_value():
    lp, ref = torch.tensor([math.log(0.5), -1.3]), torch.tensor([math.log(0.25), -1.3])
    # ref - lp = log 0.5 = -0.69314718: exp(-0.69314718) + 0.69314718 - 1 = 0.5 + 0.69314718 - 1 = 0.19314718
    # equal log-probs: 1 - 0 - 1 = 0
    torch.testing.assert_close(kl_k3(lp, ref), torch.tensor([0.19314718, 0.0]))


# ---------------------------------------------------------------- aggregation

VALUES = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
RAGGED = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])


def test_aggregate_modes_on_ragged_mask():
    # token_mean: (1 + 2 + 3 + 10) / 4 tokens = 4
    assert aggregate(VALUES, RAGGED, "token_mean").item() == pytest.approx(4.0)
    # seq_mean: mean(6 / 3, 10 / 1) = mean(2, 10) = 6
    assert aggregate(VALUES, RAGGED, "seq_mean").item() == pytest.approx(6.0)
    # seq_sum_norm, norm 4: mean(6 / 4, 10 / 4) = mean(1.5, 2.5) = 2
    assert aggregate(VALUES, RAGGED, "seq_sum_norm", norm_length=4).item() == pytest.approx(2.0)


def test_aggregate_empty_row_and_garbage_at_masked_positions():
    values = torch.cat([VALUES, torch.full((1, 4), float("nan"))]).requires_grad_()
    values_inf = torch.cat([VALUES, torch.full((1, 4), float("inf"))])
    mask = torch.cat([RAGGED, torch.zeros(1, 4, dtype=torch.long)])
    assert aggregate(values, mask, "token_mean").item() == pytest.approx(4.0)  # 16 / 4, empty row adds nothing
    assert aggregate(values_inf, mask, "seq_mean").item() == pytest.approx(6.0)  # empty row left out: mean(2, 10)
    # Dr.GRPO keeps the constant denominator: (6 / 4 + 10 / 4 + 0) / 3 sequences = 4 / 3
    out = aggregate(values, mask, "seq_sum_norm", norm_length=4)
    assert out.item() == pytest.approx(4.0 / 3.0)
    out.backward()
    # d/d value = 1 / (4 * 3) on masked tokens, 0 elsewhere (including the NaN row)
    expected = torch.cat([RAGGED.float(), torch.zeros(1, 4)]) / 12.0
    torch.testing.assert_close(values.grad, expected)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean", "seq_sum_norm"])
def test_aggregate_all_empty_is_zero_not_nan(mode):
    values = torch.full((2, 3), float("nan"), requires_grad=True)
    out = aggregate(values, torch.zeros(2, 3), mode, norm_length=3)
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(values.grad, torch.zeros(2, 3))


def test_aggregate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(VALUES, RAGGED, "mean")
    with pytest.raises(ValueError, match="norm_length"):
        aggregate(VALUES, RAGGED, "seq_sum_norm")
    with pytest.raises(ValueError, match="same shape"):
        aggregate(VALUES, RAGGED[:, :2], "token_mean")


# ---------------------------------------------------------------- clipped surrogate


def _surrogate(ratios, advantages, cfg, **kwargs):
    """One token per sequence, log-ratio log(r) with old log-prob -1; returns loss, metrics, d loss / d logprob."""
    old = torch.full((len(ratios), 1), -1.0)
    logprobs = (old + torch.tensor(ratios).log().unsqueeze(-1)).requires_grad_()
    loss, metrics = policy_loss(logprobs, old, torch.tensor(advantages), torch.ones(len(ratios), 1), cfg, **kwargs)
    loss.backward()
    return loss, metrics, logprobs.grad.squeeze(-1)


def test_clipped_surrogate_inside_and_outside_the_clip_range():
    # clip range [0.8, 1.28]; per-token loss max(-A r, -A clip(r)), d/d logprob = -A r unless clipped (then 0)
    ratios = [1.1, 1.5, 0.5, 0.5, 1.5, 1.1]
    advantages = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0]
    loss, metrics, grad = _surrogate(ratios, advantages, PolicyLossConfig())
    # A=+1: r=1.1 inside -> -1.1; r=1.5 -> max(-1.5, -1.28) = -1.28 clipped; r=0.5 -> max(-0.5, -0.8) = -0.5
    # A=-1: r=0.5 -> max(0.5, 0.8) = 0.8 clipped; r=1.5 -> max(1.5, 1.28) = 1.5; r=1.1 inside -> 1.1
    # token mean: (-1.1 - 1.28 - 0.5 + 0.8 + 1.5 + 1.1) / 6 = 0.52 / 6 = 0.08666667
    assert loss.item() == pytest.approx(0.52 / 6)
    # gradients / 6: [-1.1, 0, -0.5, 0, 1.5, 1.1] / 6
    torch.testing.assert_close(grad, torch.tensor([-1.1, 0.0, -0.5, 0.0, 1.5, 1.1]) / 6)
    assert grad[1].item() == 0.0 and grad[3].item() == 0.0  # exactly zero where clipped
    assert metrics["clip_frac"].item() == pytest.approx(2 / 6)
    assert metrics["ratio_mean"].item() == pytest.approx(6.2 / 6)  # (1.1 + 1.5 + 0.5 + 0.5 + 1.5 + 1.1) / 6
    assert metrics["pg_loss"].item() == pytest.approx(0.52 / 6)
    # approx_kl, k3 of KL(old || new): r - 1 - log r; r=1.1: 0.00468982, r=1.5: 0.09453489, r=0.5: 0.19314718
    # mean = 2 * (0.00468982 + 0.09453489 + 0.19314718) / 6 = 0.09745730
    assert metrics["approx_kl"].item() == pytest.approx(0.09745730, rel=1e-5)
    assert not any(value.requires_grad for value in metrics.values())
    assert "kl" not in metrics and "entropy" not in metrics and "dual_clip_frac" not in metrics


def test_dual_clip_caps_loss_for_negative_advantages():
    cfg = PolicyLossConfig(dual_clip=3.0)
    loss, metrics, grad = _surrogate([5.0, 2.0, 5.0], [-1.0, -1.0, 1.0], cfg)
    # A=-1, r=5: max(5, 1.28) = 5 -> min(5, 3) = 3, gradient 0
    # A=-1, r=2: max(2, 1.28) = 2 < 3 -> 2, gradient -A r = 2
    # A=+1, r=5: max(-5, -1.28) = -1.28 (ordinary clip; dual clip only applies to A < 0), gradient 0
    # mean: (3 + 2 - 1.28) / 3 = 3.72 / 3 = 1.24
    assert loss.item() == pytest.approx(1.24)
    torch.testing.assert_close(grad, torch.tensor([0.0, 2.0, 0.0]) / 3)
    assert metrics["dual_clip_frac"].item() == pytest.approx(1 / 3)
    assert metrics["clip_frac"].item() == pytest.approx(1 / 3)
    # without dual clip, the first token costs 5: (5 + 2 - 1.28) / 3 = 1.90666667
    loss, _, _ = _surrogate([5.0, 2.0, 5.0], [-1.0, -1.0, 1.0], PolicyLossConfig())
    assert loss.item() == pytest.approx(5.72 / 3)


def test_kl_and_entropy_terms_are_added_with_their_coefficients():
    cfg = PolicyLossConfig(kl_coef=0.1, entropy_coef=0.01)
    ref = torch.tensor([[math.log(0.25) - math.log(0.5) - 1.0]])  # ref - lp = log 0.5 -> k3 = 0.19314718
    loss, metrics, _ = _surrogate([1.0], [1.0], cfg, ref_logprobs=ref, entropy=torch.tensor([[0.5]]))
    # pg: -1 * 1 = -1; loss = -1 + 0.1 * 0.19314718 - 0.01 * 0.5 = -0.98568528
    assert loss.item() == pytest.approx(-0.98568528, rel=1e-6)
    assert metrics["kl"].item() == pytest.approx(0.19314718, rel=1e-6)
    assert metrics["entropy"].item() == pytest.approx(0.5)


def test_is_weights_scale_the_per_token_surrogate():
    cfg = PolicyLossConfig()
    # r = 1.1, A = +1, weight 0.5: loss -1.1 * 0.5 = -0.55, gradient -0.55; r = 1.5 clipped: -1.28 * 2 = -2.56
    weights = torch.tensor([[0.5], [2.0]])
    loss, _, grad = _surrogate([1.1, 1.5], [1.0, 1.0], cfg, is_weights=weights)
    assert loss.item() == pytest.approx((-0.55 - 2.56) / 2)
    torch.testing.assert_close(grad, torch.tensor([-0.55, 0.0]) / 2)


def test_truncated_is_weights_caps_and_masks():
    old = torch.tensor([[math.log(1.5), math.log(3.0), math.log(0.5), float("nan")]])
    rollout = torch.zeros(1, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0]])
    # exp(old - rollout) = 1.5, 3 -> capped at 2, 0.5; masked position -> 0
    weights = truncated_is_weights(old, rollout, mask)
    torch.testing.assert_close(weights, torch.tensor([[1.5, 2.0, 0.5, 0.0]]))
    assert not weights.requires_grad


def test_policy_loss_ignores_masked_tokens_and_empty_rows():
    # row 0: token 0 generated (r = 1, A = 2), token 1 is a tool response holding garbage; row 1: nothing generated
    logprobs = torch.tensor([[-1.0, float("-inf")], [float("nan"), float("inf")]], requires_grad=True)
    old = torch.tensor([[-1.0, float("-inf")], [float("nan"), -3.0]])
    mask = torch.tensor([[1, 0], [0, 0]])
    ref = torch.tensor([[-1.0, float("nan")], [float("nan"), float("nan")]])
    for aggregation in ("token_mean", "seq_mean"):
        logprobs.grad = None
        cfg = PolicyLossConfig(aggregation=aggregation, kl_coef=0.1)
        loss, metrics = policy_loss(logprobs, old, torch.tensor([2.0, -1.0]), mask, cfg, ref_logprobs=ref)
        loss.backward()
        # token (0, 0): pg -A r = -2 * 1 = -2, k3 = 0; both modes average over that one token -> -2
        assert loss.item() == pytest.approx(-2.0)
        # d/d logprob(0, 0) = -A r + 0.1 * (1 - exp(ref - lp)) = -2 + 0 = -2; everything else 0
        torch.testing.assert_close(logprobs.grad, torch.tensor([[-2.0, 0.0], [0.0, 0.0]]))
        assert all(torch.isfinite(value) for value in metrics.values())


def test_policy_loss_rejects_misuse():
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(lp, lp, torch.zeros(3), torch.ones(2, 3), PolicyLossConfig())
    with pytest.raises(ValueError, match="old_logprobs"):
        policy_loss(lp, lp[:, :2], torch.zeros(2), torch.ones(2, 3), PolicyLossConfig())
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(lp, lp, torch.zeros(2), torch.ones(2, 3), PolicyLossConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(lp, lp, torch.zeros(2), torch.ones(2, 3), PolicyLossConfig(entropy_coef=0.1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"clip_low": 1.0}, "clip_low"),
        ({"clip_high": -0.1}, "clip_high"),
        ({"aggregation": "mean"}, "unknown aggregation"),
        ({"aggregation": "seq_sum_norm"}, "norm_length"),
        ({"norm_length": 0}, "norm_length"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"entropy_coef": -1.0}, "entropy_coef"),
        ({"dual_clip": 1.0}, "dual_clip"),
    ],
)
def test_policy_loss_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PolicyLossConfig(**kwargs)


def test_one_sgd_step_moves_probability_in_the_direction_of_the_advantage():
    # A tiny categorical policy over 4 tokens: two rollouts from the same state sampled token 0 (A=+1) and 1 (A=-1)
    logits = torch.zeros(4, requires_grad=True)
    targets = torch.tensor([[0], [1]])

    def probs() -> torch.Tensor:
        return torch.softmax(logits.detach(), dim=-1)

    before = probs()
    lp = token_logprobs(logits.expand(2, 1, 4), targets)
    loss, _ = policy_loss(lp, lp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 1), PolicyLossConfig())
    loss.backward()
    # d loss / d logits = mean(-(onehot0 - p), +(onehot1 - p)) = [-0.5, 0.5, 0, 0]
    torch.testing.assert_close(logits.grad, torch.tensor([-0.5, 0.5, 0.0, 0.0]))
    with torch.no_grad():
        logits -= 0.5 * logits.grad
    after = probs()
    assert after[0] > before[0] and after[1] < before[1]


def test_token_logprobs_rejects_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        token_logprobs(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.zeros(2, 5, 3), torch.zeros(2, 5, dtype=torch.long), temperature=0.0)
