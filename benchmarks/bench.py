"""LFPC performance benchmarks: rollout throughput, GRPO step time, and the cost of the image path.

Run from the repository root (``python -m benchmarks.bench --help``; BENCHMARKS.md has the results). One run builds
one policy and, per backend (transformers ``hf``, ``vllm``), one rollout engine, then times full GRPO steps
(weight sync, multi-turn crop rollout, log-prob pass, update) on the same synthetic high-resolution images for every
(token budget, group size), with the image path instrumented (:mod:`benchmarks.instrument`). Episodes follow a
scripted crop policy (:mod:`benchmarks.scripted`) because a random-weight model never calls the tool.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import os
import platform
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Sequence

import torch
from PIL import Image

from benchmarks.archs import ARCH_CHOICES, FlopModel, build_model_dir, peak_flops
from benchmarks.instrument import HOST_CATEGORIES, SectionTimer
from benchmarks.report import format_report
from benchmarks.scripted import ScriptedCropPolicy, scripted_policy
from lfpc.data.records import Sample, load_jsonl
from lfpc.data.synthetic import generate_synthetic
from lfpc.grpo.advantages import group_advantages
from lfpc.grpo.update import PolicyUpdate
from lfpc.model.loading import DTYPES
from lfpc.rewards import RewardConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.episodes import EpisodeConfig, Trajectory
from lfpc.rollout.factory import build_engine
from lfpc.training.display import DisplaySizer
from lfpc.training.module import GRPOConfig, GRPOModule, PolicyConfig
from lfpc.training.sharding import resident_state_bytes
from lfpc.vision.budget import fit_to_budget, resize_to_budget
from lfpc.vision.images import DEFAULT_CACHE_ITEMS, load_image, set_cache_size

QUICK = {"image_size": (1024, 576), "groups": [2], "budgets": [64, 256], "large_groups": [2], "crops": 1,
         "crop_tokens": 64, "new_tokens": 8, "samples": 1}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` replaces the sizes with the smallest ones (the smoke test)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCH_CHOICES, default="tiny",
                        help="tiny test model, or random-init Qwen2.5-VL at the real 3B/7B dimensions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="policy weights; default: float32 with --bf16-mixed, else bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--bf16-mixed", action="store_true",
                        help="bf16 autocast compute over --dtype weights (float32 master weights and Adam states), "
                             "as Lightning's precision bf16-mixed (conf/trainer/gpu.yaml); vLLM then runs in bf16")
    parser.add_argument("--backends", nargs="+", choices=("hf", "vllm"), default=["hf", "vllm"])
    parser.add_argument("--groups", nargs="+", type=int, default=[2, 4, 8, 16], help="group sizes at the first budget")
    parser.add_argument("--budgets", nargs="+", type=int, default=[1024, 16384], help="global-image token budgets")
    parser.add_argument("--large-groups", nargs="+", type=int, default=[2],
                        help="group sizes at the other budgets (the large budget is slow on CPU); compared with the "
                             "same group size at the first budget")
    parser.add_argument("--samples", type=int, default=1, help="prompts per step")
    parser.add_argument("--crops", type=int, default=2, help="zoom-ins per episode before the answer")
    parser.add_argument("--crop-tokens", type=int, default=1024, help="visual-token budget of each crop")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens the model generates per turn")
    parser.add_argument("--image-size", nargs=2, type=int, default=(7680, 4320), metavar=("W", "H"))
    parser.add_argument("--micro-batch", type=int, default=2, help="trajectories per forward/backward")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: see archs.py)")
    parser.add_argument("--vllm-memory", type=float, default=None,
                        help="vLLM gpu_memory_utilization (GPU only); default: what the trainer's state leaves "
                             "(lfpc.rollout.vllm_engine.memory_share)")
    parser.add_argument("--vllm-eager", action="store_true",
                        help="vLLM without CUDA graphs / compilation (starts faster; training uses graphs)")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "lfpc-bench")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 is least disturbed on a shared machine")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each measured step this many times and keep the fastest (noisy machines)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test, ~10 s)")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") and not args.bf16_mixed else "float32"
    if min(args.crops, args.samples, args.repeats, *args.groups, *args.large_groups) < 1:
        parser.error("--crops, --samples, --repeats and every group size must be >= 1")
    return args


class Clock:
    """Phase stopwatch that waits for the GPU before reading the time; on CUDA it also records each phase's peak
    of allocated memory (``torch.cuda.max_memory_allocated``, reset when the phase starts) in ``peak_bytes``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak_bytes: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[name] = time.perf_counter() - start
        if self.device.type == "cuda":
            self.peak_bytes[name] = torch.cuda.max_memory_allocated(self.device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class Bench:
    """One policy, its optimizer and the instrumented image path, shared by every measured step."""

    def __init__(self, args: argparse.Namespace, model_dir: Path, timer: SectionTimer) -> None:
        self.args, self.model_dir, self.timer = args, model_dir, timer
        self.device = torch.device(args.device)
        self.context_limit = (max(args.budgets) + args.crops * args.crop_tokens
                              + (args.crops + 1) * (args.new_tokens + 256) + 1024)
        episode = EpisodeConfig(max_turns=args.crops, max_new_tokens_per_turn=args.new_tokens,
                                max_response_tokens=self.context_limit, max_context_tokens=self.context_limit,
                                crop_max_tokens=args.crop_tokens)
        policy = PolicyConfig(path=str(model_dir), dtype=args.dtype, gradient_checkpointing=args.arch != "tiny",
                              global_max_tokens=max(args.budgets))
        self.module = GRPOModule(policy, GRPOConfig(micro_batch_size=args.micro_batch), episode, RewardConfig(),
                                 DisplaySizer("original", args.budgets[0]), seed=args.seed)
        self.module.configure_model()
        self.module.setup("fit")
        self.module.to(self.device)
        self.module.policy.train()  # as under Lightning (gradient checkpointing only acts in training mode)
        self.optimizer = self.module.configure_optimizers()
        self.flops = FlopModel.of(self.module.policy)
        self.compute = compute_context(args)
        self.policy: ScriptedCropPolicy | None = None
        self.backend: str | None = None
        self.trajectories: list[Trajectory] = []  # the last step's
        self._blank = _blank_image(args.work_dir)

    @property
    def codec(self) -> ChatCodec:
        return self.module.codec

    def use_backend(self, backend: str) -> None:
        """Build the rollout engine of ``backend`` (replacing the previous one) behind the scripted policy."""
        if self.policy is not None:
            self.policy.sleep()  # a vLLM engine gives its KV cache and weights back before it is dropped
        self.policy, self.backend = None, None
        self.module.set_engine(None)  # frees the previous engine before the next one takes memory
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        a = self.args
        # the engines hold the policy in the compute dtype (as conf/rollout/vllm.yaml); the transformers replica
        # leaves the GPU during the update (the trainer's float32 weights, gradients and AdamW fill it at 3B)
        dtype = "bfloat16" if a.bf16_mixed else a.dtype
        cfg = {"backend": "hf", "offload_when_asleep": True}
        if backend == "vllm":
            cfg = {"backend": "vllm", "dtype": dtype, "max_model_len": self.context_limit,
                   "max_images_per_prompt": a.crops + 1, "gpu_memory_utilization": a.vllm_memory,
                   "enforce_eager": True if a.vllm_eager else None}
        engine = build_engine(cfg, self.codec, str(self.model_dir), self.device, dtype=dtype, seed=a.seed,
                              trainer_bytes=resident_state_bytes(self.module.policy))
        self.policy = scripted_policy(engine, self.codec, a.crops, self.timer)
        self.module.set_engine(self.policy)
        self.backend = backend

    def step(self, backend: str, budget: int, group: int, samples: list[Sample], crops: int | None = None,
             train: bool = True, cache_items: int = DEFAULT_CACHE_ITEMS) -> dict:
        """One timed GRPO step (sync, rollout, log-probs, update) starting from a cold image cache of
        ``cache_items`` images; the trajectories are kept in ``self.trajectories``."""
        with self.compute():
            return self._step(backend, budget, group, samples, crops, train, cache_items)

    def _step(self, backend: str, budget: int, group: int, samples: list[Sample], crops: int | None, train: bool,
              cache_items: int) -> dict:
        module, clock = self.module, Clock(self.device)
        module.grpo = dataclasses.replace(module.grpo, group_size=group)
        module.display_sizer = DisplaySizer("original", budget)
        self.policy.crops = self.args.crops if crops is None else crops
        self._cold_image_cache(cache_items)
        with clock("sync"):
            module.sync_rollout_weights()
        self.timer.reset()
        self.policy.generated_tokens = 0
        with clock("rollout"):
            trajectories = module.rollout(samples, seed=self.args.seed)
        module.engine.sleep()  # as GRPOModule.training_step: vLLM on CUDA frees its KV cache and weights
        self.trajectories = trajectories
        host, calls = self.timer.snapshot()
        contexts = [t.context for t in trajectories]
        result = {"backend": backend, "budget": budget, "group": group, "samples": len(samples),
                  "trajectories": len(trajectories), "turns": sum(len(t.turns) for t in trajectories),
                  "crops": sum(1 for t in trajectories for e in t.events if e["box"] is not None),
                  "generated_tokens": self.policy.generated_tokens, "model_s": host.pop("model", 0.0),
                  "host_s": {k: host.get(k, 0.0) for k in HOST_CATEGORIES},
                  "calls": {k: calls.get(k, 0) for k in HOST_CATEGORIES},
                  "jpeg_decodes": calls.get("jpeg_decodes", 0),
                  "seq_tokens": sum(len(c.token_ids) for c in contexts),
                  "patches": sum(int(p.shape[0]) for c in contexts for p in c.pixel_values),
                  "forward_flops": self.flops.forward([len(c.token_ids) for c in contexts],
                                                      [int(p.shape[0]) for c in contexts for p in c.pixel_values])}
        if train:
            result["update_stats"] = self.train(trajectories, clock)
        result.update({f"{name}_s": seconds for name, seconds in clock.seconds.items()})
        if clock.peak_bytes:
            result["peak_gib"] = {name: value / 2 ** 30 for name, value in clock.peak_bytes.items()}
        return _derived(result)

    def policy_update(self, trajectories: int, policy: torch.nn.Module | None = None,
                      suppress_token_ids: Sequence[int] = ()) -> PolicyUpdate:
        """The update of one GRPO step over ``trajectories`` trajectories as one mini-batch (one optimizer step),
        on ``policy`` (default: the module's), its log-probs renormalised without ``suppress_token_ids``."""
        grpo = self.module.grpo
        return PolicyUpdate(policy or self.module.policy, self.optimizer, grpo.loss, self.codec.pad_id,
                            self.codec.image_pad_id, mini_batch_size=trajectories,
                            micro_batch_size=self.args.micro_batch, max_grad_norm=grpo.max_grad_norm,
                            temperature=grpo.temperature, suppress_token_ids=suppress_token_ids)

    def train(self, trajectories: list[Trajectory], clock: Clock, policy: torch.nn.Module | None = None,
              advantages: torch.Tensor | None = None) -> dict[str, float]:
        """The "old" log-prob pass (timed as ``logprob``) and one optimizer step (``update``) on ``trajectories``
        with ``advantages`` (default: the group advantages of their rewards); returns the update's statistics."""
        contexts = [t.context for t in trajectories]
        update = self.policy_update(len(contexts), policy)
        if advantages is None:
            rewards = torch.tensor([t.scores["total"] for t in trajectories])
            advantages = group_advantages(rewards, torch.tensor([t.group for t in trajectories]))
        with clock("logprob"):
            update.logprobs(contexts)
        with clock("update"):
            return update(contexts, advantages)

    def _cold_image_cache(self, cache_items: int) -> None:
        """Evict every decoded image (a step's prompts are new images in training), using the public cache API."""
        set_cache_size(1)
        load_image(self._blank)  # the one image left is a 28x28 blank
        set_cache_size(cache_items)


def compute_context(args: argparse.Namespace) -> Callable[[], ContextManager]:
    """What the trainer's passes run in: Lightning's bf16 autocast under ``--bf16-mixed``, else nothing."""
    if not args.bf16_mixed:
        return nullcontext
    from lightning.pytorch.plugins.precision import MixedPrecision
    return MixedPrecision("bf16-mixed", torch.device(args.device).type).forward_context


def _blank_image(work_dir: Path) -> Path:
    path = work_dir / "blank.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (28, 28)).save(path)
    return path


def _derived(r: dict) -> dict:
    """Throughputs and shares of one step result."""
    rollout = r["rollout_s"]
    r["traj_per_s"] = r["trajectories"] / rollout
    r["gen_tokens_per_s"] = r["generated_tokens"] / rollout
    r["outside_model_s"] = max(rollout - r["model_s"], 0.0)
    r["outside_model_share"] = r["outside_model_s"] / rollout
    r["host_share"] = {k: v / rollout for k, v in r["host_s"].items()}
    if "update_s" in r:
        r["step_s"] = sum(r[f"{k}_s"] for k in ("sync", "rollout", "logprob", "update"))
        r["phase_share"] = {k: r[f"{k}_s"] / r["step_s"] for k in ("sync", "rollout", "logprob", "update")}
        r["update_tokens_per_s"] = r["seq_tokens"] / r["update_s"]
    return r


def add_mfu(steps: list[dict], peak: float) -> None:
    """Model FLOPs utilisation of each trained step's update (3 x the forward FLOPs) and log-prob pass."""
    for r in steps:
        r["update_mfu"] = 3 * r["forward_flops"] / r["update_s"] / peak
        r["logprob_mfu"] = r["forward_flops"] / r["logprob_s"] / peak


def image_op_costs(sample: Sample, budgets: Sequence[int], crop_tokens: int, codec: ChatCodec) -> dict:
    """Seconds of each image-path operation, once each, on one original image (a cold JPEG decode included)."""
    costs: dict[str, float] = {}

    def timed(name, function, *args):
        start = time.perf_counter()
        out = function(*args)
        costs[name] = time.perf_counter() - start
        return out

    original = timed("decode", lambda: Image.open(sample.image_path).convert("RGB"))
    for budget in budgets:
        view = timed(f"resize_global_{budget}", original.resize, fit_to_budget(original.size, budget),
                     Image.Resampling.BICUBIC)
        timed(f"processor_global_{budget}", codec.encode_image, view)
    width, height = original.size
    crop = timed("crop", original.crop, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    crop = timed("resize_crop", resize_to_budget, crop, crop_tokens)
    timed("processor_crop", codec.encode_image, crop)
    return {"image_size": list(original.size), "seconds": costs}


def cache_pressure_check(bench: Bench, samples: list[Sample], budget: int) -> dict:
    """Rollout of ``samples`` with an image cache of ONE image: counts JPEG decodes against samples and crops.

    Episodes of different samples interleave turn by turn, so a per-turn decode would miss the cache on every crop.
    """
    try:
        result = bench.step("hf", budget, group=2, samples=samples, train=False, cache_items=1)
    finally:
        set_cache_size(DEFAULT_CACHE_ITEMS)
    return {"samples": len(samples), "group": 2, "crops": result["crops"], "decodes": result["jpeg_decodes"],
            "processor_calls": result["calls"]["processor"], "cache_items": 1}


def machine_info(device: torch.device) -> dict:
    """Where the figures were measured."""
    import transformers
    return {"platform": platform.platform(), "cpu": _cpu_model(), "cpu_cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "transformers": transformers.__version__, "load_average": os.getloadavg()[0],
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def vllm_status() -> str | None:
    """Why vLLM cannot be benchmarked here (None when it is importable)."""
    if importlib.util.find_spec("vllm") is None:
        return "not installed"
    return None


def load_samples(args: argparse.Namespace, count: int) -> list[Sample]:
    """``count`` synthetic samples at ``--image-size`` (generated once, cached under the work dir)."""
    width, height = args.image_size
    path = generate_synthetic(args.work_dir / f"synthetic-{width}x{height}", count, (width, height), args.seed)
    return load_jsonl(path)


def run(args: argparse.Namespace, command: str) -> dict:
    """Run every measurement of ``args`` and return the results (what the report prints)."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = SectionTimer()
    results: dict = {"command": command, "machine": machine_info(device), "settings": _settings(args)}
    start_peak = peak_flops(device, DTYPES[args.dtype], args.peak_tflops)
    model_dir = build_model_dir(args.arch, args.work_dir / "models", args.device, args.dtype)
    samples = load_samples(args, args.samples + 2)
    step_samples, pressure_samples = samples[:args.samples], samples[args.samples:]
    with timer.hooks():
        bench = Bench(args, model_dir, timer)
        results["model"] = {"arch": args.arch, "dtype": args.dtype, "device": args.device,
                            **dataclasses.asdict(bench.flops)}
        results["image_ops"] = image_op_costs(step_samples[0], args.budgets, args.crop_tokens, bench.codec)
        results["steps"], results["backends"] = [], {}
        for backend in args.backends:
            status = vllm_status() if backend == "vllm" else None
            if status is None:
                status = _try_backend(bench, backend)
            results["backends"][backend] = status or "ok"
            if status:
                continue
            results["steps"] += measure_backend(bench, backend, step_samples)
            if backend == "hf":
                results["cache_pressure"] = cache_pressure_check(bench, pressure_samples, args.budgets[0])
    results["machine"]["load_average_end"] = os.getloadavg()[0]
    # A measured peak is taken before and after the steps and the higher kept: other load only ever lowers it.
    end_peak = peak_flops(device, DTYPES[args.dtype], args.peak_tflops)
    results["model"]["peak_flops"], results["model"]["peak_source"] = max(start_peak, end_peak)
    add_mfu(results["steps"], results["model"]["peak_flops"])
    return results


def measure_backend(bench: Bench, backend: str, samples: list[Sample]) -> list[dict]:
    """A warm-up step (not reported), then one step per (budget, group size), the fastest of ``--repeats`` each."""
    args = bench.args
    bench.step(backend, args.budgets[0], min(args.groups), samples, crops=1)
    steps = []
    for budget in args.budgets:
        for group in args.groups if budget == args.budgets[0] else args.large_groups:
            runs = [bench.step(backend, budget, group, samples) for _ in range(args.repeats)]
            steps.append(min(runs, key=lambda r: r["step_s"]))
    return steps


def _try_backend(bench: Bench, backend: str) -> str | None:
    """Build the backend's engine; the reason it failed to start, or None."""
    try:
        bench.use_backend(backend)
    except Exception as err:  # an optional backend that cannot start is reported, the other backends still run
        return f"failed to start ({type(err).__name__}: {err})"
    return None


def _settings(args: argparse.Namespace) -> dict:
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: run, print the report, optionally write the JSON results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results = run(args, " ".join(["python -m benchmarks.bench", *argv]))
    print(format_report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
