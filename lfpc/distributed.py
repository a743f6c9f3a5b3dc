"""What the ranks of a data-parallel run share: a (possibly FSDP2-sharded) model's full weights and their digest, each
rank's share of a mean over every rank's items, and gathering a value from every rank. Every function works
outside torch.distributed too (one process)."""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def full_named_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield every state-dict entry as a full tensor, in the same order on every rank (collective under FSDP2)."""
    for name, tensor in model.state_dict().items():
        yield name, tensor.full_tensor() if isinstance(tensor, DTensor) else tensor.detach()


def weights_digest(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over names and float32 bytes of full tensors (to check that ranks or replicas agree)."""
    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_share(local: float, device: torch.device | str = "cpu") -> float:
    """``world_size x local / (local summed over ranks)``: turns a mean over this rank's ``local`` items into its part
    of the mean over every rank's items, once data parallelism averages gradients over ranks (1 without
    torch.distributed). A collective: every rank must call it."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1.0
    total = torch.tensor(float(local), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return dist.get_world_size() * float(local) / max(float(total), 1.0)


def gather_from_ranks(value):
    """Every rank's ``value`` as a list (just ``[value]`` outside a distributed run)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
