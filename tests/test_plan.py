"""The memory planner (lfpc.plan) runs the project's update on fake tensors: its peaks agree with the same passes
run for real and measured by torch's memory tracker, FSDP2 over fake ranks shards the fixed state, and a launch
that cannot fit is refused before anything is built, naming the knob to turn."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import Qwen2_5_VLConfig

from lfpc.model.loading import load_model
from lfpc.plan.memory import MicroBatchTracker, plan_memory, planning_module
from lfpc.plan.planner import WARM_UP, make_plan
from lfpc.plan.preflight import PlanDoesNotFit
from lfpc.plan.trajectories import context_of, worst_case
from lfpc.training.run import train

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def tiny_cfg(tmp_path: Path, model_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"output_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
                                            "model=tiny", f"model.path={model_dir}", "model.build_tiny=false",
                                            "grpo=tiny", "episode.max_context_tokens=2048", *overrides])


def measured_peaks(cfg, model_dir: Path) -> tuple[int, int]:
    """The planner's passes run for real on the tiny model (real weights, real pixels), peaks by MemTracker."""
    config = Qwen2_5_VLConfig.from_pretrained(model_dir)
    module = planning_module(cfg, str(model_dir))
    micro = module.grpo.micro_batch_size
    module.grpo = replace(module.grpo, mini_batch_size=2 * micro)
    module.prepare_policy(lambda: load_model(model_dir))
    optimizer = module.configure_optimizers()
    update = module.policy_update(optimizer, pad_id=0, image_pad_id=config.image_token_id)
    update([context_of(WARM_UP, config, torch.randn)] * micro, torch.zeros(micro))
    longest = context_of(worst_case(cfg), config, torch.randn)
    peaks = []
    for run in (lambda: update.logprobs([longest] * micro),
                lambda: update([longest] * (2 * micro), torch.randn(2 * micro))):
        tracker = MicroBatchTracker(module.policy)  # torch's MemTracker, over several micro-batches
        tracker.track_external(module.policy, optimizer)
        with tracker:
            run()
        peaks.append(sum(s["Total"] for s in tracker.get_tracker_snapshot("peak").values()))
    return peaks[0], peaks[1]


def test_planned_peaks_agree_with_a_real_run_within_10_percent(tmp_path, tiny_model_dir):
    cfg = tiny_cfg(tmp_path, tiny_model_dir)
    planned = plan_memory(cfg, worst_case(cfg), WARM_UP)
    old, update = measured_peaks(cfg, tiny_model_dir)
    assert planned.old_logprobs_peak == pytest.approx(old, rel=0.1)
    assert planned.update_peak == pytest.approx(update, rel=0.1)
    assert planned.update_peak > 10 * planned.resident_total  # activations of 2 x 2,048 tokens dominate


def test_fsdp2_over_fake_ranks_shards_params_and_adam_and_frees_gradients(tmp_path, tiny_model_dir):
    parameters = sum(p.numel() for p in load_model(tiny_model_dir).parameters())
    for ranks in (1, 2):
        cfg = tiny_cfg(tmp_path, tiny_model_dir, "trainer=cpu_fsdp2", f"trainer.devices={ranks}")
        resident = plan_memory(cfg, worst_case(cfg), WARM_UP).resident
        # fp32 parameters and AdamW's two moments, split over the ranks (shards padded to equal size); gradients are
        # freed after each step, so none stay resident between steps
        assert resident.get("Gradient", 0) == 0
        fixed = resident["Parameter"] + resident["Optstate"]
        assert fixed == pytest.approx(12 * parameters / ranks, rel=0.01)


def test_a_launch_that_cannot_fit_is_refused_naming_the_knob(tmp_path, tiny_model_dir):
    overrides = ("plan.preflight=true", "hardware.gpu_memory_gib=0.05", "hardware.reserved_gib=0")
    plan = make_plan(tiny_cfg(tmp_path, tiny_model_dir, *overrides))
    # grpo=tiny: two rows per micro-batch and no token budget, so the longest rows share one
    assert not plan.fits and "grpo.micro_batch_tokens=2048" in plan.text()
    with pytest.raises(PlanDoesNotFit, match=r"update pass at 2048 tokens per row .* grpo\.micro_batch_tokens=2048"):
        train(tiny_cfg(tmp_path, tiny_model_dir, *overrides))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    alone = make_plan(tiny_cfg(tmp_path, tiny_model_dir, *overrides, "grpo.micro_batch_tokens=2048"))
    assert alone.memory.worst_rows_together == 1 and "model.offload_min_tokens=2048" in alone.text()
    roomy = make_plan(tiny_cfg(tmp_path, tiny_model_dir, "hardware.gpu_memory_gib=8", "hardware.reserved_gib=0"))
    assert roomy.fits and "FITS" in roomy.text()


def test_offloaded_activations_leave_the_gpu_in_the_plan(tmp_path, tiny_model_dir):
    """With gradient checkpointing, offload keeps each decoder layer's input in host memory: the plan counts at
    least those ``layers x tokens x hidden`` floats on the host and takes them off the update's GPU peak."""
    common = ("model.gradient_checkpointing=true", "grpo.micro_batch_tokens=2048")
    kept = plan_memory(cfg := tiny_cfg(tmp_path, tiny_model_dir, *common), worst_case(cfg), WARM_UP)
    moved = plan_memory(cfg := tiny_cfg(tmp_path, tiny_model_dir, *common, "model.offload_min_tokens=1024"),
                        worst_case(cfg), WARM_UP)
    text = Qwen2_5_VLConfig.from_pretrained(tiny_model_dir).text_config
    layer_inputs = text.num_hidden_layers * worst_case(cfg).context_tokens * text.hidden_size * 4  # float32
    assert not kept.worst_offloaded and kept.update_host_peak == 0
    assert moved.worst_offloaded and moved.update_host_peak >= layer_inputs
    assert moved.update_peak <= kept.update_peak - 0.9 * layer_inputs, (moved.update_peak, kept.update_peak)


def test_a_lora_policy_plans_adam_states_for_its_adapters_only(tmp_path, tiny_model_dir):
    from lfpc.config import lora_settings
    from lfpc.model.lora import apply_lora

    cfg = tiny_cfg(tmp_path, tiny_model_dir, "+lora=default", "model.lora.r=4")
    adapters = sum(p.numel() for p in apply_lora(load_model(tiny_model_dir), lora_settings(cfg)).parameters()
                   if p.requires_grad)
    resident = plan_memory(cfg, worst_case(cfg), WARM_UP).resident
    assert resident["Optstate"] == pytest.approx(8 * adapters, rel=0.01)  # AdamW's two fp32 moments
