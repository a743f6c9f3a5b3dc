"""Turn a composed Hydra config into the objects a run needs (one place for train.py, eval.py and sweeps)."""

from __future__ import annotations

import dataclasses
import math
import shlex
from pathlib import Path
from typing import Callable, Sequence

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from lfpc.answers import Judge
from lfpc.data.records import Sample, check_samples, load_jsonl
from lfpc.files import write_json
from lfpc.grpo.objective import PolicyLossConfig
from lfpc.grpo.update import optimizer_steps
from lfpc.model.families import backbone_of
from lfpc.model.loading import model_fingerprint
from lfpc.model.lora import LoraSettings
from lfpc.resolution.selection import AnswerFn, SelectionConfig, SelectionResult, rollout_answerer, select_resolutions
from lfpc.rewards import RewardConfig
from lfpc.rollout.episodes import EpisodeConfig
from lfpc.training.alarms import AlarmConfig
from lfpc.training.display import DisplaySizer
from lfpc.training.dynamic_sampling import DynamicSamplingConfig
from lfpc.training.module import GRPOConfig, PolicyConfig
from lfpc.training.noise_probe import NoiseProbeConfig
from lfpc.training.rollout_log import ViewerConfig


# (key, type, lowest value, highest value or None) of each run setting checked before anything is built
_RUN_SETTINGS: tuple[tuple[str, type, float, float | None], ...] = (
    ("trainer.max_steps", int, 0, None),
    ("checkpoint.every_n_steps", int, 1, None),
    ("grpo.prompts_per_step", int, 1, None),
    ("grpo.group_size", int, 2, None),
    ("grpo.mini_batch_size", int, 1, None),
    ("grpo.micro_batch_size", int, 1, None),
    ("grpo.ppo_epochs", int, 1, None),
    ("grpo.lr", float, 0, None),
    ("lr_scale", float, 0, None),
    ("grpo.temperature", float, 0, None),
    ("grpo.top_p", float, 0, 1),
    ("grpo.max_grad_norm", float, 0, None),
    ("vision.global_max_tokens", int, 4, None),
    ("max_image_pixels", int, 1, None),
)


# why a setting has its lowest value, where that is not plain
_WHY = {"grpo.group_size": "GRPO's advantage is a rollout's reward minus its group's mean: in a group of one it is "
                           "always 0, and nothing is learned"}


def check_run_config(cfg: DictConfig) -> None:
    """Refuse a composed training config whose numeric settings have the wrong type or range, naming the key
    (a float setting must be > its lowest value, an int one >= it) and, where it is not plain, the reason."""
    for key, kind, low, high in _RUN_SETTINGS:
        value = OmegaConf.select(cfg, key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int:
            ok = number and isinstance(value, int) and value >= low
            wanted = f"an integer >= {low:g}"
        else:
            ok = number and math.isfinite(value) and value > low and (high is None or value <= high)
            wanted = f"a number > {low:g}" + (f" and <= {high:g}" if high is not None else "")
        if not ok:
            why = f" ({_WHY[key]})" if key in _WHY else ""
            raise ValueError(f"config key {key} must be {wanted}, got {value!r}{why}")


def check_enough_samples(cfg: DictConfig, samples: list[Sample]) -> None:
    """Refuse a run whose GRPO step needs more prompts than there are samples (it would train 0 steps)."""
    if cfg.grpo.prompts_per_step > len(samples):
        raise ValueError(f"config key grpo.prompts_per_step is {cfg.grpo.prompts_per_step} but there are only "
                         f"{len(samples)} training samples: not one GRPO step could run; lower it or add data")


def model_path(cfg: DictConfig) -> str:
    """The local model folder of this run: ``init_from`` if set, else ``model.path`` (built first for the tiny model)."""
    if cfg.get("init_from"):
        return str(cfg.init_from)
    if cfg.model.get("build_tiny"):
        from lfpc.model.tiny import build_tiny_model
        from lfpc.training.warmup import warm_up
        base = build_tiny_model(f"{cfg.model.path}-random", seed=cfg.model.get("seed", 0),
                                family=cfg.model.get("family", "qwen2_5_vl"))
        w = cfg.model.get("warmup")
        if not w or not w.steps:
            return str(base)
        return str(warm_up(base, cfg.model.path, load_samples(w.data), steps=w.steps,
                           global_max_tokens=w.global_max_tokens, crop_max_tokens=w.crop_max_tokens))
    return str(cfg.model.path)


def load_samples(data: DictConfig) -> list[Sample]:
    """The training samples named by the ``data`` config group (generating the synthetic set if needed)."""
    if data.kind == "synthetic":
        from lfpc.data.synthetic import generate_synthetic
        size_range = data.get("size_range")
        path = generate_synthetic(data.dir, num_samples=data.num_samples, image_size=tuple(data.image_size),
                                  seed=data.seed, size_range=tuple(size_range) if size_range else None,
                                  task=data.get("task", "scenes"))
        return load_jsonl(path)
    if data.kind == "jsonl":
        return load_jsonl(data.path)
    if data.kind == "mix":
        from lfpc.data.mix import mix_by_ratio
        sources = [(name, load_samples(source), source.ratio) for name, source in data.sources.items()]
        return check_samples(mix_by_ratio(sources, data.get("num_samples"), seed=data.get("seed", 0)),
                             f"data mix of {list(data.sources)}", repeats=True)
    raise ValueError(f"unknown data.kind {data.kind!r} (expected 'synthetic', 'jsonl' or 'mix')")


def policy_config(cfg: DictConfig, path: str) -> PolicyConfig:
    """The :class:`PolicyConfig` of ``cfg`` (``model.lora``: null for full fine-tuning, else LoRA settings)."""
    m = cfg.model
    return PolicyConfig(path=path, dtype=m.dtype, attn_implementation=m.attn_implementation,
                        gradient_checkpointing=m.gradient_checkpointing, fsdp_param_dtype=m.fsdp_param_dtype,
                        offload_min_tokens=m.get("offload_min_tokens"),
                        global_max_tokens=cfg.vision.global_max_tokens, rollout_batch_size=m.rollout_batch_size,
                        lora=lora_settings(cfg))


def lora_settings(cfg: DictConfig) -> LoraSettings | None:
    """``model.lora`` as :class:`LoraSettings`, or None (full fine-tuning) when it is null or absent."""
    lora = cfg.model.get("lora")
    if lora is None:
        return None
    settings = OmegaConf.to_container(lora, resolve=True)
    if "target_modules" in settings:
        settings["target_modules"] = tuple(settings["target_modules"])
    return LoraSettings(**settings)


def per_rank(cfg: DictConfig, key: str) -> int:
    """``grpo.<key>``, a global batch size (over every rank, as the paper states them), divided over the ranks."""
    total, world = cfg.grpo[key], world_size(cfg)
    if total % world:
        raise ValueError(f"grpo.{key}={total} is global (summed over ranks) and must divide by the {world} ranks")
    return total // world


def grpo_config(cfg: DictConfig) -> GRPOConfig:
    """The per-rank :class:`GRPOConfig` of ``cfg`` (``grpo.mini_batch_size`` is global in the config)."""
    g = OmegaConf.to_container(cfg.grpo, resolve=True)
    g.pop("prompts_per_step")
    g["mini_batch_size"] = per_rank(cfg, "mini_batch_size")
    g["loss"] = PolicyLossConfig(**g["loss"])
    g["dynamic_sampling"] = DynamicSamplingConfig(**g.get("dynamic_sampling", {}))
    g["lr"] = g["lr"] * cfg.get("lr_scale", 1.0)
    return GRPOConfig(**g)


def episode_config(cfg: DictConfig) -> EpisodeConfig:
    return EpisodeConfig(**OmegaConf.to_container(cfg.episode, resolve=True))


def reward_config(cfg: DictConfig) -> RewardConfig:
    return RewardConfig(**OmegaConf.to_container(cfg.reward, resolve=True))


def viewer_config(cfg: DictConfig) -> ViewerConfig:
    return ViewerConfig(**OmegaConf.to_container(cfg.viewer, resolve=True))


def alarm_config(cfg: DictConfig) -> AlarmConfig:
    return AlarmConfig(**OmegaConf.to_container(cfg.alarms, resolve=True))


def noise_probe_config(cfg: DictConfig) -> NoiseProbeConfig:
    return NoiseProbeConfig(**OmegaConf.to_container(cfg.noise_probe, resolve=True))


def selection_config(cfg: DictConfig) -> SelectionConfig:
    """The :class:`SelectionConfig` of a composed config (``resolution`` group, global budget, seed)."""
    r = cfg.resolution
    return SelectionConfig(strategy=r.strategy, max_tokens=cfg.vision.global_max_tokens, scale=r.scale,
                           min_tokens=r.min_tokens, reference_max_tokens=r.reference_max_tokens, stop=r.stop,
                           never_diverged=r.never_diverged, seed=cfg.seed, max_new_tokens=r.max_new_tokens,
                           batch_samples=r.batch_samples, judge=cfg.judge.get("model"))


def selection_judge(cfg: DictConfig) -> Judge | None:
    """The judge of free-form answers no rule compares (``judge.model``), loaded on its first use on the
    selection's device; None without one."""
    if not cfg.judge.get("model"):
        return None
    loaded: list[Judge] = []

    def judge(question: str, truth: str, answer: str) -> bool:
        if not loaded:
            from lfpc.judge import load_judge
            from lfpc.rollout.factory import resolve_device
            loaded.append(load_judge(cfg.judge.model, cfg.judge.cache, resolve_device(cfg.resolution.device)))
        return loaded[0](question, truth, answer)

    return judge


class RolloutAnswererFactory:
    """Builds the processor and the ``rollout`` backend of ``cfg`` on first call (an answerer over them);
    :meth:`close` releases that engine (a vLLM engine shut down, its GPU memory returned), so a training run that
    selected in-process builds its own engine on a free GPU."""

    def __init__(self, cfg: DictConfig, path: str, config: SelectionConfig) -> None:
        self.cfg, self.path, self.config = cfg, path, config
        self.engine = None

    def __call__(self) -> AnswerFn:
        from lfpc.rollout.codec import ChatCodec
        from lfpc.rollout.factory import engine_from_run_config
        max_tokens = max(self.config.max_tokens, self.config.reference_max_tokens or 0)
        codec = ChatCodec.for_model(self.path, max_tokens)
        self.engine = engine_from_run_config(self.cfg, codec, self.path, self.cfg.resolution.device)
        return rollout_answerer(self.engine, codec, self.config.max_new_tokens)

    def close(self) -> None:
        from lfpc.rollout.factory import release_engine
        if self.engine is not None:
            release_engine(self.engine)
            self.engine = None


def selection_command() -> str:
    """The command that runs this run's selection as a single process (the same overrides)."""
    try:
        overrides = [shlex.quote(o) for o in HydraConfig.get().overrides.task]
    except ValueError:  # not under @hydra.main
        overrides = ["<the training run's overrides>"]
    return " ".join(["python -m lfpc.resolution.select", *overrides])


def missing_selection(manifest: str) -> Callable[[], AnswerFn]:
    """An answerer factory that refuses: the manifest lacks samples and this process must not compute them."""

    def refuse() -> AnswerFn:
        raise RuntimeError(f"the resolution manifest {manifest} lacks samples of this run, and a multi-process launch "
                           f"cannot compute them; run the selection once as a single process, then relaunch:\n"
                           f"    {selection_command()}")

    return refuse


def run_selection(cfg: DictConfig, path: str, samples: Sequence[Sample], progress: bool = True,
                  compute_missing: bool = True) -> SelectionResult:
    """Select (or load from ``resolution.manifest``) the display size of every sample with the model at ``path``;
    with ``compute_missing`` False, samples missing from the manifest raise (with the command to compute them)."""
    config = dataclasses.replace(selection_config(cfg), token_side=backbone_of(path).token_side)
    if not compute_missing:
        return select_resolutions(samples, config, cfg.resolution.manifest, model_fingerprint(path),
                                  missing_selection(cfg.resolution.manifest), progress=progress,
                                  judge=selection_judge(cfg))
    factory = RolloutAnswererFactory(cfg, path, config)
    try:
        return select_resolutions(samples, config, cfg.resolution.manifest, model_fingerprint(path), factory,
                                  progress=progress, judge=selection_judge(cfg))
    finally:
        factory.close()


SELECTION_STATS = "resolution_stats.json"  # in the job folder: the statistics of its offline resolution selection


def display_sizer(cfg: DictConfig, path: str, samples: list[Sample]) -> DisplaySizer:
    """The resolution strategy of ``cfg``; ``answer_divergence`` loads the offline selection of ``samples`` with
    the model at ``path`` (a single-process run computes what the manifest lacks, a multi-process one fails) and
    writes its statistics, time included (paper Table 11), to ``<output_dir>/resolution_stats.json``."""
    r = cfg.resolution
    selected = None
    if r.strategy == "answer_divergence":
        result = run_selection(cfg, path, list(dict.fromkeys(samples)),  # a mix may repeat samples
                               compute_missing=world_size(cfg) == 1)
        write_json(Path(cfg.output_dir, SELECTION_STATS), result.stats.as_dict())
        selected = result.sizes
    return DisplaySizer(r.strategy, cfg.vision.global_max_tokens, r.scale, r.min_tokens, seed=cfg.seed,
                        selected=selected, side=backbone_of(path).token_side)


def check_run_folder(cfg: DictConfig) -> None:
    """Refuse a multi-process launch (torchrun, ``world_size > 1``) that leaves the run folder to Hydra's default
    ``outputs/<date>/<time>``: every rank would resolve its own clock and write rollouts, statistics and the
    auto-resume lookup into a folder of its own. ``hydra.run.dir=<folder>`` (or ``output_dir=``) names one folder
    for all ranks. Multiruns (the SLURM launcher) resolve their sweep folder once, and a config composed outside
    ``@hydra.main`` sets ``output_dir`` itself: both pass."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if world_size(cfg) == 1:
        return
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # not under @hydra.main
        return
    if hydra_cfg.mode != RunMode.RUN:
        return
    given = {o.split("=", 1)[0].lstrip("+~") for o in (*hydra_cfg.overrides.hydra, *hydra_cfg.overrides.task)}
    if not given & {"hydra.run.dir", "output_dir"}:
        raise ValueError(f"a {world_size(cfg)}-process launch needs one run folder for every rank: add "
                         "hydra.run.dir=<folder> to the command (e.g. hydra.run.dir=outputs/stage1); without it each "
                         "rank resolves its own outputs/<date>/<time> and resumes, rollouts and statistics split")


def world_size(cfg: DictConfig) -> int:
    """Processes of the configured launch: ``trainer.devices`` (a count or a list of ids) x ``trainer.num_nodes``."""
    devices = cfg.trainer.devices
    per_node = len(devices) if isinstance(devices, ListConfig) else int(devices)
    return per_node * cfg.trainer.num_nodes


def trainable_samples(samples: list[Sample], sizer: DisplaySizer, cfg: DictConfig) -> list[Sample]:
    """The samples the resolution selection kept (``never_diverged: drop`` removes some)."""
    if sizer.strategy != "answer_divergence":
        return samples
    kept = [s for s in samples if s.id in sizer.selected]
    if not kept:
        raise ValueError(f"resolution selection dropped every sample (never_diverged="
                         f"{cfg.resolution.never_diverged}); use never_diverged=hardest or original")
    return kept


def updates_per_step(cfg: DictConfig) -> int:
    """Optimizer steps in one GRPO step (Lightning counts these as its global steps); the same on every rank."""
    g = cfg.grpo
    return optimizer_steps(g.prompts_per_step * g.group_size, g.mini_batch_size, g.ppo_epochs)

