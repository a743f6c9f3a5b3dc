"""Trainer log-probs on the real tiny Qwen2.5-VL: the LM head runs per row, in chunks, only where the policy produced
tokens, and gives the full head's values and gradients."""

from __future__ import annotations

import torch
from PIL import Image
from torch.overrides import TorchFunctionMode

from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.grpo.objective import token_entropy, token_logprobs
from lfpc.rollout.inputs import batch_inputs


class HeadCalls(TorchFunctionMode):
    """Records the input shape of every ``linear`` on ``weight`` (the LM head's, however it is applied)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.shapes = weight, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear and (args[1] if len(args) > 1 else kwargs.get("weight")) is self.weight:
            self.shapes.append(args[0].shape)
        return func(*args, **kwargs)


def two_contexts(codec, noise_sample) -> list:
    """Two one-turn contexts of different lengths (images of two sizes, replies of 2 lengths)."""
    image = Image.open(noise_sample.image_path).convert("RGB")
    contexts = []
    for size, reply in (((112, 84), "<answer>C</answer>"), ((224, 168), "I will zoom in first, then answer.")):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]}]
        context = codec.start(messages, [image.resize(size)])
        context.extend(codec.tokenizer.encode(reply, add_special_tokens=False) + [codec.im_end_id], from_policy=True)
        contexts.append(context)
    return contexts


def test_logprobs_come_from_policy_positions_only_and_match_full_logits(tiny_model, codec, noise_sample):
    contexts = two_contexts(codec, noise_sample)
    with HeadCalls(tiny_model.lm_head.weight) as calls:
        out = sequence_logprobs(tiny_model, contexts, codec.pad_id, codec.image_pad_id, temperature=0.7,
                                with_entropy=True)
    head_inputs = calls.shapes
    mask = shifted_policy_tensors(contexts)["mask"].bool()
    # the model's own head call saw no position; then each row's own policy positions, a small part of the
    # (image-heavy) sequence, not the union of the rows'
    hidden = tiny_model.config.text_config.hidden_size
    assert head_inputs == [torch.Size([2, 0, hidden]), *(torch.Size([int(n), hidden]) for n in mask.sum(1))]
    assert int(mask.any(0).sum()) < mask.shape[1] // 4
    inputs = batch_inputs(contexts, codec.pad_id, codec.image_pad_id)
    with torch.no_grad():
        logits = tiny_model(**inputs, use_cache=False).logits[:, :-1]
    full = token_logprobs(logits, inputs["input_ids"][:, 1:], 0.7)
    torch.testing.assert_close(out["logprobs"][mask], full[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["entropy"][mask], token_entropy(logits, 0.7)[mask], atol=1e-5, rtol=1e-5)
    assert not out["logprobs"][~mask].any()
    out["logprobs"][mask].sum().backward()  # differentiable through the scatter
    assert tiny_model.lm_head.weight.grad.abs().sum() > 0


def test_chunked_head_gives_the_one_chunk_values_and_gradients(tiny_model, codec, noise_sample):
    contexts = two_contexts(codec, noise_sample)
    mask = shifted_policy_tensors(contexts)["mask"].bool()
    results = []
    for chunk in (3, 10_000):
        tiny_model.zero_grad(set_to_none=True)
        with HeadCalls(tiny_model.lm_head.weight) as calls:
            out = sequence_logprobs(tiny_model, contexts, codec.pad_id, codec.image_pad_id, temperature=0.7,
                                    with_entropy=True, head_chunk=chunk)
        head_inputs = calls.shapes
        (out["logprobs"][mask].sum() + out["entropy"][mask].sum()).backward()
        results.append((out, {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None},
                        head_inputs))
    (chunked, chunked_grads, chunked_calls), (whole, whole_grads, whole_calls) = results
    # after the model's own call on no position: chunks of at most 3 of a row's positions, or one call per row
    assert chunked_calls[1:] == [torch.Size([len(part), tiny_model.config.text_config.hidden_size])
                                 for n in mask.sum(1) for part in torch.arange(int(n)).split(3)]
    assert len(whole_calls) == 1 + len(contexts)
    torch.testing.assert_close(chunked["logprobs"], whole["logprobs"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(chunked["entropy"], whole["entropy"], atol=1e-6, rtol=1e-6)
    assert chunked_grads.keys() == whole_grads.keys() and "lm_head.weight" in whole_grads
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_a_single_row_runs_without_an_attention_mask(tiny_model, codec, noise_sample):
    contexts = two_contexts(codec, noise_sample)
    masks = []
    hook = tiny_model.register_forward_pre_hook(lambda m, args, kwargs: masks.append(kwargs.get("attention_mask")),
                                                with_kwargs=True)
    alone = sequence_logprobs(tiny_model, contexts[1:], codec.pad_id, codec.image_pad_id)["logprobs"]
    padded = sequence_logprobs(tiny_model, contexts, codec.pad_id, codec.image_pad_id)["logprobs"]
    hook.remove()
    # no mask to build for one row (sdpa's causal kernel); two rows of different lengths need their padding mask
    assert masks[0] is None and masks[1] is not None and not masks[1].bool().all()
    mask = shifted_policy_tensors(contexts[1:])["mask"].bool()
    torch.testing.assert_close(alone[mask], padded[1:][mask], atol=1e-5, rtol=1e-5)
