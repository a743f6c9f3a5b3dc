"""A rollout engine for benchmarks: the real model generates every turn in full, a script decides what it said.

A random-weight policy never emits a valid tool call, so its episodes would skip the crop path this benchmark
measures. :func:`scripted_policy` runs the wrapped engine's generation (all model work happens and is timed),
then replaces each completion with a scripted turn: ``crops`` zoom-ins on boxes shrinking around the image centre
(half, then a quarter, ... of each side of the displayed image), then ``<answer>A</answer>``. The environment,
crops, processor and reward then run exactly as in training.
"""

from __future__ import annotations

from typing import Iterable

import torch

from benchmarks.instrument import SectionTimer
from lfpc.agent.prompt import tool_call_text
from lfpc.rollout.base import Completion, Context, RolloutEngine, SamplingConfig, StreamingEngine
from lfpc.rollout.codec import ChatCodec


class ScriptedCropPolicy:
    """Implements :class:`lfpc.rollout.base.RolloutEngine` around ``engine``; counts model time and tokens."""

    def __init__(self, engine: RolloutEngine, codec: ChatCodec, crops: int, timer: SectionTimer) -> None:
        self.engine, self.codec, self.crops, self.timer = engine, codec, crops, timer
        self.generated_tokens = 0

    def generate(self, contexts: list[Context], sampling: SamplingConfig) -> list[Completion]:
        """Generate with the wrapped engine (timed as ``model``), then return the scripted turn of each context."""
        with self.timer.section("model"):
            completions = self.engine.generate(contexts, sampling)
        self.generated_tokens += sum(len(c.token_ids) for c in completions)
        return [self._scripted(context) for context in contexts]

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Forward the weight push to the wrapped engine."""
        self.engine.load_weights(named_tensors)

    def sleep(self) -> None:
        """Forward to the wrapped engine (vLLM on CUDA frees its KV cache and weights)."""
        self.engine.sleep()

    def _scripted(self, context: Context) -> Completion:
        turn = _assistant_turns(context.policy_mask)
        text = scripted_turn_text(self.codec.image_size(context.image_grid_thw[0]), turn, self.crops)
        ids = self.codec.completion_ids(text)
        return Completion(token_ids=ids, logprobs=[0.0] * len(ids), finish_reason="stop")


class ScriptedStreamingPolicy(ScriptedCropPolicy):
    """The same around a streaming engine (vLLM, :class:`lfpc.rollout.base.StreamingEngine`): its submits and polls
    are the model time, and each finished ticket's completions are replaced by the scripted turns."""

    def __init__(self, engine: StreamingEngine, codec: ChatCodec, crops: int, timer: SectionTimer) -> None:
        super().__init__(engine, codec, crops, timer)
        self._contexts: dict[int, list[Context]] = {}

    def submit(self, contexts: list[Context], sampling: SamplingConfig) -> int:
        """Submit to the wrapped engine (timed as ``model``)."""
        with self.timer.section("model"):
            ticket = self.engine.submit(contexts, sampling)
        self._contexts[ticket] = contexts
        return ticket

    def poll(self) -> list[tuple[int, list[Completion]]]:
        """One step of the wrapped engine (timed as ``model``); finished tickets get the scripted turns."""
        with self.timer.section("model"):
            finished = self.engine.poll()
        self.generated_tokens += sum(len(c.token_ids) for _, completions in finished for c in completions)
        return [(ticket, [self._scripted(c) for c in self._contexts.pop(ticket)]) for ticket, _ in finished]


def scripted_policy(engine: RolloutEngine, codec: ChatCodec, crops: int, timer: SectionTimer) -> ScriptedCropPolicy:
    """The scripted policy around ``engine``: streaming when the engine streams, so episodes run as in training."""
    kind = ScriptedStreamingPolicy if isinstance(engine, StreamingEngine) else ScriptedCropPolicy
    return kind(engine, codec, crops, timer)


def scripted_turn_text(display_size: tuple[int, int], turn: int, crops: int) -> str:
    """Assistant turn ``turn`` (0-based) of the script on an image displayed at ``display_size``: a zoom-in on the
    centred box of ``0.5 ** (turn + 1)`` of each side while ``turn < crops``, then ``<answer>A</answer>``."""
    if turn < crops:
        return tool_call_text(_centred_box(display_size, 0.5 ** (turn + 1)))
    return "<answer>A</answer>"


def _assistant_turns(policy_mask: list[int]) -> int:
    """How many assistant turns a context holds (runs of policy tokens)."""
    return sum(1 for i, m in enumerate(policy_mask) if m and (i == 0 or not policy_mask[i - 1]))


def _centred_box(size: tuple[int, int], fraction: float) -> list[int]:
    """The centred box covering ``fraction`` of each side of an image of ``size``."""
    width, height = size
    return [round(width * (1 - fraction) / 2), round(height * (1 - fraction) / 2),
            round(width * (1 + fraction) / 2), round(height * (1 + fraction) / 2)]
