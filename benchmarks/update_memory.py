"""Planned (fake tensors) activation memory of one update micro-batch at Qwen2.5-VL-7B shapes, remedy by remedy.

Runs lfpc's own :func:`lfpc.grpo.logprobs.sequence_logprobs` (forward and backward) and the vision tower on a 7B
model made of fake tensors (``FakeTensorMode``: shapes only, no memory, no GPU), and reads
the peaks with torch's ``MemTracker``. Weights are bf16 and unsharded (what FSDP2 gathers for compute); the figures
are the activations and temporaries of the micro-batch (what the tracker files as activations, temporaries and
others), not parameters, gradients or optimizer states, which the planner (``python -m lfpc.plan``) adds per rank.

The language model runs on token ids with the image positions filled but no pixels (its M-RoPE positions given),
so the vision tower is measured on its own: what its forward keeps for the backward (held through the language
model's pass) and its own backward's peak. Its attention is a stand-in with the varlen kernel's output shape and
no score matrix (the per-window sdpa loop needs real window boundaries); the tower's blocks are checkpointed, so
the stand-in only changes the one block being recomputed.

    python -m benchmarks.update_memory [--lengths 32768 122880] [--out figures.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker
from transformers import AttentionInterface, Qwen2_5_VLForConditionalGeneration
from transformers.initialization import no_init_weights

from benchmarks.archs import arch_config
from lfpc.grpo.logprobs import HEAD_CHUNK, sequence_logprobs
from lfpc.model.checkpointing import enable_activation_checkpointing
from lfpc.model.tiny import build_tiny_model
from lfpc.plan.fake_run import MetadataOnRealTensors
from lfpc.rollout.base import Context

GIB = 2 ** 30
IMAGE_TOKENS = 16_384                  # the paper preset's largest image (vision.global_max_tokens, crop_max_tokens)
RESPONSE_TOKENS = 20_480               # the paper preset's episode.max_response_tokens
STAND_IN = "flash_shape_stand_in"      # "flash" in the name: transformers takes its varlen branch
ACTIVATION_KINDS = ("Activation", "Temp", "Other")


def _varlen_stand_in(module, query, key, value, attention_mask=None, **kwargs):
    """Attention output ``[1, N, heads, dim]`` as the varlen kernel gives it, without a score matrix."""
    return (query + key + value).transpose(1, 2).contiguous(), None


@contextmanager
def tracked(model: torch.nn.Module) -> Iterator[MemTracker]:
    """A MemTracker over ``model`` (its parameters and gradients filed as such)."""
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        yield tracker


def activation_bytes(tracker: MemTracker, when: str = "peak") -> int:
    """Activation, temporary and other bytes at the tracker's ``when`` snapshot (one device: the fake CPU)."""
    return sum(v for kinds in tracker.get_tracker_snapshot(when).values() for k, v in kinds.items()
               if getattr(k, "value", k) in ACTIVATION_KINDS)


def trajectory(length: int, image_tokens: int, policy_tokens: int, image_pad_id: int) -> Context:
    """A context of ``length`` tokens: text, ``image_tokens`` image placeholders, and ``policy_tokens`` policy
    tokens at the end (where they are does not change memory)."""
    prompt = length - image_tokens - policy_tokens
    ids = [1] * (prompt // 2) + [image_pad_id] * image_tokens + [1] * (prompt - prompt // 2) + [2] * policy_tokens
    return Context(token_ids=ids, policy_mask=[0] * (length - policy_tokens) + [1] * policy_tokens,
                   logprobs=[0.0] * length)


def language_model(model, fake: FakeTensorMode, context: Context, image_pad_id: int, grad: bool, **kwargs) -> dict:
    """Peak activation GiB of ``sequence_logprobs`` on ``context`` (its backward too when ``grad``), and what
    its forward keeps for the backward."""
    with fake:
        positions = torch.zeros(3, 1, len(context.token_ids), dtype=torch.long, device="cpu")
    with fake, tracked(model) as tracker, torch.set_grad_enabled(grad):
        out = sequence_logprobs(model, [context], 0, image_pad_id, position_ids=positions, **kwargs)["logprobs"]
        held = activation_bytes(tracker, "current")
        if grad:
            out.sum().backward()
    model.zero_grad(set_to_none=True)
    return {"peak_gib": activation_bytes(tracker) / GIB, "held_after_forward_gib": held / GIB}


def vision_tower(model, fake: FakeTensorMode, images: int, tokens_per_image: int, backward: bool = True) -> dict:
    """What the vision tower's forward keeps for the backward (held through the language model's pass) and, with
    ``backward``, its backward's peak, in GiB, for ``images`` square images of ``tokens_per_image`` merged tokens."""
    side = 2 * math.isqrt(tokens_per_image)  # patches per side of a square image (2 x 2 patches per token)
    grid = torch.tensor([[1, side, side]] * images)
    vision = model.model.visual
    cfg = vision.config
    width = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2
    patches = int(grid.prod(-1).sum())
    with fake:
        pixels = torch.empty(patches, width, dtype=torch.bfloat16, device="cpu")
    with MetadataOnRealTensors(fake), tracked(model) as tracker:  # window indices and positions computed for real
        embeds = vision(pixels, grid_thw=grid).pooler_output
        held = activation_bytes(tracker, "current")
        if backward:
            embeds.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return {"held_through_lm_gib": held / GIB, "peak_gib": activation_bytes(tracker) / GIB}


def fake_7b(fake: FakeTensorMode, tiny_dir: Path, tower: bool) -> Qwen2_5_VLForConditionalGeneration:
    """A bf16 Qwen2.5-VL-7B of fake tensors, checkpointed as in training: per layer and
    block (transformers'), and with ``tower`` each image's pass through the vision tower too (lfpc's)."""
    config = arch_config("7b", tiny_dir)
    config.vision_config._attn_implementation = STAND_IN
    with fake, no_init_weights():  # weights have no values to initialise
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16,
                                                                attn_implementation="sdpa")
    model.config.vision_config._attn_implementation = STAND_IN
    model.train()
    if tower:
        enable_activation_checkpointing(model)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def plan(lengths: list[int], tiny_dir: Path) -> dict:
    """Figures per trajectory length (one row per micro-batch, as the token budget gives long rows), printed as
    they come: the language model with the chunked head (its forward's saved tensors are what offloading moves to
    host memory), with the head on all of a row's policy positions at once, and without gradients (the "old"
    log-prob pass); the vision tower's saved tensors with per-block checkpoints only and with each image's pass
    checkpointed (one image per tower call)."""
    AttentionInterface.register(STAND_IN, _varlen_stand_in)
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    figures: dict = {}
    model = fake_7b(fake, tiny_dir, tower=True)
    image_pad_id = model.config.image_token_id
    runs = {"chunked_head": {"grad": True}, "one_chunk_head": {"grad": True, "head_chunk": None},
            "old_logprobs_no_grad": {"grad": False}}
    for length in lengths:
        per_image = IMAGE_TOKENS if length >= 2 * IMAGE_TOKENS else IMAGE_TOKENS // 4
        images = min(6, int(0.8 * length) // per_image)  # the review's share: ~80% of a context is image
        policy = min(RESPONSE_TOKENS, length // 6)
        context = trajectory(length, images * per_image, policy, image_pad_id)
        row = figures.setdefault(str(length), {"visual_tokens": images * per_image, "policy_tokens": policy})
        for name, kwargs in runs.items():
            kwargs = {**kwargs, "head_chunk": kwargs.get("head_chunk", HEAD_CHUNK) or policy}
            row[f"lm_{name}"] = language_model(model, fake, context, image_pad_id, **kwargs)
            print(f"[update_memory] planned (fake tensors) T={length} lm_{name}: {row[f'lm_{name}']}", flush=True)
        for tower in (True, False):
            checkpointed = model if tower else fake_7b(fake, tiny_dir, tower=False)
            name = "vision_tower_checkpointed" if tower else "vision_blocks_only"
            row[name] = vision_tower(checkpointed, fake, images, per_image, backward=tower)
            print(f"[update_memory] planned (fake tensors) T={length} {name}: {row[name]}", flush=True)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[122_880, 32_768])
    parser.add_argument("--tiny-dir", type=Path, default=None, help="a tiny build (token ids); built if absent")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    cache = Path(os.environ.get("LFPC_CACHE", ".cache"))
    tiny_dir = args.tiny_dir or build_tiny_model(cache / "tiny-qwen2.5-vl")
    figures = plan(args.lengths, tiny_dir)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
