"""Activation memory of the update on the real tiny Qwen2.5-VL: what the forward keeps for the backward.

An outer ``saved_tensors_hooks`` sees every tensor the forward saves for the backward (with non-reentrant
checkpointing: each checkpointed module's input). The vision tower, run one image at a time with each image's pass
checkpointed, keeps none of its blocks' inputs through the language model's pass, and its backward holds one image's
activations at a time (torch's MemTracker, against the tower checkpointed as a whole); offloading hands every saved
tensor to ``save_on_cpu`` instead. All give the gradients of the plain model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.distributed._composable import checkpoint
from torch.distributed._tools.mem_tracker import MemTracker

from lfpc.grpo.logprobs import sequence_logprobs
from lfpc.model.checkpointing import enable_activation_checkpointing, encode_images_one_at_a_time
from lfpc.model.loading import load_model


def noise(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture()
def context(codec):
    """One user turn with two images of different sizes, and a policy answer."""
    images = [noise(168, 224, 0), noise(112, 84, 1)]
    context = codec.start([{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                        {"type": "text", "text": "Which?"}]}], images)
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
    vision, grads = {}, {}
    for name, model in (("plain", plain), ("layers", layers), ("tower", tower)):
        shapes, grads[name] = saved_and_grads(model, codec, context)
        vision[name] = sum(1 for s in shapes if s and s[-1] == width)
    for name in ("layers", "tower"):
        for key, grad in grads[name].items():
            torch.testing.assert_close(grad, grads["plain"][key], atol=1e-5, rtol=1e-4, msg=key)
    # per-layer checkpointing alone keeps each vision block's input (of each image); the per-image tower keeps none
    assert vision["layers"] >= plain.config.vision_config.depth and vision["tower"] == 0


def tower_backward_peak(tower: torch.nn.Module, patches: torch.Tensor, grid: torch.Tensor) -> tuple[int, dict]:
    """Peak activation and temporary bytes (torch's MemTracker) of a forward and backward of ``tower`` beyond the
    patches themselves (which the tiny tower's 1,176 values per patch make larger than its 32-wide activations),
    and the parameters' gradients."""
    tracker = MemTracker()
    tracker.track_external(tower)
    with tracker:
        tower(patches, grid_thw=grid).pooler_output.pow(2).sum().backward()
    peak = sum(stats.get(kind, 0) for stats in tracker.get_tracker_snapshot("peak").values()
               for kind in stats if getattr(kind, "value", None) in ("Activation", "Temp"))
    return peak - patches.numel() * patches.element_size(), {name: p.grad for name, p in tower.named_parameters()}


def test_the_tower_encodes_one_image_at_a_time_with_the_gradients_of_one_call(tiny_model_dir):
    whole, separate = (load_model(tiny_model_dir).train().model.visual for _ in range(2))
    for tower in (whole, separate):  # blocks checkpointed (transformers') in both, as in training
        tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpoint(whole)  # the tower checkpointed as one call over every image (the previous layout)
    encode_images_one_at_a_time(separate)
    images = 4
    grid = torch.tensor([[1, 16, 16]] * images)  # 256 patches per image
    patches = torch.randn(int(grid.prod(-1).sum()), whole.patch_embed.proj.weight[0].numel(),
                          generator=torch.Generator().manual_seed(0))
    whole_peak, whole_grads = tower_backward_peak(whole, patches, grid)
    separate_peak, separate_grads = tower_backward_peak(separate, patches, grid)
    with torch.no_grad():
        torch.testing.assert_close(separate(patches, grid_thw=grid).pooler_output,
                                   whole(patches, grid_thw=grid).pooler_output, atol=1e-5, rtol=1e-5)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(separate_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # one image's activations at a time: about a quarter of four images' (1/2 leaves room for per-call overheads)
    assert separate_peak < whole_peak / 2, (separate_peak, whole_peak)


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
