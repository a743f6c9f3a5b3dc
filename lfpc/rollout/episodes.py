"""Multi-turn crop-tool episodes: prompt -> generate -> tool -> generate ... -> answer, for a batch of samples."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

from lfpc.agent.env import CropEnvironment
from lfpc.agent.presets import preset
from lfpc.data.records import Sample
from lfpc.rewards import EpisodeOutcome
from lfpc.rollout.base import Context, RolloutEngine, SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.vision.images import load_image


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

    Each original image is decoded once per call and shared by its sample's episodes (crops never decode it again).
    ``replay``, when given, holds per episode (in the order of the result) the token ids of its first assistant
    turns: they go to the environment as they are (log-probs 0) and only the later turns are generated, so that an
    episode can be re-run from a point of an earlier one (:mod:`lfpc.training.noise_probe`).
    """
    if replay and len(replay) != len(samples) * group_size:
        raise ValueError(f"replay needs one entry per episode ({len(samples) * group_size}), got {len(replay)}")
    sampling = dataclasses.replace(sampling, max_new_tokens=config.max_new_tokens_per_turn,
                                   stop_token_ids=codec.stop_token_ids, suppress_token_ids=codec.vision_token_ids)
    episodes, chosen = [], preset(config.prompt)
    for index, (sample, size) in enumerate(zip(samples, display_sizes)):
        original = load_image(sample.image_path)
        envs = [CropEnvironment(sample, display_size=size, crop_max_tokens=config.crop_max_tokens,
                                max_turns=config.max_turns, mode=config.crop_mode,
                                seed=seed * 1_000_003 + index * group_size + k, original=original,
                                preset=chosen)
                for k in range(group_size)]
        context = codec.start(chosen.messages(sample, size, config.crop_mode != "direct"),
                              [envs[0].global_image()])
        episodes.extend(_Episode(index, env, context.copy(), len(context.token_ids)) for env in envs)
    for episode, turns in zip(episodes, replay):
        episode.replay = list(turns)
    active = list(episodes)
    while active:
        generating = [e for e in active if len(e.turns) >= len(e.replay)]
        generated = iter(engine.generate([e.context for e in generating], _budgeted(sampling, generating, config))
                         if generating else [])
        still_active = []
        for episode in active:
            if len(episode.turns) < len(episode.replay):
                token_ids, logprobs = episode.replay[len(episode.turns)], None
            else:
                completion = next(generated)
                token_ids, logprobs = completion.token_ids, completion.logprobs
            episode.context.extend(token_ids, from_policy=True, logprobs=logprobs)
            text = codec.decode(token_ids)
            episode.turns.append(text)
            result = episode.env.step(text)
            if result.done or _over_budget(episode, config):
                continue
            codec.append_user_turn(episode.context, result.content(), [result.image] if result.image is not None else [])
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


def _over_budget(episode: _Episode, config: EpisodeConfig) -> bool:
    return episode.context.num_policy_tokens >= config.max_response_tokens


def _budgeted(sampling: SamplingConfig, active: list[_Episode], config: EpisodeConfig) -> SamplingConfig:
    """Cap this turn's new tokens so no episode exceeds its total response budget."""
    left = min(config.max_response_tokens - e.context.num_policy_tokens for e in active)
    return dataclasses.replace(sampling, max_new_tokens=max(1, min(sampling.max_new_tokens, left)))
