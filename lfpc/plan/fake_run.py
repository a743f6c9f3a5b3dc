"""Run the project's own training code at real shapes without memory or weights: fake tensors for everything the
model and optimizer hold or compute, real tensors for the small integer metadata (token ids, masks, image grids)
whose values the code branches on, and a fake process group of the launch's world size for FSDP2."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only

# An op on real tensors only runs for real when its outputs hold at most this many elements (token ids, masks,
# M-RoPE positions, window indices); anything larger (a padding mask of B x T x T) is only shaped.
REAL_METADATA_NUMEL = 1 << 24


class MetadataOnRealTensors(TorchDispatchMode):
    """Ops touching a fake tensor run in ``fake`` (shapes only); ops on real tensors alone run for real when their
    outputs are small (or their output shape depends on values), so the model's data-dependent Python works.
    A scalar read of a fake tensor (``loss.item()``) gives 0: statistics are meaningless in a plan, memory is not."""

    def __init__(self, fake: FakeTensorMode) -> None:
        super().__init__()
        self.fake = fake

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if any(isinstance(t, FakeTensor) for t in tensors):
            if func is torch.ops.aten._local_scalar_dense.default:
                return False if tensors[0].dtype == torch.bool else 0
            with self.fake:
                return func(*args, **kwargs)
        try:  # the output's size, from the meta kernel (no data)
            meta_kwargs = tree_map_only(torch.Tensor, _on_meta, kwargs)
            if "device" in kwargs:  # a factory: its size, not its allocation
                meta_kwargs["device"] = torch.device("meta")
            shaped = func(*tree_map_only(torch.Tensor, _on_meta, args), **meta_kwargs)
        except Exception:  # nonzero, item, ops without a meta kernel: the values decide, run for real
            return func(*args, **kwargs)
        outputs = [t for t in tree_flatten(shaped)[0] if isinstance(t, torch.Tensor)]
        if sum(t.numel() for t in outputs) <= REAL_METADATA_NUMEL:
            return func(*args, **kwargs)
        with self.fake:
            return func(*args, **kwargs)


def _on_meta(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype, device="meta")


@contextmanager
def fake_process_group(world_size: int) -> Iterator[DeviceMesh | None]:
    """A fake process group of ``world_size`` ranks (collectives do nothing) and its one-dimensional
    ``data_parallel`` mesh, as the trainer's ModelParallelStrategy builds it; torch.distributed is left as found."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise RuntimeError("the planner needs its own (fake) process group; call it before torch.distributed starts")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        yield init_device_mesh("cpu", (world_size,), mesh_dim_names=("data_parallel",))
    finally:
        dist.destroy_process_group()


def fake_mode() -> FakeTensorMode:
    """The fake-tensor mode of a plan: real tensors may flow in (the metadata), the fake device is the CPU."""
    return FakeTensorMode(allow_non_fake_inputs=True)
