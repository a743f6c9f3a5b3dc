"""One training run from a composed config: build everything, fit, export, write a summary."""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lfpc import config as C
from lfpc.distributed import gather_from_ranks
from lfpc.files import launched_rank_zero, single_writer, write_json
from lfpc.plan.preflight import preflight
from lfpc.training.alarms import CollapseAlarms
from lfpc.training.batches import PromptData
from lfpc.training.curve import LearningCurve
from lfpc.training.module import GRPOModule
from lfpc.training.resume import AtomicCheckpointIO, CheckpointOnSigterm, check_resume, stopped_by_sigterm
from lfpc.vision.images import set_max_image_pixels


class GRPOProgressBar(TQDMProgressBar):
    """Counts GRPO steps (one per batch); Lightning's bar assumes one optimizer step per batch, but manual
    optimization takes ``updates_per_step`` optimizer steps per GRPO step. Active collapse alarms are shown."""

    def __init__(self, updates_per_step: int, alarms: CollapseAlarms) -> None:
        super().__init__()
        self.updates_per_step = updates_per_step
        self.alarms = alarms

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        if self.alarms.active:
            metrics["ALARM"] = ",".join(self.alarms.active)
        return metrics

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            remaining = -(-(trainer.max_steps - trainer.global_step) // self.updates_per_step)
            return min(trainer.num_training_batches, remaining)
        return trainer.num_training_batches


def build_strategy(trainer_cfg: DictConfig):
    """``fsdp2`` -> Lightning's ModelParallelStrategy (FSDP2 via ``fully_shard`` over every rank of every node), its
    collectives timing out after ``process_group_timeout_min`` minutes; anything else as given."""
    if trainer_cfg.strategy == "fsdp2":
        return ModelParallelStrategy(data_parallel_size=trainer_cfg.devices * trainer_cfg.num_nodes,
                                     tensor_parallel_size=1,
                                     process_group_backend=trainer_cfg.get("process_group_backend"),
                                     timeout=timedelta(minutes=trainer_cfg.process_group_timeout_min),
                                     save_distributed_checkpoint=True)
    return trainer_cfg.strategy


def build_loggers(cfg: DictConfig, out: Path) -> list:
    loggers = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(out), name="csv"))  # csv/version_N: a resumed run never overwrites
    if cfg.logger.wandb:
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(project=cfg.logger.wandb_project, save_dir=str(out), mode=cfg.logger.wandb_mode,
                                   config=OmegaConf.to_container(cfg, resolve=True)))
    return loggers


def build_checkpoints(cfg: DictConfig, folder: Path, updates_per_step: int) -> list[ModelCheckpoint]:
    """Checkpoints in bounded space: the latest one every ``every_n_steps`` GRPO steps (linked as ``last.ckpt``, the
    previous one deleted), plus a permanent one every ``keep_every_n_steps`` in ``kept/`` when set."""
    callbacks = [ModelCheckpoint(dirpath=str(folder), every_n_train_steps=cfg.every_n_steps * updates_per_step,
                                 save_last="link", save_top_k=1, filename="{step}")]
    if cfg.get("keep_every_n_steps"):
        callbacks.append(ModelCheckpoint(dirpath=str(folder / "kept"), save_top_k=-1, filename="{step}",
                                         every_n_train_steps=cfg.keep_every_n_steps * updates_per_step))
    return callbacks


def resume_path(cfg: DictConfig, folder: Path) -> str | None:
    """``ckpt_path`` if set, else the run folder's ``last.ckpt`` when it has one (a requeued SLURM job resumes)."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    last = folder / "last.ckpt"
    return str(last) if last.exists() else None


def train(cfg: DictConfig) -> dict:
    """Run GRPO as configured; returns (and writes to ``<output_dir>/summary.json``) the final metrics. One run at a
    time writes an output folder: a second one started in it is refused at once.

    A run stopped by a collapse alarm (``alarms.stop=true``) writes its summary with ``stopped_on_alarm``, exports
    no ``hf_model`` and exits non-zero (SystemExit)."""
    C.check_run_config(cfg)  # read-only checks first: a refused config leaves no folder behind
    C.check_run_folder(cfg)
    preflight(cfg)  # before any weights load: a launch whose memory plan does not fit is refused
    if cfg.get("ckpt_path"):
        check_resume(cfg)
    if not launched_rank_zero():
        return _train(cfg)
    with single_writer(cfg.output_dir):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict:
    # checkpoints are meant to hold the post-update state of each GRPO step
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_max_image_pixels(cfg.max_image_pixels)
    path = C.model_path(cfg)
    samples = C.load_samples(cfg.data)
    C.check_enough_samples(cfg, samples)
    sizer = C.display_sizer(cfg, path, samples)
    samples = C.trainable_samples(samples, sizer, cfg)
    C.check_enough_samples(cfg, samples)
    module = GRPOModule(C.policy_config(cfg, path), C.grpo_config(cfg), C.episode_config(cfg), C.reward_config(cfg),
                        sizer, rollout=OmegaConf.to_container(cfg.rollout, resolve=True), seed=cfg.seed,
                        rollout_log_dir=str(out / "rollouts"), judge=OmegaConf.to_container(cfg.judge, resolve=True),
                        viewer=C.viewer_config(cfg), probe=C.noise_probe_config(cfg))
    per_step = C.updates_per_step(cfg)
    t = cfg.trainer
    data = PromptData(samples, C.per_rank(cfg, "prompts_per_step"), t.max_steps, per_step, seed=cfg.seed)
    curve = LearningCurve()
    alarms = CollapseAlarms(C.alarm_config(cfg), out / "checkpoints")
    trainer = L.Trainer(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
                        strategy=build_strategy(t), precision=t.precision, max_steps=t.max_steps * per_step,
                        log_every_n_steps=t.log_every_n_steps, logger=build_loggers(cfg, out),
                        callbacks=[*build_checkpoints(cfg.checkpoint, out / "checkpoints", per_step),
                                   GRPOProgressBar(per_step, alarms), curve, alarms,
                                   CheckpointOnSigterm(str(out / "checkpoints"))],
                        plugins=[] if t.strategy == "fsdp2" else [AtomicCheckpointIO()],  # fsdp2: a checkpoint folder
                        default_root_dir=str(out), use_distributed_sampler=False,  # PromptData splits prompts by rank
                        enable_model_summary=False, num_sanity_val_steps=0)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume_path(cfg, out / "checkpoints"))
    except SIGTERMException:
        raise stopped_by_sigterm(out.resolve(), trainer.global_step // per_step) from None
    summary = {k: float(v) for k, v in trainer.callback_metrics.items()}
    summary.update(grpo_steps=trainer.global_step // per_step, output_dir=str(out), model=path,
                   learning_curve=curve.quarters())
    if alarms.stopped:  # a collapsed policy is not exported: nothing may start from it as from a finished run
        summary.update(stopped_on_alarm=alarms.stopped, alarm_checkpoint=str(alarms.checkpoint))
    else:
        summary.update(rank_weight_digests=gather_from_ranks(module.export_hf(str(out / "hf_model"))))
    if trainer.is_global_zero:
        write_json(out / "summary.json", summary)
        print(curve.report())
    if torch.distributed.is_initialized():
        # a gloo group left to interpreter shutdown can abort the process ("terminate called without an active
        # exception") after every result is written; a multirun's next job sets up its own group. The barrier keeps
        # a rank from tearing its connections down while rank 0 is still writing (the abort recurred once without it)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if alarms.stopped:
        raise SystemExit(f"stopped on a {alarms.stopped} (alarms.stop=true): no hf_model exported "
                         f"({out / 'summary.json'} says why); the run's state is in {alarms.checkpoint}")
    return summary
