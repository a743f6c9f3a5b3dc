"""FSDP2 on 2 gloo ranks gives the same update as one process on the union of the ranks' data.

Each rank builds the tiny Qwen2.5-VL sharded with :func:`load_sharded` (the weights read by rank 0 only, as training
builds it) and updates on its own half of 4 fixed contexts; one
process updates an unsharded copy on all 4. Plain SGD keeps the update linear in the gradient, so a wrong gradient
reduction (a sum instead of the mean over ranks) or a wrong split (both ranks on the same contexts) changes the
result. Every completion has the same number of tokens, so the per-rank token means average to the global one.
The ranks meet through a file store: no network port to pick. A LoRA policy (PEFT adapters, base frozen) is sharded
and updated the same way, and its merged weights gathered from the shards match the single process's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from torch.distributed.device_mesh import init_device_mesh

from lfpc.distributed import full_named_tensors
from lfpc.grpo.objective import PolicyLossConfig
from lfpc.grpo.update import PolicyUpdate
from lfpc.model.checkpointing import enable_activation_checkpointing
from lfpc.model.loading import empty_model, load_model
from lfpc.model.lora import LoraSettings, apply_lora, policy_named_tensors
from lfpc.rollout.codec import ChatCodec
from lfpc.training.sharding import load_sharded

pytestmark = pytest.mark.slow

ADVANTAGES = torch.tensor([1.0, -0.5, 0.25, -1.5])
LORA = LoraSettings(r=4, alpha=8.0)


def fixed_contexts(codec: ChatCodec) -> list:
    """Four completions of one two-image prompt (the vision tower encodes each image on its own), one letter each
    (same token counts)."""
    images = [Image.fromarray(np.random.RandomState(seed).randint(0, 255, size, dtype=np.uint8))
              for seed, size in ((0, (84, 112, 3)), (1, (56, 56, 3)))]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Which letter?"}]}]
    contexts = []
    for letter in "ABCD":
        context = codec.start(messages, images)
        context.extend(codec.completion_ids(f"<answer>{letter}</answer>"), from_policy=True)
        contexts.append(context)
    assert len({c.num_policy_tokens for c in contexts}) == 1
    return contexts


def sgd_update(model, codec: ChatCodec, contexts: list, advantages: torch.Tensor) -> None:
    """One PolicyUpdate step with plain SGD (lr 0.1, no clipping), micro-batches of one context."""
    PolicyUpdate(model, torch.optim.SGD(model.parameters(), lr=0.1), PolicyLossConfig(), codec.pad_id,
                 codec.image_pad_id, mini_batch_size=len(contexts), micro_batch_size=1, max_grad_norm=1e9
                 )(contexts, advantages)


def policy(model_dir: str, lora: bool, meta: bool = False, checkpointing: bool = False) -> torch.nn.Module:
    """The tiny model (its meta-device skeleton when ``meta``), with activation checkpointing when ``checkpointing``
    and LoRA adapters (seeded) when ``lora``."""
    model = (empty_model if meta else load_model)(model_dir)
    if checkpointing:
        enable_activation_checkpointing(model.train())
    return apply_lora(model, LORA, seed=0) if lora else model


def sharded_policy(model_dir: str, lora: bool, world: int, checkpointing: bool = False) -> torch.nn.Module:
    """The policy sharded over ``world`` gloo ranks as training builds it: weights read by rank 0 only."""
    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("data_parallel",))["data_parallel"]
    return load_sharded(lambda meta: policy(model_dir, lora, meta, checkpointing), mesh)


def update_on_rank(rank: int, world: int, store: str, model_dir: str, out: str, lora: bool = False,
                   checkpointing: bool = False) -> None:
    """Rank ``rank`` of ``world``: shard, update on its share of the contexts, rank 0 saves the full weights (merged
    ones for a LoRA policy)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        codec = ChatCodec.for_model(model_dir, 256)
        model = sharded_policy(model_dir, lora, world, checkpointing)
        share = slice(rank * 4 // world, (rank + 1) * 4 // world)
        sgd_update(model, codec, fixed_contexts(codec)[share], ADVANTAGES[share])
        full = dict((policy_named_tensors if lora else full_named_tensors)(model))
        if rank == 0:
            torch.save(full, out)
        dist.barrier()  # leave together: a rank tearing gloo down while the other still works aborts it
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_two_ranks_update_like_one_process_on_all_the_data(tiny_model_dir, codec, tmp_path, checkpointing):
    # checkpointed: decoder layers and vision blocks, and each image's pass through the vision tower,
    # recomputed under FSDP2
    out = tmp_path / "sharded.pt"
    mp.spawn(update_on_rank, args=(2, str(tmp_path / "store"), str(tiny_model_dir), str(out), False, checkpointing),
             nprocs=2)
    sharded = torch.load(out)
    initial = load_model(tiny_model_dir)
    single = load_model(tiny_model_dir)
    sgd_update(single, codec, fixed_contexts(codec), ADVANTAGES)
    before = initial.state_dict()
    assert max(float((v - before[k]).abs().max()) for k, v in single.state_dict().items()) > 1e-3
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(sharded[name], tensor, atol=1e-6, rtol=1e-4, msg=name)


def test_two_ranks_update_a_lora_policy_like_one_process(tiny_model_dir, codec, tmp_path):
    out = tmp_path / "sharded.pt"
    mp.spawn(update_on_rank, args=(2, str(tmp_path / "store"), str(tiny_model_dir), str(out), True), nprocs=2)
    sharded = torch.load(out)
    single = policy(str(tiny_model_dir), lora=True)
    sgd_update(single, codec, fixed_contexts(codec), ADVANTAGES)
    merged, before = dict(policy_named_tensors(single)), load_model(tiny_model_dir).state_dict()
    changed = {k for k, v in merged.items() if not torch.equal(v, before[k])}
    assert len(changed) == 14 and max(float((merged[k] - before[k]).abs().max()) for k in changed) > 1e-4
    assert sharded.keys() == merged.keys()
    for name, tensor in merged.items():
        torch.testing.assert_close(sharded[name], tensor, atol=1e-6, rtol=1e-4, msg=name)


def load_on_rank(rank: int, world: int, store: str, model_dir: str, out: str, lora: bool) -> None:
    """Rank ``rank``: build the sharded policy, recording what each call of ``build`` returned (whether it read
    weights, whether every parameter was on the meta device); save the gathered full tensors and buffers."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        calls = []

        def build(meta: bool) -> torch.nn.Module:
            model = policy(model_dir, lora, meta)
            calls.append({"meta": meta, "all_params_meta": all(p.is_meta for p in model.parameters())})
            return model

        mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("data_parallel",))["data_parallel"]
        model = load_sharded(build, mesh)
        full = dict(full_named_tensors(model))
        buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
        torch.save({"calls": calls, "full": full, "buffers": buffers}, f"{out}.{rank}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def reduces_on_rank(rank: int, world: int, store: str, model_dir: str, out: str) -> None:
    """Rank ``rank``: one update of 2 micro-batches with the gradient sync deferred, one without; rank 0 saves how
    many FSDP2 gradient reductions (reduce-scatters) each ran, from the profiler's record of them."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        codec = ChatCodec.for_model(model_dir, 256)
        model = sharded_policy(model_dir, False, world)
        contexts = fixed_contexts(codec)[rank * 2:(rank + 1) * 2]
        counts = {}
        for defer in (True, False):
            update = PolicyUpdate(model, torch.optim.SGD(model.parameters(), lr=0.1), PolicyLossConfig(),
                                  codec.pad_id, codec.image_pad_id, mini_batch_size=2, micro_batch_size=1,
                                  defer_grad_sync=defer)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                update(contexts, ADVANTAGES[rank * 2:(rank + 1) * 2])
            counts[defer] = sum(1 for e in profile.events() if e.name.startswith("FSDP::post_backward_reduce"))
        if rank == 0:
            torch.save(counts, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_only_rank_0_reads_the_weights_and_every_rank_gets_rank_0s_model(tiny_model_dir, tmp_path, lora):
    out = str(tmp_path / "loaded")
    mp.spawn(load_on_rank, args=(2, str(tmp_path / "store"), str(tiny_model_dir), out, lora), nprocs=2)
    ranks = [torch.load(f"{out}.{rank}") for rank in range(2)]
    # rank 1 built the skeleton only, every parameter on the meta device until its shards arrived; rank 0 read once
    assert ranks[1]["calls"] == [{"meta": True, "all_params_meta": True}]
    assert ranks[0]["calls"] == [{"meta": False, "all_params_meta": False}, {"meta": True, "all_params_meta": True}]
    reference = policy(str(tiny_model_dir), lora)  # one process, as before sharding existed
    expected, buffers = reference.state_dict(), dict(reference.named_buffers())
    assert any("inv_freq" in name for name in buffers)  # rotary buffers: outside the state dict, broadcast too
    for rank in ranks:
        assert rank["full"].keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(rank["full"][name], tensor), name
        assert rank["buffers"].keys() == buffers.keys()
        for name, tensor in buffers.items():
            assert torch.equal(rank["buffers"][name], tensor), name


def test_gradients_are_reduced_once_per_optimizer_step_not_per_micro_batch(tiny_model_dir, tmp_path):
    out = tmp_path / "counts.pt"
    mp.spawn(reduces_on_rank, args=(2, str(tmp_path / "store"), str(tiny_model_dir), str(out)), nprocs=2)
    counts = torch.load(out)
    groups = counts[True]  # one reduce-scatter per FSDP2 group (each block and layer, and the root)
    assert groups > 0 and counts[False] == 2 * groups
