"""The GRPO LightningModule: rollouts with the current policy, group advantages, clipped-surrogate updates.

Data path per step: samples -> prompts -> rollouts (engine) -> rewards -> advantages -> PPO-style updates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import lightning as L
import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from lfpc.answers import Judge
from lfpc.data.records import Sample
from lfpc.distributed import weights_digest
from lfpc.files import atomic_folder
from lfpc.grpo.advantages import group_advantages, group_diagnostics
from lfpc.grpo.objective import PolicyLossConfig
from lfpc.grpo.update import PolicyUpdate, optimizer_steps
from lfpc.judge import load_judge
from lfpc.model.checkpointing import enable_activation_checkpointing
from lfpc.model.loading import empty_model, load_model
from lfpc.model.lora import AdapterOff, LoraSettings, apply_lora, policy_named_tensors
from lfpc.rewards import RewardConfig, score_episode
from lfpc.rollout.base import SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.factory import build_engine
from lfpc.rollout.episodes import EpisodeConfig, Trajectory, run_episodes
from lfpc.training.batches import PromptBatch, PromptData
from lfpc.training.dynamic_sampling import DynamicSamplingConfig, dynamic_sample
from lfpc.training.metrics import rollout_means, sum_over_ranks
from lfpc.training.noise_probe import NoiseProbeConfig, noise_probe, share
from lfpc.training.rollout_log import RolloutLog, ViewerConfig
from lfpc.training.sharding import load_sharded, resident_state_bytes, shard_policy
from lfpc.viewer.wandb_table import log_trajectory_table


def fused_adamw_supported(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused AdamW kernel runs on every one of ``params``' devices (floating point required)."""
    devices = _get_fused_kernels_supported_devices()  # the list torch's own optimizers check against
    return all(p.device.type in devices and torch.is_floating_point(p) for p in params)


ROUND_SEED = 104_729  # the rollout seed's offset per dynamic-sampling round (the step's is 7919)


@dataclass
class GRPOConfig:
    """Optimization settings of one GRPO step, per data-parallel rank (the config's batch sizes are global)."""

    group_size: int = 4
    mini_batch_size: int = 4      # trajectories per optimizer step
    micro_batch_size: int = 2     # trajectories per forward/backward at most
    micro_batch_tokens: int | None = None  # token budget of a micro-batch (rows x longest row); None: rows only
    defer_grad_sync: bool = True  # FSDP2: reduce gradients once per optimizer step, not per micro-batch
    ppo_epochs: int = 1
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    adv_eps: float = 1e-6
    scale_advantages: bool = True
    tis_cap: float | None = None  # truncated importance sampling between rollout and trainer log-probs
    loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)

    def __post_init__(self) -> None:
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise ValueError(f"grpo.micro_batch_tokens must be a positive token count or null, "
                             f"got {self.micro_batch_tokens}")
        if self.dynamic_sampling.enabled and self.group_size < 2:
            raise ValueError("grpo.dynamic_sampling needs group_size >= 2: a group of one rollout never has signal")


@dataclass
class PolicyConfig:
    """Where the policy comes from and how it is run."""

    path: str
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    offload_min_tokens: int | None = None  # micro-batches this large keep saved activations in host memory
    fsdp_param_dtype: str = "float32"
    global_max_tokens: int = 1024   # processor max: the largest image any turn can show
    rollout_batch_size: int = 16
    lora: LoraSettings | None = None  # None: full fine-tuning


class GRPOModule(L.LightningModule):
    """Holds the policy and the GRPO objective; each ``training_step`` is one rollout + update round."""

    def __init__(self, policy: PolicyConfig, grpo: GRPOConfig, episode: EpisodeConfig, reward: RewardConfig,
                 display_sizer, rollout: dict | None = None, seed: int = 0, rollout_log_dir: str | None = None,
                 judge: dict | None = None, viewer: ViewerConfig = ViewerConfig(),
                 probe: NoiseProbeConfig = NoiseProbeConfig()) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.rollout_cfg = rollout or {"backend": "hf"}
        self.policy_cfg, self.grpo, self.episode, self.reward = policy, grpo, episode, reward
        self.display_sizer = display_sizer
        self.seed = seed
        self.policy: torch.nn.Module | None = None
        self.reference: torch.nn.Module | AdapterOff | None = None  # the frozen initial policy, for the KL term
        self._engine = None
        self.judge_cfg = judge or {}
        self._judge: Judge | None = None
        self.rollout_log_dir = rollout_log_dir
        self.viewer = viewer
        self.rollout_log: RolloutLog | None = None
        self.probe = probe

    # ----- model, engine, optimizer -----
    def configure_model(self) -> None:
        """The policy (and the KL reference): as loaded in one process; under FSDP2 sharded over the data-parallel
        mesh, the weights read from disk by rank 0 only (:func:`lfpc.training.sharding.load_sharded`)."""
        if self.policy is not None:
            return
        mesh = None if self.device_mesh is None else self.device_mesh["data_parallel"]
        dtype = self.policy_cfg.fsdp_param_dtype

        def build(make: Callable[[bool], torch.nn.Module]) -> torch.nn.Module:
            return make(False) if mesh is None else load_sharded(make, mesh, dtype)

        self.policy = build(self._policy)
        if self.grpo.loss.kl_coef > 0:
            self.reference = AdapterOff(self.policy) if self.policy_cfg.lora is not None else build(self._reference)

    def prepare_policy(self, build: Callable[[], torch.nn.Module], mesh=None) -> None:
        """Set the policy (and the KL reference when needed) from ``build()`` as :meth:`configure_model` does, sharded
        over ``mesh`` (None: unsharded) without loading weights: the memory planner (:mod:`lfpc.plan`) builds from
        ``config.json`` alone, on fake tensors."""
        self.policy = self._trainable(build())
        if self.grpo.loss.kl_coef > 0:
            self.reference = (AdapterOff(self.policy) if self.policy_cfg.lora is not None
                              else build().eval().requires_grad_(False))
        if mesh is not None:
            for model in [m for m in (self.policy, self.reference) if isinstance(m, torch.nn.Module)]:
                shard_policy(model, mesh, self.policy_cfg.fsdp_param_dtype)

    def _policy(self, meta: bool) -> torch.nn.Module:
        """The trainable policy: loaded (or its meta-device skeleton), gradient checkpointing and LoRA applied."""
        p = self.policy_cfg
        return self._trainable((empty_model if meta else load_model)(p.path, dtype=p.dtype,
                                                                     attn_implementation=p.attn_implementation))

    def _trainable(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in train mode with gradient checkpointing and LoRA as configured."""
        model.train()
        if self.policy_cfg.gradient_checkpointing:
            enable_activation_checkpointing(model)
        if self.policy_cfg.lora is not None:
            model = apply_lora(model, self.policy_cfg.lora, seed=self.seed)
        return model

    def _reference(self, meta: bool) -> torch.nn.Module:
        """The KL reference of full fine-tuning: a frozen copy of the initial weights (or its skeleton)."""
        p = self.policy_cfg
        reference = (empty_model if meta else load_model)(p.path, dtype=p.dtype,
                                                          attn_implementation=p.attn_implementation)
        return reference.eval().requires_grad_(False)

    def configure_optimizers(self):
        """AdamW over the trainable parameters (with LoRA: the adapters only), fused (one kernel per step, no
        temporary copy of the states) on the devices that have the fused kernel."""
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.grpo.lr, weight_decay=self.grpo.weight_decay,
                                 betas=tuple(self.grpo.betas), fused=fused_adamw_supported(trainable))

    def setup(self, stage: str) -> None:
        self.codec = ChatCodec.for_model(self.policy_cfg.path,
                                         max(self.policy_cfg.global_max_tokens, self.episode.crop_max_tokens))
        if self.rollout_log_dir:
            self.rollout_log = RolloutLog(self.rollout_log_dir, self.global_rank, self.viewer)

    @property
    def engine(self):
        """The rollout backend of the ``rollout`` config (HF replica or vLLM), refreshed by
        :meth:`sync_rollout_weights`."""
        if self._engine is None:
            p = self.policy_cfg
            self._engine = build_engine(self.rollout_cfg, self.codec, p.path,
                                        self.device, dtype=p.dtype, attn_implementation=p.attn_implementation,
                                        batch_size=p.rollout_batch_size, seed=self.seed,
                                        trainer_bytes=self.trainer_state_bytes())
        return self._engine

    def trainer_state_bytes(self) -> int:
        """Bytes this rank's trainer keeps on the GPU beside the rollout engine, as the engine is sized from them
        (:func:`lfpc.training.sharding.resident_state_bytes` of the policy and the KL reference)."""
        return sum(resident_state_bytes(m) for m in (self.policy, self.reference) if isinstance(m, torch.nn.Module))

    @property
    def judge(self) -> Judge | None:
        """The judge of free-form answers no rule grades (``judge.model``: a local Qwen2.5-VL folder), or None."""
        if self._judge is None and self.judge_cfg.get("model"):
            self._judge = load_judge(self.judge_cfg["model"], self.judge_cfg["cache"], self.device,
                                     dtype=self.policy_cfg.dtype)
        return self._judge

    def set_engine(self, engine) -> None:
        """Use another rollout backend (e.g. vLLM) implementing :class:`lfpc.rollout.base.RolloutEngine`."""
        self._engine = engine

    def sync_rollout_weights(self) -> None:
        """Push the trainer's full weights into the rollout engine in place (a LoRA policy's merged into its base
        weights: the engines serve a plain transformers model either way)."""
        self.engine.load_weights(policy_named_tensors(self.policy))

    # ----- one GRPO step -----
    def training_step(self, batch: PromptBatch, batch_idx: int) -> None:
        step = self.global_step  # optimizer steps before this GRPO step's update
        timings = {}
        start = time.perf_counter()
        self.sync_rollout_weights()
        timings["time/sync"] = time.perf_counter() - start

        g = self.grpo
        grpo_step = step // optimizer_steps(len(batch.samples) * g.group_size, g.mini_batch_size, g.ppo_epochs)
        start = time.perf_counter()
        seed = self.seed + 7919 * step + self.global_rank
        trajectories, sampling_stats = self.rollout_batch(batch.samples, seed, grpo_step)
        timings["time/rollout"] = time.perf_counter() - start
        probe_stats = {}
        if self.probe.due(grpo_step):  # on the rollout weights, before the update
            start = time.perf_counter()
            probe_stats = self.run_probe(trajectories, seed)
            timings["time/probe"] = time.perf_counter() - start
        self.engine.sleep()  # vLLM on CUDA frees its KV cache and weights for the update

        # float32 explicitly: under bf16-true the default dtype is bf16 (a 2.5% error on the advantages)
        rewards = torch.tensor([t.scores["total"] for t in trajectories], dtype=torch.float32)
        groups = torch.tensor([t.group for t in trajectories])
        advantages = group_advantages(rewards, groups, self.grpo.adv_eps, self.grpo.scale_advantages)

        start = time.perf_counter()
        update_stats = self.update([t.context for t in trajectories], advantages)
        timings["time/update"] = time.perf_counter() - start

        stats = {**rollout_means(trajectories, self.device), **sampling_stats, **probe_stats, **update_stats,
                 **timings}
        self.log_dict(stats, on_step=True, prog_bar=False, batch_size=len(trajectories))
        self.log_dict(group_diagnostics(rewards, groups), on_step=True, sync_dist=True, batch_size=len(trajectories))
        self.log("reward", stats["reward/total"], prog_bar=True, batch_size=len(trajectories))
        self.log("acc", stats["reward/acc"], prog_bar=True, batch_size=len(trajectories))
        self.log("tool_calls", stats["rollout/tool_calls"], prog_bar=True, batch_size=len(trajectories))
        if self.rollout_log is not None:  # numbered by GRPO step, like the logged metrics
            kept = self.rollout_log.append(grpo_step, trajectories, advantages.tolist())
            log_trajectory_table(self.loggers, self.rollout_log.folder, kept)

    def rollout_batch(self, samples: list[Sample], seed: int, grpo_step: int) -> tuple[list[Trajectory], dict]:
        """This step's scored trajectories: the rollouts of ``samples``, or with ``grpo.dynamic_sampling`` the
        batch :func:`lfpc.training.dynamic_sampling.dynamic_sample` fills (round ``k`` sampled with seed ``seed +
        ROUND_SEED * k``, its extra prompts from :meth:`PromptData.refill`) and its counts summed over the ranks
        (every rank must call this then)."""
        if not self.grpo.dynamic_sampling.enabled:
            return self.rollout(samples, seed=seed), {}
        data = self.trainer.datamodule
        if not isinstance(data, PromptData):
            raise TypeError("grpo.dynamic_sampling draws its extra prompts from a PromptData datamodule; "
                            f"this trainer has {type(data).__name__}")
        trajectories, counts = dynamic_sample(
            samples, rollout=lambda prompts, k: self.rollout(prompts, seed=seed + ROUND_SEED * k),
            refill=lambda k: data.refill(grpo_step, k), max_rounds=self.grpo.dynamic_sampling.max_rounds)
        totals = dict(zip(counts, sum_over_ranks(list(counts.values()), self.device)))
        totals["sampling/rounds"] /= self.trainer.world_size  # the mean over ranks; the others are sums
        return trajectories, totals

    def rollout(self, samples: list[Sample], seed: int) -> list[Trajectory]:
        """Generate ``group_size`` scored trajectories per sample with the rollout engine."""
        sampling = SamplingConfig(temperature=self.grpo.temperature, top_p=self.grpo.top_p)
        torch.manual_seed(seed)
        trajectories = run_episodes(self.engine, self.codec, samples, [self.display_sizer(s) for s in samples],
                                    self.grpo.group_size, self.episode, sampling, seed=seed)
        for trajectory in trajectories:
            trajectory.scores = score_episode(trajectory.outcome, trajectory.sample, self.reward, self.judge)
        return trajectories

    def run_probe(self, trajectories: list[Trajectory], seed: int) -> dict[str, float]:
        """The noise probe on this step's trajectories (:mod:`lfpc.training.noise_probe`), counts summed over the
        ranks (every rank must call it): ``probe/noise_unchanged`` and ``probe/trajectories`` (how many probed)."""
        counts = noise_probe(self.engine, self.codec, trajectories, self.episode, self.probe.size, seed=seed)
        unchanged, probed = sum_over_ranks(list(counts), self.device)
        return {"probe/noise_unchanged": share(unchanged, probed), "probe/trajectories": probed}

    def update(self, contexts: list, advantages: torch.Tensor) -> dict[str, float]:
        """The PPO-style update of this step (see :class:`lfpc.grpo.update.PolicyUpdate`)."""
        step = self.policy_update(self.optimizers(), self.codec.pad_id, self.codec.image_pad_id, self.manual_backward)
        return step(contexts, advantages, seed=self.seed + self.global_step)

    def policy_update(self, optimizer, pad_id: int, image_pad_id: int,
                      backward: Callable[[torch.Tensor], None] = torch.Tensor.backward) -> PolicyUpdate:
        """The :class:`PolicyUpdate` of this module's settings (the trainer's, and the memory planner's)."""
        g = self.grpo
        return PolicyUpdate(self.policy, optimizer, g.loss, pad_id, image_pad_id, g.mini_batch_size,
                            g.micro_batch_size, g.ppo_epochs, g.max_grad_norm, g.temperature, g.tis_cap,
                            reference=self.reference, backward=backward, micro_batch_tokens=g.micro_batch_tokens,
                            defer_grad_sync=g.defer_grad_sync, offload_min_tokens=self.policy_cfg.offload_min_tokens)

    # ----- export -----
    def export_hf(self, out_dir: str) -> str:
        """Save the current full policy (gathered from shards on every rank) as a transformers folder with its
        processor, written by rank 0 in the compute dtype (bf16 for the float32-master 7B); returns the digest of
        the full weights as seen by this rank."""
        full = dict(policy_named_tensors(self.policy))
        if self.global_rank == 0:
            model = load_model(self.policy_cfg.path, dtype=self.policy_cfg.fsdp_param_dtype)
            model.load_state_dict(full)
            with atomic_folder(out_dir) as staging:  # never a half-written model folder
                model.save_pretrained(staging)
                self.codec.processor.save_pretrained(staging)
        return weights_digest(full.items())
