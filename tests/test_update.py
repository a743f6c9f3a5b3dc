"""The GRPO update on the real tiny Qwen2.5-VL: direction, fixed-batch loss decrease, micro-batch accumulation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.grpo.objective import PolicyLossConfig, policy_loss
from lfpc.grpo.update import PolicyUpdate


@pytest.fixture()
def batch(codec, noise_sample):
    """Two completions of one image prompt: a tool call and an answer (policy tokens only in the completion)."""
    from PIL import Image
    image = Image.open(noise_sample.image_path).convert("RGB").resize((112, 84))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]}]
    contexts = []
    for text in ('<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 50, 60]}}</tool_call>',
                 "<answer>C</answer>"):
        context = codec.start(messages, [image])
        context.extend(codec.tokenizer.encode(text, add_special_tokens=False) + [codec.im_end_id], from_policy=True)
        contexts.append(context)
    return contexts


def completion_logprob(model, codec, contexts):
    with torch.no_grad():
        lp = sequence_logprobs(model, contexts, codec.pad_id, codec.image_pad_id)["logprobs"]
    return (lp * shifted_policy_tensors(contexts)["mask"]).sum(dim=1)


def make_update(model, codec, lr=1e-3, micro=2, optimizer=None):
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=lr)
    return PolicyUpdate(model, optimizer, PolicyLossConfig(), codec.pad_id, codec.image_pad_id,
                        mini_batch_size=2, micro_batch_size=micro, max_grad_norm=1e9)


def test_step_moves_policy_toward_the_higher_advantage_sample(tiny_model, codec, batch):
    before = completion_logprob(tiny_model, codec, batch)
    make_update(tiny_model, codec)(batch, torch.tensor([1.0, -1.0]))
    after = completion_logprob(tiny_model, codec, batch)
    assert after[0] > before[0] + 1e-3  # positive advantage: more likely
    assert after[1] < before[1] - 1e-3  # negative advantage: less likely


def test_loss_decreases_on_a_fixed_batch(tiny_model, codec, batch):
    advantages = torch.tensor([1.0, -1.0])
    with torch.no_grad():
        old = sequence_logprobs(tiny_model, batch, codec.pad_id, codec.image_pad_id)["logprobs"]
    mask = shifted_policy_tensors(batch)["mask"]

    def surrogate():
        with torch.no_grad():
            lp = sequence_logprobs(tiny_model, batch, codec.pad_id, codec.image_pad_id)["logprobs"]
        return float(policy_loss(lp, old, advantages, mask, PolicyLossConfig(clip_low=0.9, clip_high=9.0))[0])

    update = make_update(tiny_model, codec, lr=3e-4)
    losses = [surrogate()]
    for _ in range(4):
        update(batch, advantages)
        losses.append(surrogate())
    n = mask.sum(dim=1)  # at ratio 1 the token-mean surrogate is -(A_0 n_0 + A_1 n_1) / (n_0 + n_1)
    assert losses[0] == pytest.approx(float(-(n[0] - n[1]) / (n[0] + n[1])), abs=1e-5)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_micro_batches_accumulate_to_the_full_batch_gradient(tiny_model, codec, batch):
    twin = copy.deepcopy(tiny_model)
    advantages = torch.tensor([0.5, -1.5])
    make_update(tiny_model, codec, optimizer=torch.optim.SGD(tiny_model.parameters(), lr=0.1), micro=2)(batch, advantages)
    make_update(twin, codec, optimizer=torch.optim.SGD(twin.parameters(), lr=0.1), micro=1)(batch, advantages)
    for (name, a), b in zip(tiny_model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_several_updates_per_step_use_the_pre_update_policy_as_old(tiny_model, codec, batch):
    # 2 epochs x 2 mini-batches of 1: the ratio of the first update is 1 (old == current), later ones are not
    contexts = [batch[0], batch[1], batch[1], batch[0]]  # mixed lengths across micro-batches
    update = PolicyUpdate(tiny_model, torch.optim.AdamW(tiny_model.parameters(), lr=1e-3), PolicyLossConfig(),
                          codec.pad_id, codec.image_pad_id, mini_batch_size=2, micro_batch_size=1, ppo_epochs=2)
    before = completion_logprob(tiny_model, codec, batch)
    stats = update(contexts, torch.tensor([1.0, -1.0, -1.0, 1.0]))
    after = completion_logprob(tiny_model, codec, batch)
    assert stats["train/ratio_mean"] != 1.0 and stats["train/approx_kl"] > 0  # later updates saw a moved policy
    assert after[0] > before[0] and after[1] < before[1]


def sgd_step_delta(model, codec, batch, advantages, **kwargs) -> dict[str, torch.Tensor]:
    """Parameter change of one plain-SGD update (lr 0.1, no clipping), so changes are linear in the gradient."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    PolicyUpdate(model, torch.optim.SGD(model.parameters(), lr=0.1), kwargs.pop("loss", PolicyLossConfig()),
                 codec.pad_id, codec.image_pad_id, mini_batch_size=2, micro_batch_size=2, max_grad_norm=1e9,
                 **kwargs)(batch, advantages)
    return {name: p.detach() - before[name] for name, p in model.named_parameters()}


@pytest.mark.parametrize("weight, cap, factor", [(0.5, 3.0, 0.5), (10.0, 3.0, 3.0)])
def test_tis_weights_scale_the_update_by_the_capped_trainer_to_rollout_ratio(tiny_model, codec, batch, weight, cap,
                                                                           factor):
    # the rollout engine saw each policy token with probability 1/weight times the trainer's: exp(old - rollout)
    # = weight, capped at cap; at ratio 1 the surrogate's gradient is then factor times the gradient without TIS
    trainer = sequence_logprobs(tiny_model, batch, codec.pad_id, codec.image_pad_id)["logprobs"].detach()
    for row, context in enumerate(batch):
        context.logprobs = [0.0] + [lp - math.log(weight) for lp in trainer[row, :len(context.token_ids) - 1].tolist()]
    advantages = torch.tensor([1.0, -1.0])
    twin = copy.deepcopy(tiny_model)
    plain = sgd_step_delta(tiny_model, codec, batch, advantages)
    weighted = sgd_step_delta(twin, codec, batch, advantages, tis_cap=cap)
    assert any(delta.abs().max() > 1e-4 for delta in plain.values())
    for name, delta in plain.items():
        torch.testing.assert_close(weighted[name], factor * delta, atol=1e-6, rtol=1e-3, msg=name)


def test_kl_term_pulls_the_policy_back_to_the_reference(tiny_model, tiny_model_dir, codec, batch):
    from lfpc.model.loading import load_model
    reference = load_model(tiny_model_dir).requires_grad_(False)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(torch.randn(p.shape, generator=noise) * 0.02)
    mask = shifted_policy_tensors(batch)["mask"].bool()

    def kl_to_reference():  # k3 estimate of KL(policy || reference) over the policy tokens, written out
        with torch.no_grad():
            lp, ref = (sequence_logprobs(m, batch, codec.pad_id, codec.image_pad_id)["logprobs"][mask]
                       for m in (tiny_model, reference))
        return float((torch.exp(ref - lp) - (ref - lp) - 1).mean())

    before = kl_to_reference()
    update = PolicyUpdate(tiny_model, torch.optim.SGD(tiny_model.parameters(), lr=0.05),
                          PolicyLossConfig(kl_coef=1.0), codec.pad_id, codec.image_pad_id, mini_batch_size=2,
                          micro_batch_size=1, max_grad_norm=1e9, reference=reference)
    stats = update(batch, torch.zeros(2))  # no reward signal: only the KL term moves the policy
    assert before > 1e-3 and stats["train/kl"] == pytest.approx(before, rel=1e-4)
    assert kl_to_reference() < 0.7 * before  # measured: -59% in one small gradient step
    with pytest.raises(ValueError, match="reference"):
        PolicyUpdate(tiny_model, None, PolicyLossConfig(kl_coef=0.1), codec.pad_id, codec.image_pad_id, 2, 2)


def test_a_token_budget_groups_long_rows_alone_and_keeps_the_token_mean(tiny_model, codec, batch):
    # the tool call is the longer row: with a budget of twice the answer's length, the two answers share a
    # micro-batch and each tool call is alone; the token-mean over the mini-batch gives the row-by-row update
    call, answer = batch
    contexts = [call, answer, call, answer]
    advantages = torch.tensor([0.5, -1.5, 1.0, 0.25])
    twin = copy.deepcopy(tiny_model)
    rows = []
    hook = tiny_model.register_forward_pre_hook(lambda m, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                                with_kwargs=True)
    PolicyUpdate(tiny_model, torch.optim.SGD(tiny_model.parameters(), lr=0.1), PolicyLossConfig(), codec.pad_id,
                 codec.image_pad_id, mini_batch_size=4, micro_batch_size=2, max_grad_norm=1e9,
                 micro_batch_tokens=2 * len(answer.token_ids))(contexts, advantages)
    hook.remove()
    assert len(call.token_ids) > len(answer.token_ids) and rows == [1, 1, 2]
    PolicyUpdate(twin, torch.optim.SGD(twin.parameters(), lr=0.1), PolicyLossConfig(), codec.pad_id,
                 codec.image_pad_id, mini_batch_size=4, micro_batch_size=1, max_grad_norm=1e9)(contexts, advantages)
    for (name, a), b in zip(tiny_model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_old_logprob_rows_in_budget_micro_batches_match_one_row_forwards(tiny_model, codec, batch):
    update = PolicyUpdate(tiny_model, None, PolicyLossConfig(), codec.pad_id, codec.image_pad_id, 2, 2,
                          micro_batch_tokens=len(batch[0].token_ids))  # one row per micro-batch, longest first
    rows = update.logprobs(batch)
    width = max(len(c.token_ids) for c in batch) - 1
    for row, context in zip(rows, batch):
        with torch.no_grad():
            alone = sequence_logprobs(tiny_model, [context], codec.pad_id, codec.image_pad_id)["logprobs"][0]
        assert row.shape == (width,) and not row[len(alone):].any()
        torch.testing.assert_close(row[:len(alone)], alone, atol=1e-5, rtol=1e-5)


def test_gradients_are_freed_after_the_optimizer_step(tiny_model, codec, batch):
    make_update(tiny_model, codec)(batch, torch.tensor([1.0, -1.0]))
    assert all(p.grad is None for p in tiny_model.parameters())


def test_activations_are_offloaded_for_micro_batches_from_the_threshold_on(tiny_model, codec, batch):
    # micro-batches of one row; an outer saved-tensor hook sees only what save_on_cpu did not take
    call, answer = batch

    def saved_for_backward(threshold) -> int:
        count = [0]

        def pack(tensor):
            count[0] += 1
            return tensor

        update = PolicyUpdate(tiny_model, torch.optim.SGD(tiny_model.parameters(), lr=0.0), PolicyLossConfig(),
                              codec.pad_id, codec.image_pad_id, mini_batch_size=2, micro_batch_size=1,
                              offload_min_tokens=threshold)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            update(batch, torch.tensor([1.0, -1.0]))
        return count[0]

    kept, long_only, both = (saved_for_backward(t) for t in (None, len(call.token_ids), len(answer.token_ids)))
    assert kept > long_only > both > 0  # the loss's own saved tensors stay outside the offloaded forward
    with pytest.raises(ValueError, match="offload_min_tokens"):
        saved_for_backward(0)
