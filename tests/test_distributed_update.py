"""The token-mean loss over data-parallel ranks (FSDP2 on 2 gloo processes): the gradient of a global mini-batch
split over ranks equals the single-process gradient on the whole mini-batch, whatever each rank's token count."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from torch.distributed.device_mesh import init_device_mesh

from lfpc.distributed import full_named_tensors
from lfpc.grpo.objective import PolicyLossConfig
from lfpc.grpo.update import PolicyUpdate
from lfpc.model.loading import load_model
from lfpc.rollout.codec import ChatCodec
from lfpc.training.sharding import shard_policy

# short completions on rank 0, long ones on rank 1: the mean of per-rank token means would weigh them equally
REPLIES = ("<answer>A</answer>", "<answer>B</answer>",
           "I need a closer look at the upper left corner before I can answer. <answer>C</answer>",
           "The object is small and the view is coarse, so I zoom in on the middle first. <answer>D</answer>")
ADVANTAGES = torch.tensor([1.0, -0.5, -1.0, 0.5])


def contexts(model_dir: str, image_path: str) -> tuple[list, ChatCodec]:
    codec = ChatCodec.for_model(model_dir, 256)
    image = Image.open(image_path).convert("RGB").resize((112, 84))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]}]
    out = []
    for reply in REPLIES:
        context = codec.start(messages, [image])
        context.extend(codec.tokenizer.encode(reply, add_special_tokens=False) + [codec.im_end_id], from_policy=True)
        out.append(context)
    return out, codec


def updated_weights(model_dir: str, image_path: str, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
    """The weights after one SGD step of the token-mean GRPO loss on this rank's share of the 4 trajectories."""
    batch, codec = contexts(model_dir, image_path)
    model = load_model(model_dir).train()
    if world > 1:
        shard_policy(model, init_device_mesh("cpu", (world,), mesh_dim_names=("data_parallel",)))
    update = PolicyUpdate(model, torch.optim.SGD(model.parameters(), lr=1.0), PolicyLossConfig(), codec.pad_id,
                          codec.image_pad_id, mini_batch_size=len(batch) // world, micro_batch_size=1,
                          max_grad_norm=1e9)
    share = slice(rank * len(batch) // world, (rank + 1) * len(batch) // world)
    update(batch[share], ADVANTAGES[share])
    return dict(full_named_tensors(model))


def _rank(rank: int, world: int, port: int, model_dir: str, image_path: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        weights = updated_weights(model_dir, image_path, rank, world)
        if rank == 0:
            torch.save(weights, out)
    finally:
        dist.destroy_process_group()


def test_two_ranks_take_the_global_token_mean(tiny_model_dir, noise_sample, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "weights.pt"
    # fork: the children reuse the imported modules (spawning re-imports transformers, a minute on 2 loaded cores)
    mp.start_processes(_rank, args=(2, port, str(tiny_model_dir), noise_sample.image_path, str(out)), nprocs=2,
                       start_method="fork")
    sharded = torch.load(out)
    single = updated_weights(str(tiny_model_dir), noise_sample.image_path)
    initial = load_model(tiny_model_dir).state_dict()
    moved = 0
    for name, weight in single.items():
        delta, expected = sharded[name] - initial[name], weight - initial[name]
        torch.testing.assert_close(delta, expected, atol=1e-6, rtol=1e-4, msg=name)
        moved += int(expected.abs().max() > 1e-4)
    assert moved > len(single) // 2  # the step moved most tensors, so equal deltas are not trivially zero
