"""The prompt batches a GRPO run iterates over."""

from __future__ import annotations

from typing import Iterator, Sequence

from lfpc.data.records import Sample


class PromptBatch:
    """The prompts of one GRPO step (a DataLoader ``collate_fn``).

    Deliberately neither a sequence nor a dataclass: Lightning's precision plugins (``bf16-true``) walk every batch
    collection to cast tensors and reject frozen dataclasses such as :class:`Sample`, so the batch is opaque.
    """

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)
