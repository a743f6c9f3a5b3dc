"""Token-in/token-out rollout contexts and the interface every generation backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, runtime_checkable

import torch
from PIL import Image


@dataclass
class Context:
    """A growing multi-turn sequence: token ids, which tokens the policy produced, and the ordered images.

    ``policy_mask[i]`` is 1 for tokens sampled from the policy and 0 for prompt / tool-response tokens.
    ``logprobs[i]`` is the sampling log-prob of policy tokens (0.0 elsewhere). ``pixel_values[k]`` and
    ``image_grid_thw[k]`` are the processor outputs for ``images[k]``, computed once when the image is added.
    """

    token_ids: list[int]
    policy_mask: list[int]
    logprobs: list[float]
    images: list[Image.Image] = field(default_factory=list)
    pixel_values: list[torch.Tensor] = field(default_factory=list)
    image_grid_thw: list[torch.Tensor] = field(default_factory=list)

    def extend(self, token_ids: list[int], from_policy: bool, logprobs: list[float] | None = None) -> None:
        """Append tokens, marking them as policy samples (with their log-probs) or as environment tokens."""
        self.token_ids.extend(token_ids)
        self.policy_mask.extend([int(from_policy)] * len(token_ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(token_ids))

    def copy(self) -> "Context":
        """An independent copy of the sequence that shares the (immutable) image objects and their tensors."""
        return Context(token_ids=list(self.token_ids), policy_mask=list(self.policy_mask),
                       logprobs=list(self.logprobs), images=list(self.images),
                       pixel_values=list(self.pixel_values), image_grid_thw=list(self.image_grid_thw))

    def policy_turns(self) -> list[list[int]]:
        """The token ids of each assistant turn, in order: the maximal runs of policy tokens (a turn is always
        followed by environment tokens or the end of the sequence)."""
        turns: list[list[int]] = []
        for index, (token, from_policy) in enumerate(zip(self.token_ids, self.policy_mask)):
            if from_policy:
                if index == 0 or not self.policy_mask[index - 1]:
                    turns.append([])
                turns[-1].append(token)
        return turns

    @property
    def num_policy_tokens(self) -> int:
        """Number of tokens sampled from the policy so far."""
        return sum(self.policy_mask)


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings for one generation call; ``temperature == 0`` means greedy."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    suppress_token_ids: tuple[int, ...] = ()  # never sampled (e.g. vision placeholders)
    seed: int | None = None  # a streaming engine's per-request seed (request k of a group draws with seed + k)


@dataclass
class Completion:
    """The tokens a backend generated for one context, their log-probs, and why it stopped."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (a stop token, included in token_ids) or "length"


class RolloutEngine(Protocol):
    """A generation backend: continues a batch of contexts and accepts updated policy weights."""

    def generate(self, contexts: list[Context], sampling: SamplingConfig) -> list[Completion]:
        """Generate one continuation per context (token-in/token-out, images included)."""
        ...

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy the given full (unsharded) parameters into the engine's model, in place."""
        ...

    def sleep(self) -> None:
        """Release accelerator memory until the next call (during the policy update); may do nothing."""
        ...


@runtime_checkable
class StreamingEngine(RolloutEngine, Protocol):
    """A backend that takes requests while it generates and hands back each one as it finishes (vLLM), so that the
    episode runner can prepare an episode's next turn while the others are still generating."""

    def submit(self, contexts: list[Context], sampling: SamplingConfig) -> int:
        """Queue one continuation per context (identical contexts may share their prompt's work); returns a ticket."""
        ...

    def poll(self) -> list[tuple[int, list[Completion]]]:
        """Advance generation by one engine step; returns the tickets whose every completion is finished, each with
        its completions in the order of the submitted contexts."""
        ...
