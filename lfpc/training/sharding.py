"""FSDP2 sharding of a Qwen2.5-VL policy (full or LoRA); its full weights are read back with
:func:`lfpc.distributed.full_named_tensors`."""

from __future__ import annotations

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

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
