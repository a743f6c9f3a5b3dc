"""FSDP2 sharding of a Qwen2.5-VL policy (full or LoRA); its full weights are read back with
:func:`lfpc.distributed.full_named_tensors`."""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from lfpc.model.loading import DTYPES
from lfpc.model.lora import base_model


def shard_policy(model: torch.nn.Module, mesh, param_dtype: str = "float32", reduce_dtype: str = "float32") -> None:
    """``fully_shard`` each vision block and decoder layer, then the whole model (FSDP2); a LoRA (PEFT) policy is
    sharded the same way, its frozen base weights and trainable adapters in the same groups."""
    policy = MixedPrecisionPolicy(param_dtype=DTYPES[param_dtype], reduce_dtype=DTYPES[reduce_dtype])
    inner = base_model(model).model
    for block in [*inner.visual.blocks, *inner.language_model.layers]:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def load_sharded(build: Callable[[bool], torch.nn.Module], mesh, param_dtype: str = "float32") -> torch.nn.Module:
    """A model sharded over ``mesh`` whose weights are read from disk by rank 0 only.

    ``build(meta)`` returns the model: loaded (``meta`` False) or its skeleton on the meta device (True). Every rank
    shards a skeleton (:func:`shard_policy`); rank 0 alone also builds the loaded model and broadcasts its full state
    dict, tensor by tensor, each rank keeping its own shards (``set_model_state_dict`` with
    ``broadcast_from_rank0``), then the buffers outside the state dict (the rotary ``inv_freq``). So a node holds
    one full copy on the host, not one per rank.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    loaded = build(False) if dist.get_rank() == 0 else None
    model = build(True)
    shard_policy(model, mesh, param_dtype)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, loaded.state_dict() if loaded is not None else {}, options=options)
    device = next(model.parameters()).device
    sources = dict(loaded.named_buffers()) if loaded is not None else {}
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            value = (sources[name] if loaded is not None else torch.empty_like(buffer, device="cpu")).to(device)
            dist.broadcast(value, src=0)
            owner, _, attribute = name.rpartition(".")
            model.get_submodule(owner).register_buffer(attribute, value, persistent=False)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"rank 0's weights did not reach {len(left)} tensors, e.g. {left[:3]}")
    return model


def resident_state_bytes(model: torch.nn.Module) -> int:
    """Bytes this rank keeps of ``model`` between updates (planned, from the parameters): its parameter shards,
    plus a gradient and AdamW's two moments in the parameter's dtype for each trainable one."""
    total = 0
    for parameter in model.parameters():
        local = parameter.to_local() if isinstance(parameter, DTensor) else parameter
        total += local.numel() * local.element_size() * (4 if parameter.requires_grad else 1)
    return total
