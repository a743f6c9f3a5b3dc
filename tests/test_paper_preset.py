"""The paper-scale preset (paper Sec. 4): global batch sizes divided over 8 or 16 ranks, and its precision: float32
master weights and Adam states, bf16 FSDP2 compute, bf16 vLLM rollouts. In bf16, AdamW at lr 1e-6 (the paper's)
leaves most weights unchanged (a step is below bf16's resolution), so the policy would barely train."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
import torch.distributed as dist
from hydra import compose, initialize_config_dir
from PIL import Image
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

import lfpc
from lfpc import config as C
from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.rollout.vllm_engine import memory_share
from lfpc.training.module import GRPOModule
from lfpc.training.run import build_strategy
from lfpc.training.sharding import resident_state_bytes


@pytest.fixture(scope="module")
def paper_cfg():
    with initialize_config_dir(config_dir=str(lfpc.PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["size=paper", "+stage=infogap", "output_dir=/tmp/out",
                                            "cache_dir=/tmp/cache"])


def test_global_batch_sizes_are_divided_over_the_ranks_of_every_node(paper_cfg):
    one_node = paper_cfg  # 256 prompts and mini-batches of 32 prompts x 16 rollouts, over 8 ranks
    assert C.per_rank(one_node, "prompts_per_step") == 32 and C.grpo_config(one_node).mini_batch_size == 64
    two_nodes = OmegaConf.merge(paper_cfg, {"trainer": {"num_nodes": 2}})
    assert C.world_size(two_nodes) == 16 and build_strategy(two_nodes.trainer)._data_parallel_size == 16
    assert C.per_rank(two_nodes, "prompts_per_step") == 16 and C.grpo_config(two_nodes).mini_batch_size == 32
    assert C.updates_per_step(one_node) == C.updates_per_step(two_nodes) == 8  # the same optimizer steps
    small = OmegaConf.merge(paper_cfg, {"trainer": {"devices": 2, "num_nodes": 2}})  # world 4 = 2 nodes x 2
    assert build_strategy(small.trainer)._data_parallel_size == 4 and C.per_rank(small, "prompts_per_step") == 64
    with pytest.raises(ValueError, match="must divide by the 3 ranks"):
        C.per_rank(OmegaConf.merge(paper_cfg, {"trainer": {"devices": 3}}), "prompts_per_step")


def test_paper_preset_keeps_float32_master_weights_and_rolls_out_in_bf16(paper_cfg):
    assert paper_cfg.trainer.precision == "32-true"  # bf16-true would cast the master weights to bf16
    assert paper_cfg.model.dtype == "float32" and paper_cfg.model.fsdp_param_dtype == "bfloat16"
    assert paper_cfg.rollout.dtype == "bfloat16"


def test_fsdp2_step_at_lr_1e6_moves_float32_master_weights_with_bf16_compute(paper_cfg, tiny_model_dir, codec,
                                                                            noise_sample, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        module = GRPOModule(C.policy_config(paper_cfg, str(tiny_model_dir)), C.grpo_config(paper_cfg),
                            C.episode_config(paper_cfg), C.reward_config(paper_cfg), display_sizer=None)
        module._device_mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
        module.configure_model()
        policy, optimizer = module.policy, module.configure_optimizers()
        assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in policy.parameters())
        assert optimizer.defaults["fused"] is True  # one kernel per step, no foreach temporary of the states
        compute = []
        policy.model.language_model.layers[0].register_forward_hook(lambda m, a, out: compute.append(out.dtype))
        image = Image.open(noise_sample.image_path).convert("RGB").resize((112, 84))
        context = codec.start([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]}],
                              [image])
        context.extend(codec.tokenizer.encode("<answer>C</answer>", add_special_tokens=False), from_policy=True)
        before = {name: p.full_tensor().clone() for name, p in policy.named_parameters()}
        logprobs = sequence_logprobs(policy, [context], codec.pad_id, codec.image_pad_id)["logprobs"]
        (-(logprobs * shifted_policy_tensors([context])["mask"]).sum()).backward()
        optimizer.step()
        assert compute and set(compute) == {torch.bfloat16}
        assert all(state["exp_avg_sq"].dtype == torch.float32 for state in optimizer.state.values())
        for name in ("model.language_model.layers.0.self_attn.q_proj.weight", "model.language_model.norm.weight"):
            moved = (policy.get_parameter(name).full_tensor() != before[name]).float().mean()
            assert moved > 0.9, (name, float(moved))  # in bf16: a few percent, and none of the norm weights
    finally:
        dist.destroy_process_group()


def test_paper_preset_sizes_vllm_from_the_gpu_and_discards_its_weights_while_asleep(paper_cfg):
    r = paper_cfg.rollout
    assert r.sleep_level == 2 and r.gpu_memory_utilization is None  # null: sized from the GPU at start
    assert r.max_num_seqs == 256 and r.max_num_batched_tokens == 16384
    # an 80 GB H100 (torch reports 79.2 GiB) next to the 7B's trainer state per rank: 8.292e9 params / 8 ranks x
    # (weight + gradient + 2 AdamW moments) x 4 bytes = 15.45 GiB; 7 GiB reserved
    gib = 2 ** 30
    share = memory_share(int(79.2 * gib), int(8.292e9 / 8 * 16), r.memory_reserve_gib)
    assert share == pytest.approx((79.2 - 8.292e9 * 2 / gib - 7) / 79.2, abs=1e-3)  # 0.7165
    assert memory_share(int(139.8 * gib), int(8.292e9 / 8 * 16), r.memory_reserve_gib) == pytest.approx(0.8394,
                                                                                                     abs=1e-3)  # H200
    assert memory_share(int(79.2 * gib), 0, r.memory_reserve_gib) == 0.9  # nothing else on the GPU: vLLM's own 0.9
    with pytest.raises(ValueError, match="only 0.00 of the GPU's 79.2 GiB is left for vLLM after the trainer's 72.0"):
        memory_share(int(79.2 * gib), 72 * gib, r.memory_reserve_gib)  # 4.5B params unsharded on one card


def test_resident_state_counts_a_gradient_and_two_adam_moments_per_trainable_weight():
    layer = torch.nn.Linear(4, 3)  # 15 float32 parameters
    assert resident_state_bytes(layer) == 15 * 4 * 4
    layer.bias.requires_grad_(False)
    assert resident_state_bytes(layer) == 12 * 4 * 4 + 3 * 4
