"""A rollout engine for benchmarks: the real model generates every turn in full, a script decides what it said.

A random-weight policy never emits a valid tool call, so its episodes would skip the crop path this benchmark
measures. :class:`ScriptedCropPolicy` runs the wrapped engine's generation (all model work happens and is timed),
then replaces each completion with a scripted turn: ``crops`` zoom-ins on boxes shrinking around the image centre
(half, then a quarter, ... of each side of the displayed image), then ``<answer>A</answer>``. The environment,
crops, processor and reward then run exactly as in training.
"""

from __future__ import annotations

from typing import Iterable

import torch

from benchmarks.instrument import SectionTimer
from lfpc.agent.prompt import tool_call_text
from lfpc.rollout.base import Completion, Context, RolloutEngine, SamplingConfig
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
