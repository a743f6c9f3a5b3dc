"""Peak memory per rank of the trainer's update and old-log-prob passes, measured by torch's memory tracker while
the project's own :class:`~lfpc.grpo.update.PolicyUpdate` runs on fake tensors at the config's worst-case lengths."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator
from unittest.mock import patch

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.distributed._tools.mem_tracker import MemTracker
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from lfpc import config as C
from lfpc.model.loading import DTYPES
from lfpc.plan.fake_run import MetadataOnRealTensors, fake_mode, fake_process_group
from lfpc.plan.trajectories import Workload, context_of
from lfpc.plan.vision_attention import one_call_vision_attention
from lfpc.training.module import GRPOModule

ARCHITECTURES = Path(__file__).parent / "architectures"
GIB = 2 ** 30


# A plan's fake device is the CPU, so the host memory that activation offload moves saved tensors to is another
# device in it: the meta device, which torch's MemTracker counts apart from the fake CPU (the GPU of the plan).
GPU, HOST = torch.device("cpu"), torch.device("meta")


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per rank: GPU peaks of the old-log-prob pass and of one optimizer step of the update (both including
    what stays resident), the host memory the update's offloaded activations take at most, what stays resident
    between steps (by kind), the parameter count, and how the update runs a worst-case row: the rows of its
    micro-batch and whether its activations are offloaded."""

    old_logprobs_peak: int
    update_peak: int
    update_host_peak: int
    resident: dict[str, int]
    parameters: int
    micro_batch_size: int
    worst_rows_together: int
    worst_offloaded: bool
    trainer_state: int       # what the rollout engine is sized beside (GRPOModule.trainer_state_bytes)

    @property
    def resident_total(self) -> int:
        return sum(self.resident.values())


def model_config(cfg) -> tuple[Qwen2_5_VLConfig, str]:
    """The Qwen2.5-VL config of ``cfg``'s model and where it came from: the config.json of the folder the run
    trains (``init_from``, else ``model.path``), else the shipped architecture named by ``model.architecture`` (a
    folder not downloaded yet plans all the same)."""
    path = Path(str(cfg.get("init_from") or cfg.model.get("path", "")), "config.json")
    if path.is_file():
        return Qwen2_5_VLConfig.from_pretrained(path.parent), str(path)
    name = cfg.model.get("architecture")
    if not name:
        raise FileNotFoundError(f"{path} does not exist and model.architecture is not set: the planner needs the "
                                f"model's config.json (weights are not read)")
    shipped = ARCHITECTURES / f"{name}.json"
    return Qwen2_5_VLConfig.from_dict(json.loads(shipped.read_text())), str(shipped)


@contextmanager
def _no_moves_in_place() -> Iterator[None]:
    """PEFT moves each new LoRA layer to its base layer's device and dtype, which it already has in a plan (one fake
    device), and torch cannot swap a fake parameter for itself: such a move is skipped while the policy is built."""
    move = torch.nn.Module.to

    def to(module: torch.nn.Module, *args, **kwargs):
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if all((device is None or p.device == device) and (dtype is None or p.dtype == dtype)
               for p in module.parameters()):
            return module
        return move(module, *args, **kwargs)

    with patch.object(torch.nn.Module, "to", to):
        yield


def planning_module(cfg, path: str) -> GRPOModule:
    """The GRPOModule of ``cfg`` with the settings the trainer gives it (no data, engine or weights)."""
    return GRPOModule(C.policy_config(cfg, path), C.grpo_config(cfg), C.episode_config(cfg), C.reward_config(cfg),
                      display_sizer=None, seed=cfg.seed)


class _NoHook:
    def remove(self) -> None:
        pass


class MicroBatchTracker(MemTracker):
    """torch's MemTracker over several forward calls of one model (micro-batches): per-module statistics restart
    at each call of ``root``, the peak over all calls is kept; frozen parameters are tracked without gradient hooks;
    only the peak per device is kept up to date (no per-module peaks)."""

    def __init__(self, root: torch.nn.Module) -> None:
        super().__init__()
        self.root = root

    def _track_module_params_and_buffers(self, module: torch.nn.Module, install_grad_hooks: bool = True):
        for param in module.parameters():  # a frozen parameter (LoRA's base) takes no gradient hook
            if not param.requires_grad:
                self._param_to_grad_hook_handles.setdefault(param, (_NoHook(), _NoHook()))
        return super()._track_module_params_and_buffers(module, install_grad_hooks)

    def _pre_fw_hook(self, module: torch.nn.Module, inputs) -> None:
        if module is self.root and not self._mod_tracker.is_bw:
            self.reset_mod_stats()
        super()._pre_fw_hook(module, inputs)

    def _update_peak_stats(self, peak_state) -> None:
        """The peak per device only: torch's version also updates every active module's own peak, a loop over all
        tracked modules at every op that made a 7B plan several times slower (the planner reads only the peaks)."""
        for device, snapshot in self._curr_mem_snap.items():
            if self._peak_mem.get(device, 0) < snapshot["Total"]:
                self._peak_mem[device] = snapshot["Total"]
                self._peak_mem_snap[device] = dict(snapshot)


@contextmanager
def _offload_to_host_device() -> Iterator[None]:
    """Activation offload moves saved fake tensors to :data:`HOST` in a plan (to host memory in a run), and back to
    their device when the backward needs them; the real metadata tensors of a plan stay where they are."""
    def pack(tensor: torch.Tensor) -> tuple[torch.device, torch.Tensor]:
        return tensor.device, tensor.to(HOST) if isinstance(tensor, FakeTensor) else tensor

    def on_host() -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(pack, lambda packed: packed[1].to(packed[0]))

    with patch("lfpc.grpo.logprobs.saved_tensors_on_host", on_host):
        yield


def _tracker(policy: torch.nn.Module, optimizer) -> MemTracker:
    tracker = MicroBatchTracker(policy)
    tracker.track_external(policy, optimizer)
    return tracker


def _total(tracker: MemTracker, kind: str, device: torch.device = GPU) -> int:
    return tracker.get_tracker_snapshot(kind).get(device, {}).get("Total", 0)


def _by_kind(tracker: MemTracker) -> dict[str, int]:
    stats = tracker.get_tracker_snapshot("current").get(GPU, {})
    return {getattr(key, "value", str(key)): value for key, value in stats.items() if key != "Total" and value}


def plan_memory(cfg, worst: Workload, warm_up: Workload) -> MemoryPlan:
    """Run, on fake tensors and a fake process group of the launch's world size: one short update (so gradients
    and AdamW states exist, as after any step), then the old-log-prob pass over one micro-batch of ``worst``
    trajectories, then one optimizer step of the update over two micro-batches of them; each pass tracked."""
    config, _ = model_config(cfg)
    module = planning_module(cfg, str(cfg.model.get("path")))
    micro = module.grpo.micro_batch_size  # one optimizer step over two micro-batches: gradients already accumulated
    module.grpo = replace(module.grpo, mini_batch_size=2 * micro)
    sharded = cfg.trainer.strategy == "fsdp2"
    fake = fake_mode()
    world = C.world_size(cfg) if sharded else 1
    with fake_process_group(world) as mesh:
        with fake, _no_moves_in_place():
            dtype = DTYPES[cfg.model.dtype]
            module.prepare_policy(lambda: Qwen2_5_VLForConditionalGeneration._from_config(
                config, dtype=dtype, attn_implementation=cfg.model.attn_implementation), mesh if sharded else None)
            optimizer = module.configure_optimizers()
        one_call_vision_attention(module.policy)
        parameters = sum(p.numel() for p in module.policy.parameters())  # a DTensor counts its global shape

        def pixels(rows: int, width: int) -> torch.Tensor:
            with fake:
                return torch.empty(rows, width)

        update = module.policy_update(optimizer, pad_id=0, image_pad_id=config.image_token_id)
        with MetadataOnRealTensors(fake), _offload_to_host_device():
            short = [context_of(warm_up, config, pixels)] * micro
            update(short, torch.zeros(len(short)))
            longest = [context_of(worst, config, pixels)] * (2 * micro)
            together = [longest[i] for i in update.micro_batches_of(longest, range(len(longest)))[0]]
            tracker = _tracker(module.policy, optimizer)
            with tracker:
                update.logprobs(longest[:micro])
            old_peak = _total(tracker, "peak")
            tracker = _tracker(module.policy, optimizer)
            with tracker:
                update(longest, torch.zeros(len(longest)))
            return MemoryPlan(old_peak, _total(tracker, "peak"), _total(tracker, "peak", HOST), _by_kind(tracker),
                              parameters, micro, len(together), update.offloads(together),
                              module.trainer_state_bytes())
