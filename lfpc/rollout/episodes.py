"""Multi-turn crop-tool episodes: prompt -> generate -> tool -> generate ... -> answer, for a batch of samples."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import torch
from PIL import Image

from lfpc.agent.env import CropEnvironment, StepResult
from lfpc.agent.presets import preset
from lfpc.data.records import Sample
from lfpc.rewards import EpisodeOutcome
from lfpc.rollout.base import Context, RolloutEngine, SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.vision.budget import global_view
from lfpc.vision.images import load_image

Encoding = tuple[torch.Tensor, torch.Tensor]  # processor pixel values and grid of one image


@dataclass(frozen=True)
class EpisodeConfig:
    """Limits and tool settings of an episode."""

    max_turns: int = 5                 # tool calls allowed before the model must answer
    max_new_tokens_per_turn: int = 256
    max_response_tokens: int = 2048    # policy tokens over the whole episode
    max_context_tokens: int = 16384    # stop the episode when the sequence grows past this
    crop_max_tokens: int = 1024        # visual-token budget of each crop
    crop_mode: str = "pred"            # pred | gt | noise | direct
    prompt: str = "lfpc"               # the prompt preset (lfpc.agent.presets): ours or a compared method's
    host_threads: int = 0              # threads for decode / crop / resize / processor; 0: one per available core


@dataclass
class Trajectory:
    """One finished episode: the full token sequence with its policy mask and images, and what happened."""

    sample: Sample
    group: int                    # index of the prompt this rollout belongs to (GRPO group)
    context: Context
    prompt_length: int
    display_size: tuple[int, int]
    outcome: EpisodeOutcome
    events: list[dict]
    turns: list[str]              # decoded assistant turns
    scores: dict[str, float] = field(default_factory=dict)


def run_episodes(engine: RolloutEngine, codec: ChatCodec, samples: Sequence[Sample],
                 display_sizes: Sequence[tuple[int, int]], group_size: int, config: EpisodeConfig,
                 sampling: SamplingConfig, seed: int = 0,
                 replay: Sequence[Sequence[list[int]]] = ()) -> list[Trajectory]:
    """Roll out ``group_size`` episodes per sample, all turns batched across episodes.

    Each original image is decoded once per call and shared by its sample's episodes (crops never decode it again);
    its global view is made and encoded once and shared by the group. The image work of a call (decodes, global
    views, crops, resizes, processor calls) runs on a pool of ``config.host_threads`` threads, one task per prompt
    or episode, while tokens and contexts are built on this thread in episode order: the results do not depend on
    the number of threads. ``replay``, when given, holds per episode (in the order of the result) the token ids of
    its first assistant turns: they go to the environment as they are (log-probs 0) and only the later turns are
    generated, so that an episode can be re-run from a point of an earlier one (:mod:`lfpc.training.noise_probe`).
    """
    if replay and len(replay) != len(samples) * group_size:
        raise ValueError(f"replay needs one entry per episode ({len(samples) * group_size}), got {len(replay)}")
    sampling = dataclasses.replace(sampling, max_new_tokens=config.max_new_tokens_per_turn,
                                   stop_token_ids=codec.stop_token_ids, suppress_token_ids=codec.vision_token_ids)
    with ThreadPoolExecutor(max_workers=_host_threads(config)) as pool:
        views = pool.map(lambda sample, size: _prompt_image(codec, sample, size), samples, display_sizes)
        episodes, chosen = [], preset(config.prompt)
        for index, (sample, size, (original, view, encoding)) in enumerate(zip(samples, display_sizes, views)):
            envs = [CropEnvironment(sample, display_size=size, crop_max_tokens=config.crop_max_tokens,
                                    max_turns=config.max_turns, mode=config.crop_mode,
                                    seed=seed * 1_000_003 + index * group_size + k, original=original,
                                    preset=chosen)
                    for k in range(group_size)]
            context = codec.start(chosen.messages(sample, size, config.crop_mode != "direct"), [view], [encoding])
            episodes.extend(_Episode(index, env, context.copy(), len(context.token_ids)) for env in envs)
        for episode, turns in zip(episodes, replay):
            episode.replay = list(turns)
        active = list(episodes)
        while active:
            generating = [e for e in active if len(e.turns) >= len(e.replay)]
            generated = iter(engine.generate([e.context for e in generating], _budgeted(sampling, generating, config))
                             if generating else [])
            texts = []
            for episode in active:
                if len(episode.turns) < len(episode.replay):
                    token_ids, logprobs = episode.replay[len(episode.turns)], None
                else:
                    completion = next(generated)
                    token_ids, logprobs = completion.token_ids, completion.logprobs
                episode.context.extend(token_ids, from_policy=True, logprobs=logprobs)
                texts.append(codec.decode(token_ids))
                episode.turns.append(texts[-1])
            steps = pool.map(lambda episode, text: _step(codec, episode.env, text), active, texts)
            still_active = []
            for episode, (result, encoding) in zip(active, steps):
                if result.done or _over_budget(episode, config):
                    continue
                images = [result.image] if result.image is not None else []
                codec.append_user_turn(episode.context, result.content(), images, [encoding] if images else None)
                if len(episode.context.token_ids) >= config.max_context_tokens:
                    continue
                still_active.append(episode)
            active = still_active
    return [Trajectory(sample=samples[e.index], group=e.index, context=e.context, prompt_length=e.prompt_length,
                       display_size=e.env.display_size, outcome=e.env.outcome(), events=list(e.env.events),
                       turns=e.turns) for e in episodes]


@dataclass
class _Episode:
    index: int
    env: CropEnvironment
    context: Context
    prompt_length: int
    turns: list[str] = field(default_factory=list)
    replay: list[list[int]] = field(default_factory=list)  # token ids of the first turns, not generated


def _host_threads(config: EpisodeConfig) -> int:
    return config.host_threads or len(os.sched_getaffinity(0))


def _prompt_image(codec: ChatCodec, sample: Sample, size: tuple[int, int]) -> tuple[Image.Image, Image.Image, Encoding]:
    """A sample's decoded original, its global view at ``size`` and the view's processor encoding."""
    original = load_image(sample.image_path)
    view = global_view(original, size)
    return original, view, codec.encode_image(view)


def _step(codec: ChatCodec, env: CropEnvironment, text: str) -> tuple[StepResult, Encoding | None]:
    """One environment step and the processor encoding of the crop it returns (None without a crop)."""
    result = env.step(text)
    return result, codec.encode_image(result.image) if result.image is not None else None


def _over_budget(episode: _Episode, config: EpisodeConfig) -> bool:
    return episode.context.num_policy_tokens >= config.max_response_tokens


def _budgeted(sampling: SamplingConfig, active: list[_Episode], config: EpisodeConfig) -> SamplingConfig:
    """Cap this turn's new tokens so no episode exceeds its total response budget."""
    left = min(config.max_response_tokens - e.context.num_policy_tokens for e in active)
    return dataclasses.replace(sampling, max_new_tokens=max(1, min(sampling.max_new_tokens, left)))
