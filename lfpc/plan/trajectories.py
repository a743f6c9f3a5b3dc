"""The longest trajectory a config allows, as the :class:`~lfpc.rollout.base.Context` the trainer would receive:
every image at its largest (the global view, then crops), every turn's response at its cap, the context at its cap."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lfpc.rollout.base import Context

PROMPT_TOKENS = 64      # system prompt, question and options around the first image (at least)
TOOL_TEXT_TOKENS = 16   # the tool response's text around each crop


@dataclass(frozen=True)
class Workload:
    """A trajectory's size: total tokens, policy tokens, policy tokens per turn, visual tokens of each image."""

    context_tokens: int
    response_tokens: int
    turn_tokens: int
    image_tokens: tuple[int, ...]

    @property
    def visual_tokens(self) -> int:
        return sum(self.image_tokens)


def worst_case(cfg) -> Workload:
    """The config's longest trajectory: ``episode.max_context_tokens`` tokens, the global view at
    ``vision.global_max_tokens`` and as many crops at ``episode.crop_max_tokens`` as turns, images per prompt
    (``rollout.max_images_per_prompt``) and the context leave room for beside the response."""
    e = cfg.episode
    response = min(e.max_response_tokens, e.max_new_tokens_per_turn * e.max_turns)
    max_images = cfg.rollout.get("max_images_per_prompt") or e.max_turns + 1
    images = [cfg.vision.global_max_tokens] + [e.crop_max_tokens] * (max_images - 1)
    while images and sum(n + 2 + TOOL_TEXT_TOKENS for n in images) + response + PROMPT_TOKENS > e.max_context_tokens:
        images.pop()
    if not images:
        raise ValueError(f"episode.max_context_tokens={e.max_context_tokens} cannot hold the global view "
                         f"(vision.global_max_tokens={cfg.vision.global_max_tokens}) and {response} response tokens")
    return Workload(e.max_context_tokens, response, e.max_new_tokens_per_turn, tuple(images))


def merged_grid(tokens: int) -> tuple[int, int]:
    """The most square grid of merged 28x28 tokens holding at most ``tokens`` (what the processor makes of an
    image of that budget)."""
    rows = math.isqrt(tokens)
    return rows, tokens // rows


def context_of(workload: Workload, model_config, pixels) -> Context:
    """A :class:`Context` of ``workload`` with the token ids of ``model_config`` (a Qwen2.5-VL config);
    ``pixels(rows, width)`` makes each image's pixel tensor (fake in a plan)."""
    v = model_config.vision_config
    text, policy_id = 0, 1
    pieces: list[tuple[list[int], bool]] = []
    left = workload.response_tokens
    for tokens in workload.image_tokens:
        rows, cols = merged_grid(tokens)
        pieces.append(([model_config.vision_start_token_id] + [model_config.image_token_id] * (rows * cols)
                       + [model_config.vision_end_token_id] + [text] * TOOL_TEXT_TOKENS, False))
        turn = min(workload.turn_tokens, left)
        if turn:
            pieces.append(([policy_id] * turn, True))
            left -= turn
    if left:
        pieces.append(([policy_id] * left, True))
    used = sum(len(ids) for ids, _ in pieces)
    context = Context(token_ids=[], policy_mask=[], logprobs=[])
    context.extend([text] * max(workload.context_tokens - used, 1), from_policy=False)  # the prompt, padded out
    for ids, from_policy in pieces:
        context.extend(ids, from_policy)
    merge = v.spatial_merge_size
    for tokens in workload.image_tokens:
        rows, cols = merged_grid(tokens)
        context.image_grid_thw.append(torch.tensor([1, rows * merge, cols * merge]))
        context.pixel_values.append(pixels(rows * cols * merge * merge,
                                           v.in_channels * v.temporal_patch_size * v.patch_size ** 2))
    return context
