"""The GRPO LightningModule: rollouts with the current policy, group advantages, clipped-surrogate updates.

Data path per step: samples -> prompts -> rollouts (engine) -> rewards -> advantages -> PPO-style updates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import lightning as L
import torch

from lfpc.data.records import Sample
from lfpc.grpo.advantages import group_advantages, group_diagnostics
from lfpc.grpo.objective import PolicyLossConfig
from lfpc.grpo.update import PolicyUpdate, optimizer_steps
from lfpc.judge import Judge, load_judge
from lfpc.model.loading import load_model
from lfpc.rewards import RewardConfig, score_episode
from lfpc.rollout.base import SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.factory import build_engine
from lfpc.rollout.episodes import EpisodeConfig, Trajectory, run_episodes
from lfpc.training.batches import PromptBatch
from lfpc.training.metrics import rollout_means, sum_over_ranks
from lfpc.training.noise_probe import NoiseProbeConfig, noise_probe, share
from lfpc.training.rollout_log import RolloutLog, ViewerConfig
from lfpc.training.sharding import full_named_tensors, shard_policy, weights_digest
from lfpc.viewer.wandb_table import log_trajectory_table


@dataclass
class GRPOConfig:
    """Optimization settings of one GRPO step, per data-parallel rank (the config's batch sizes are global)."""

    group_size: int = 4
    mini_batch_size: int = 4      # trajectories per optimizer step
    micro_batch_size: int = 2     # trajectories per forward/backward
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


@dataclass
class PolicyConfig:
    """Where the policy comes from and how it is run."""

    path: str
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    fsdp_param_dtype: str = "float32"
    global_max_tokens: int = 1024   # processor max: the largest image any turn can show
    rollout_batch_size: int = 16


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
        self.reference: torch.nn.Module | None = None  # the frozen initial policy, for the KL term
        self._engine = None
        self.judge_cfg = judge or {}
        self._judge: Judge | None = None
        self.rollout_log_dir = rollout_log_dir
        self.viewer = viewer
        self.rollout_log: RolloutLog | None = None
        self.probe = probe

    # ----- model, engine, optimizer -----
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        self.policy = load_model(self.policy_cfg.path, dtype=self.policy_cfg.dtype,
                                 attn_implementation=self.policy_cfg.attn_implementation).train()
        if self.policy_cfg.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.grpo.loss.kl_coef > 0:
            self.reference = load_model(self.policy_cfg.path, dtype=self.policy_cfg.dtype,
                                        attn_implementation=self.policy_cfg.attn_implementation)
            self.reference.eval().requires_grad_(False)
        if self.device_mesh is not None:
            for model in [m for m in (self.policy, self.reference) if m is not None]:
                shard_policy(model, self.device_mesh["data_parallel"], self.policy_cfg.fsdp_param_dtype)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.policy.parameters(), lr=self.grpo.lr, weight_decay=self.grpo.weight_decay,
                                 betas=tuple(self.grpo.betas))

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
                                        batch_size=p.rollout_batch_size, seed=self.seed)
        return self._engine

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
        """Push the trainer's full weights into the rollout engine in place."""
        self.engine.load_weights(full_named_tensors(self.policy))

    # ----- one GRPO step -----
    def training_step(self, batch: PromptBatch, batch_idx: int) -> None:
        step = self.global_step  # optimizer steps before this GRPO step's update
        timings = {}
        start = time.perf_counter()
        self.sync_rollout_weights()
        timings["time/sync"] = time.perf_counter() - start

        start = time.perf_counter()
        seed = self.seed + 7919 * step + self.global_rank
        trajectories = self.rollout(batch.samples, seed=seed)
        timings["time/rollout"] = time.perf_counter() - start
        g = self.grpo
        grpo_step = step // optimizer_steps(len(trajectories), g.mini_batch_size, g.ppo_epochs)
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

        stats = {**rollout_means(trajectories, self.device), **probe_stats, **update_stats, **timings}
        self.log_dict(stats, on_step=True, prog_bar=False, batch_size=len(trajectories))
        self.log_dict(group_diagnostics(rewards, groups), on_step=True, sync_dist=True, batch_size=len(trajectories))
        self.log("reward", stats["reward/total"], prog_bar=True, batch_size=len(trajectories))
        self.log("acc", stats["reward/acc"], prog_bar=True, batch_size=len(trajectories))
        self.log("tool_calls", stats["rollout/tool_calls"], prog_bar=True, batch_size=len(trajectories))
        if self.rollout_log is not None:  # numbered by GRPO step, like the logged metrics
            kept = self.rollout_log.append(grpo_step, trajectories, advantages.tolist())
            log_trajectory_table(self.loggers, self.rollout_log.folder, kept)

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
        g = self.grpo
        step = PolicyUpdate(self.policy, self.optimizers(), g.loss, self.codec.pad_id, self.codec.image_pad_id,
                            g.mini_batch_size, g.micro_batch_size, g.ppo_epochs, g.max_grad_norm, g.temperature,
                            g.tis_cap, reference=self.reference, backward=self.manual_backward)
        return step(contexts, advantages, seed=self.seed + self.global_step)

    # ----- export -----
    def export_hf(self, out_dir: str) -> str:
        """Save the current full policy (gathered from shards on every rank) as a transformers folder with its
        processor, written by rank 0 in the compute dtype (bf16 for the float32-master 7B); returns the digest of
        the full weights as seen by this rank."""
        full = dict(full_named_tensors(self.policy))
        if self.global_rank == 0:
            model = load_model(self.policy_cfg.path, dtype=self.policy_cfg.fsdp_param_dtype)
            model.load_state_dict(full)
            model.save_pretrained(out_dir)
            self.codec.processor.save_pretrained(out_dir)
        return weights_digest(full.items())
