"""The prompt batches a GRPO run iterates over: which prompts each rank gets at each step, resumable mid-epoch."""

from __future__ import annotations

import hashlib
from typing import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from lfpc.data.records import Sample


class PromptBatch:
    """The prompts of one GRPO step (a DataLoader ``collate_fn``).

    Deliberately neither a sequence nor a dataclass: Lightning's precision plugins (``bf16-true``) walk every batch
    collection to cast tensors and reject frozen dataclasses such as :class:`Sample`, so the batch is opaque.
    """

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)


class StepSampler(Sampler[int]):
    """This rank's prompt indices for GRPO steps ``0 .. num_steps - 1``, a pure function of the step.

    Each pass over the data is one permutation (seeded with ``seed`` + pass) cut into global batches of
    ``per_rank x world_size`` prompts; rank ``r`` takes the ``r``-th slice of each, so ranks never share a prompt.
    Iteration starts at ``start_step``: a resumed run continues with the prompts the interrupted one had next,
    instead of replaying the start of the epoch.
    """

    def __init__(self, num_samples: int, per_rank: int, num_steps: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_step: int = 0) -> None:
        self.steps_per_pass = num_samples // (per_rank * world_size)
        if self.steps_per_pass == 0:
            raise ValueError(f"{num_samples} samples cannot fill one step of {per_rank} prompts x {world_size} ranks")
        self.num_samples, self.per_rank, self.num_steps = num_samples, per_rank, num_steps
        self.rank, self.world_size, self.seed, self.start_step = rank, world_size, seed, start_step

    def __len__(self) -> int:
        return self.num_steps * self.per_rank  # every step, so Lightning's batch counts stay those of the full run

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.num_steps):
            yield from self.step_indices(step)

    def step_indices(self, step: int) -> list[int]:
        """The sample indices this rank trains on at GRPO step ``step``."""
        return self._rank_slice(step, self.rank)

    def _rank_slice(self, step: int, rank: int) -> list[int]:
        """The sample indices rank ``rank`` trains on at GRPO step ``step``."""
        data_pass, position = divmod(step, self.steps_per_pass)
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + data_pass))
        begin = (position * self.world_size + rank) * self.per_rank
        return order[begin:begin + self.per_rank].tolist()

    def refill_indices(self, step: int, round_index: int) -> list[int]:
        """This rank's extra prompts for refill round ``round_index`` (1, 2, ...) of GRPO step ``step`` (dynamic
        sampling, :mod:`lfpc.training.dynamic_sampling`), a pure function of (seed, step, round) like
        :meth:`step_indices`.

        Rounds take consecutive global batches of one permutation, seeded by (seed, step), of the samples not in the
        step's global batch (of all of them if the step uses them all; cyclically when rounds outrun them); rank
        ``r`` takes the ``r``-th slice, so ranks never share a refill prompt.
        """
        used = {i for rank in range(self.world_size) for i in self._rank_slice(step, rank)}
        pool = [i for i in range(self.num_samples) if i not in used] or list(range(self.num_samples))
        key = hashlib.sha256(f"refill:{self.seed}:{step}".encode()).digest()
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(int.from_bytes(key[:7], "big")))
        begin = ((round_index - 1) * self.world_size + self.rank) * self.per_rank
        return [pool[int(order[k % len(pool)])] for k in range(begin, begin + self.per_rank)]


class PromptData(L.LightningDataModule):
    """The training prompts of a run: ``prompts_per_step`` per rank and GRPO step (the global number divided by the
    ranks), for ``num_steps`` steps.

    The loader is built when Lightning asks for it, after a checkpoint is restored, so it starts at the step after
    the restored one (``updates_per_step`` optimizer steps, Lightning's global steps, make one GRPO step).
    """

    def __init__(self, samples: Sequence[Sample], prompts_per_step: int, num_steps: int, updates_per_step: int,
                 seed: int = 0) -> None:
        super().__init__()
        self.samples, self.prompts_per_step, self.num_steps = list(samples), prompts_per_step, num_steps
        self.updates_per_step, self.seed = updates_per_step, seed

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.samples, batch_size=self.prompts_per_step, sampler=self.sampler(),
                          collate_fn=PromptBatch)

    def sampler(self) -> StepSampler:
        """This rank's :class:`StepSampler`, starting at the GRPO step after the trainer's (restored) global step."""
        t = self.trainer
        return StepSampler(len(self.samples), self.prompts_per_step, self.num_steps, t.global_rank, t.world_size,
                           self.seed, start_step=t.global_step // self.updates_per_step)

    def refill(self, step: int, round_index: int) -> list[Sample]:
        """This rank's extra prompts for refill round ``round_index`` of GRPO step ``step`` (dynamic sampling)."""
        return [self.samples[i] for i in self.sampler().refill_indices(step, round_index)]
