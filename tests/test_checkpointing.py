"""Activation memory of the update on the real tiny Qwen2.5-VL: what the forward keeps for the backward.

An outer ``saved_tensors_hooks`` sees every tensor the forward saves for the backward (with non-reentrant
checkpointing: each checkpointed module's input). The vision tower checkpointed as a whole keeps none of its blocks'
inputs through the language model's pass; offloading hands every saved tensor to ``save_on_cpu`` instead. Both give
the gradients of the plain model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lfpc.grpo.logprobs import sequence_logprobs
from lfpc.model.checkpointing import enable_activation_checkpointing
from lfpc.model.loading import load_model


@pytest.fixture()
def context(codec):
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (168, 224, 3), dtype=np.uint8))
    context = codec.start([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}],
                          [image])
    context.extend(codec.completion_ids("<answer>A</answer>"), from_policy=True)
    return context


def saved_and_grads(model, codec, context, offload: bool = False) -> tuple[list[tuple], dict[str, torch.Tensor]]:
    """Shapes of the tensors the forward saves for the backward (as an outer hook sees them), and the gradients."""
    shapes: list[tuple] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logprobs = sequence_logprobs(model, [context], codec.pad_id, codec.image_pad_id, offload=offload)["logprobs"]
    logprobs.sum().backward()
    return shapes, {name: p.grad for name, p in model.named_parameters()}


def test_the_vision_tower_keeps_no_block_input_through_the_language_model(tiny_model_dir, codec, context):
    plain, layers, tower = (load_model(tiny_model_dir).train() for _ in range(3))
    layers.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    enable_activation_checkpointing(tower)
    width = plain.config.vision_config.hidden_size
    vision = {}
    for name, model in (("plain", plain), ("layers", layers), ("tower", tower)):
        shapes, grads = saved_and_grads(model, codec, context)
        vision[name] = sum(1 for s in shapes if s and s[-1] == width)
        if name != "plain":
            for key, grad in grads.items():
                torch.testing.assert_close(grad, reference[key], atol=1e-5, rtol=1e-4, msg=key)
        else:
            reference = grads
    # per-layer checkpointing alone keeps each vision block's input; the checkpointed tower keeps none
    assert vision["layers"] >= plain.config.vision_config.depth and vision["tower"] == 0


def test_offloaded_activations_all_go_through_save_on_cpu(tiny_model_dir, codec, context):
    kept, offloaded = (load_model(tiny_model_dir).train() for _ in range(2))
    for model in (kept, offloaded):
        enable_activation_checkpointing(model)
    kept_shapes, kept_grads = saved_and_grads(kept, codec, context)
    offloaded_shapes, offloaded_grads = saved_and_grads(offloaded, codec, context, offload=True)
    hidden = kept.config.text_config.hidden_size
    assert sum(1 for s in kept_shapes if s and s[-1] == hidden) >= kept.config.text_config.num_hidden_layers
    assert offloaded_shapes == []  # the inner save_on_cpu packs every saved tensor, layer inputs included
    for key, grad in kept_grads.items():
        torch.testing.assert_close(offloaded_grads[key], grad, atol=1e-6, rtol=1e-5, msg=key)
