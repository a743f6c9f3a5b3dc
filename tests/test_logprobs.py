"""Trainer log-probs on the real tiny Qwen2.5-VL: the LM head runs only where the policy produced tokens."""

from __future__ import annotations

import torch
from PIL import Image

from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.grpo.objective import token_entropy, token_logprobs
from lfpc.rollout.inputs import batch_inputs


def test_logprobs_come_from_policy_positions_only_and_match_full_logits(tiny_model, codec, noise_sample):
    image = Image.open(noise_sample.image_path).convert("RGB")
    contexts = []
    for size, reply in (((112, 84), "<answer>C</answer>"), ((224, 168), "I will zoom in first, then answer.")):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]}]
        context = codec.start(messages, [image.resize(size)])
        context.extend(codec.tokenizer.encode(reply, add_special_tokens=False) + [codec.im_end_id], from_policy=True)
        contexts.append(context)
    head_inputs = []
    hook = tiny_model.lm_head.register_forward_hook(lambda module, args, out: head_inputs.append(args[0].shape))
    out = sequence_logprobs(tiny_model, contexts, codec.pad_id, codec.image_pad_id, temperature=0.7,
                            with_entropy=True)
    hook.remove()
    mask = shifted_policy_tensors(contexts)["mask"].bool()
    # the head saw only the union of the rows' policy positions, a small part of the (image-heavy) sequence
    assert head_inputs == [torch.Size([2, int(mask.any(0).sum()), tiny_model.config.text_config.hidden_size])]
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
