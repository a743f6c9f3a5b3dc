"""Multi-turn crop-tool episodes: prompt -> generate -> tool -> generate ... -> answer, for a batch of samples."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Sequence

import torch
from PIL import Image

from lfpc.agent.env import CropEnvironment, StepResult
from lfpc.agent.presets import preset
from lfpc.data.records import Sample
from lfpc.rewards import EpisodeOutcome
from lfpc.rollout.base import Completion, Context, RolloutEngine, SamplingConfig, StreamingEngine
from lfpc.rollout.codec import ChatCodec
from lfpc.vision.budget import global_view
from lfpc.vision.images import load_image

Encoding = tuple[torch.Tensor, torch.Tensor]  # processor pixel values and grid of one image


@dataclass(frozen=True)
class EpisodeConfig:
    """Limits and tool settings of an episode."""

    max_turns: int = 5                 # tool calls allowed before the model must answer
    max_new_tokens_per_turn: int = 256
    max_response_tokens: int | None = 2048  # policy tokens over the whole episode (None: no such cap)
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
    truncated: bool = False       # a token cap ended the episode before an answer (see :func:`_truncated`)


def run_episodes(engine: RolloutEngine, codec: ChatCodec, samples: Sequence[Sample],
                 display_sizes: Sequence[tuple[int, int]], group_size: int, config: EpisodeConfig,
                 sampling: SamplingConfig, seed: int = 0,
                 replay: Sequence[Sequence[list[int]]] = ()) -> list[Trajectory]:
    """Roll out ``group_size`` episodes per sample.

    Each original image is decoded once per call and shared by its sample's episodes (crops never decode it again);
    its global view is made and encoded once and shared by the group. The image work of a call (decodes, global
    views, crops, resizes, processor calls) runs on a pool of ``config.host_threads`` threads, one task per prompt
    or episode, while tokens and contexts are built on this thread: the results do not depend on the number of
    threads. A :class:`~lfpc.rollout.base.StreamingEngine` (vLLM) gets each episode's next turn as soon as that
    episode's step is done, so image work overlaps generation, with a seed per request; any other engine generates
    turn by turn, all active episodes in one batch. ``replay``, when given, holds per episode (in the order of the
    result) the token ids of its first assistant turns: they go to the environment as they are (log-probs 0) and only
    the later turns are generated, so that an episode can be re-run from a point of an earlier one
    (:mod:`lfpc.training.noise_probe`).
    """
    if replay and len(replay) != len(samples) * group_size:
        raise ValueError(f"replay needs one entry per episode ({len(samples) * group_size}), got {len(replay)}")
    sampling = dataclasses.replace(sampling, max_new_tokens=config.max_new_tokens_per_turn,
                                   stop_token_ids=codec.stop_token_ids, suppress_token_ids=codec.vision_token_ids)
    with ThreadPoolExecutor(max_workers=_host_threads(config)) as pool:
        views = pool.map(lambda sample, size: _prompt_image(codec, sample, size), samples, display_sizes)
        episodes, chosen = [], preset(config.prompt, codec.backbone)
        for index, (sample, size, (original, view, encoding)) in enumerate(zip(samples, display_sizes, views)):
            envs = [CropEnvironment(sample, display_size=size, crop_max_tokens=config.crop_max_tokens,
                                    max_turns=config.max_turns, mode=config.crop_mode,
                                    seed=seed * 1_000_003 + index * group_size + k, original=original,
                                    preset=chosen, token_side=codec.token_side)
                    for k in range(group_size)]
            context = codec.start(chosen.messages(sample, size, config.crop_mode != "direct"), [view], [encoding])
            episodes.extend(_Episode(index, index * group_size + k, env, context.copy(), len(context.token_ids))
                            for k, env in enumerate(envs))
        for episode, turns in zip(episodes, replay):
            episode.replay = list(turns)
        turns = _Turns(codec, pool, config)
        if isinstance(engine, StreamingEngine):
            _run_streaming(engine, turns, episodes, sampling, seed)
        else:
            _run_by_turns(engine, turns, episodes, sampling)
    return [Trajectory(sample=samples[e.index], group=e.index, context=e.context, prompt_length=e.prompt_length,
                       display_size=e.env.display_size, outcome=e.env.outcome(), events=list(e.env.events),
                       turns=e.turns, truncated=_truncated(e)) for e in episodes]


@dataclass
class _Episode:
    index: int                    # the sample's
    number: int                   # the episode's, in the order of the result
    env: CropEnvironment
    context: Context
    prompt_length: int
    turns: list[str] = field(default_factory=list)
    replay: list[list[int]] = field(default_factory=list)  # token ids of the first turns, not generated
    cut: bool = False             # the last turn stopped at its token cap (finish reason "length")

    @property
    def replaying(self) -> bool:
        """Whether the next turn comes from ``replay`` rather than from the engine."""
        return len(self.turns) < len(self.replay)


class _Turns:
    """What happens between two generations of an episode: its turn is appended and decoded, the environment step
    (parse, crop, resize, processor) runs on the thread pool, and the tool's reply is appended once it is back."""

    def __init__(self, codec: ChatCodec, pool: ThreadPoolExecutor, config: EpisodeConfig) -> None:
        self.codec, self.pool, self.config = codec, pool, config

    def take(self, episode: _Episode, completion: Completion | None) -> Future:
        """Append a generated turn (``None``: the episode's next replayed turn) and start its environment step."""
        if completion is None:
            token_ids, logprobs = episode.replay[len(episode.turns)], None
        else:
            token_ids, logprobs = completion.token_ids, completion.logprobs
        episode.cut = completion is not None and completion.finish_reason == "length"
        episode.context.extend(token_ids, from_policy=True, logprobs=logprobs)
        episode.turns.append(self.codec.decode(token_ids))
        return self.pool.submit(_step, self.codec, episode.env, episode.turns[-1])

    def settle(self, episode: _Episode, step: Future) -> bool:
        """Append the finished step's tool reply to the episode; whether the episode goes on."""
        result, encoding = step.result()
        if result.done or _over_budget(episode, self.config):
            return False
        images = [result.image] if result.image is not None else []
        self.codec.append_user_turn(episode.context, result.content(), images, [encoding] if images else None)
        return len(episode.context.token_ids) < self.config.max_context_tokens


def _run_by_turns(engine: RolloutEngine, turns: _Turns, episodes: list[_Episode], sampling: SamplingConfig) -> None:
    """All active episodes generate a turn in one batch, then all take their steps: the batch of every turn is the
    same whatever the timing, so a batched engine draws the same samples from its random stream."""
    active = list(episodes)
    while active:
        generating = [e for e in active if not e.replaying]
        generated = iter(engine.generate([e.context for e in generating], _budgeted(sampling, generating, turns.config))
                         if generating else [])
        steps = [turns.take(e, None if e.replaying else next(generated)) for e in active]
        active = [e for e, step in zip(active, steps) if turns.settle(e, step)]


def _run_streaming(engine: StreamingEngine, turns: _Turns, episodes: list[_Episode], sampling: SamplingConfig,
                   seed: int) -> None:
    """Each episode goes on as soon as its own step is done: finished turns' environment steps run on the pool while
    the engine generates the others, and every request carries its own seed (from ``seed``, the episode and the
    turn), so the samples do not depend on which requests happened to share an engine step."""
    tickets: dict[int, list[_Episode]] = {}
    stepping: dict[Future, _Episode] = {}
    ready = list(episodes)
    while ready or tickets or stepping:
        for group in _shared_requests(ready):
            if group[0].replaying:
                stepping.update((turns.take(e, None), e) for e in group)
                continue
            request = dataclasses.replace(_budgeted(sampling, group, turns.config),
                                          seed=_request_seed(seed, group[0].number, len(group[0].turns)))
            tickets[engine.submit([e.context for e in group], request)] = group
        if tickets:
            for ticket, completions in engine.poll():
                stepping.update((turns.take(e, c), e) for e, c in zip(tickets.pop(ticket), completions))
            done = [step for step in stepping if step.done()]
        else:
            done = wait(stepping, return_when=FIRST_COMPLETED).done
        finished = sorted(((stepping.pop(step), step) for step in done), key=lambda pair: pair[0].number)
        ready = [e for e, step in finished if turns.settle(e, step)]


def _shared_requests(ready: list[_Episode]) -> list[list[_Episode]]:
    """``ready`` grouped into requests: the rollouts of a prompt at their first generated turn share one (identical
    contexts: the engine encodes the prompt once and draws ``n`` samples); any other episode is a request alone."""
    groups: dict[tuple[int, ...], list[_Episode]] = {}
    for e in ready:
        groups.setdefault((e.index,) if not e.turns and not e.replaying else (e.index, e.number), []).append(e)
    return list(groups.values())


def _request_seed(seed: int, episode: int, turn: int) -> int:
    """The sampling seed of an episode's turn (56 bits, so that the ``+ k`` of a group's samples stays in range)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{episode}:{turn}".encode()).digest()[:7], "big")


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


def _truncated(episode: _Episode) -> bool:
    """Whether a token cap, not the model or the turn rules, ended ``episode`` without an answer: the episode-wide
    response budget or the context limit stopped it while the environment expected another turn, or its last turn
    stopped at the per-turn cap and held no answer (the environment then ended it as unanswered)."""
    return not episode.env.done or (episode.cut and episode.env.outcome().answer is None)


def _over_budget(episode: _Episode, config: EpisodeConfig) -> bool:
    return config.max_response_tokens is not None and episode.context.num_policy_tokens >= config.max_response_tokens


def _budgeted(sampling: SamplingConfig, active: list[_Episode], config: EpisodeConfig) -> SamplingConfig:
    """Cap this turn's new tokens so no episode exceeds its total response budget."""
    if config.max_response_tokens is None:
        return sampling
    left = min(config.max_response_tokens - e.context.num_policy_tokens for e in active)
    return dataclasses.replace(sampling, max_new_tokens=max(1, min(sampling.max_new_tokens, left)))
