"""The GPU check for a bare, offline GPU machine: one command, under 10 minutes on one H100, nothing installed.

It runs with the machine's own torch and transformers; the pure-Python packages such a machine lacks (Lightning,
torchmetrics, Hydra, OmegaConf) come unpacked in ``.gpu-site/`` (``make gpu-site`` prepares it where pip can reach
a registry), and the project from the checkout itself::

    PYTHONPATH=.gpu-site:$PWD python3 -m benchmarks.gpu_offline --out DIR

Steps, each in its own process under a share of one time budget (a failed step is recorded, the next one runs):

1. ``environment``: versions, the GPU, and where each package was imported from.
2. ``mini_fsdp2``: ``train.py`` for 2 GRPO steps on the mini model (``models/mini``) through the paper's launch path
   on one GPU: FSDP2 over an NCCL process group, float32 master weights with bf16 compute, the transformers rollout
   engine, a distributed (DCP) checkpoint and the export.
3. ``gpu_check``: :mod:`benchmarks.gpu_check` at the 3B dimensions (random init), ``--quick``, on the engines that
   import here (transformers; vLLM when installed), sized to fit one 80 GB GPU.
4. ``planner``: the memory planner's predictions for the mini run (``python -m lfpc.plan``), beside the measured peak,
   when this checkout has the planner.

Peaks of device memory are sampled from ``nvidia-smi`` twice a second (the driver's view: every process, CUDA
context included). It writes ``DIR/gpu_offline.json`` and ``DIR/gpu_offline.md`` (a section for BENCHMARKS.md) and
exits with status 1 when a step failed. ``--device cpu`` runs the same steps on CPU with the tiny model
(``tests/test_gpu_offline.py``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 570          # the whole command, under the 10 minutes one H100 is lent for
STEP_LIMITS_S = {"mini_fsdp2": 210, "gpu_check": 330, "planner": 60}
# what the project imports besides torch and transformers (and their own dependencies): carried in .gpu-site/
CARRIED = ("lightning", "lightning_utilities", "torchmetrics", "fsspec", "omegaconf", "hydra", "antlr4")
NEEDED = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "PIL", "yaml", "tqdm", *CARRIED)
# train.py on the mini model through the paper's launch path, on one GPU
MINI_GPU = ["+stage=baseline", "trainer=fsdp_8gpu", "trainer.devices=1", "trainer.max_steps=2", "rollout=hf",
            "model.fsdp_param_dtype=bfloat16", "logger=csv"]
# the same path on CPU (one gloo rank) with the tiny model and the smallest sizes: the test's mode
MINI_CPU = ["+stage=baseline", "trainer=cpu_fsdp2", "trainer.devices=1", "trainer.max_steps=1", "rollout=hf",
            "logger=csv", "model=tiny", "model.warmup.steps=0", "data=synthetic", "data.num_samples=2",
            "data.image_size=[256,256]", "grpo=tiny", "grpo.group_size=2", "grpo.prompts_per_step=1",
            "grpo.mini_batch_size=2", "episode.max_turns=1", "vision.global_max_tokens=64"]
GPU_CHECK_CPU = ["--device", "cpu", "--dims", "tiny", "--image-size", "1024", "576", "--budget", "64",
                 "--crop-tokens", "64", "--new-tokens", "8", "--train-backend", "hf", "--no-full-head"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the results (and each step's own)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the same steps with the tiny model on CPU (the test)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for every step together")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "lfpc-gpu-offline",
                        help="generated data and the random 3B checkpoint")
    return parser.parse_args(argv)


class MemorySampler:
    """Device memory in use (MiB, every process), from ``nvidia-smi`` twice a second while a step runs."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "MemorySampler":
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                          "-lms", "500"], stdout=self.log.open("w"), stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *_) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def peak_gib(self) -> float | None:
        values = [float(v) for v in self.log.read_text().split() if v.replace(".", "", 1).isdigit()] \
            if self.log.is_file() else []
        return max(values) / 1024 if values else None


def run_step(out: Path, name: str, command: list[str], limit_s: float, env: dict[str, str]) -> dict:
    """Run one step's command (its output in ``out/<name>.log``) under ``limit_s``; status, seconds, peak memory."""
    start = time.perf_counter()
    log = out / f"{name}.log"
    with MemorySampler(out / f"{name}.memory.txt") as sampler, log.open("w") as sink:
        try:
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                  timeout=limit_s).returncode
            status = "ok" if code == 0 else f"error: exit status {code}"
        except subprocess.TimeoutExpired:
            status = f"error: over its {limit_s:.0f} s"
    tail = log.read_text(errors="replace").splitlines()[-15:]
    result = {"status": status, "seconds": time.perf_counter() - start, "command": " ".join(command),
              "peak_device_memory_gib": sampler.peak_gib()}
    if status != "ok":
        result["log_tail"] = tail
    print(f"[gpu_offline] {name}: {status} ({result['seconds']:.0f} s)", flush=True)
    return result


def environment() -> dict:
    """Versions, the GPU, and where each needed package comes from (None: missing)."""
    origins = {}
    for name in NEEDED:
        spec = importlib.util.find_spec(name)
        origins[name] = spec.origin if spec is not None else None
    info = {"python": platform.python_version(), "platform": platform.platform(), "origins": origins,
            "missing": [name for name, origin in origins.items() if origin is None],
            "lfpc_from_checkout": (importlib.util.find_spec("lfpc").origin or "").startswith(str(ROOT)),
            "vllm": importlib.util.find_spec("vllm") is not None,
            "planner": _planner_available()}
    if not info["missing"]:
        import torch
        import transformers
        info.update(torch=torch.__version__, cuda=torch.version.cuda, transformers=transformers.__version__)
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2 ** 30)
    return info


def _planner_available() -> bool:
    try:
        return importlib.util.find_spec("lfpc.plan") is not None
    except ModuleNotFoundError:
        return False


def mini_figures(run_dir: Path) -> dict:
    """What the mini run left: its summary's figures, and whether the checkpoint and export were written."""
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return {"grpo_steps": summary.get("grpo_steps"),
            "phase_seconds": {k: v for k, v in summary.items() if k.startswith("time/")},
            "distributed_checkpoint": (run_dir / "checkpoints" / "last.ckpt").is_dir(),
            "exported": (run_dir / "hf_model" / "config.json").is_file()}


def gpu_check_figures(folder: Path) -> dict:
    """The headline figures of gpu_check.json: per-section status, step split, memory peaks, failed checks."""
    path = folder / "gpu_check.json"
    if not path.is_file():
        return {}
    results = json.loads(path.read_text())
    sections = results["sections"]
    train, head = sections.get("train", {}), sections.get("lm_head", {})
    return {"passed": results["passed"], "total_s": results["total_s"], "dims": results["settings"]["dims"],
            "sections": {name: section["status"] for name, section in sections.items()},
            "train_mean": {k: train.get("mean", {}).get(k) for k in ("step_s", "sync_s", "rollout_s", "logprob_s",
                                                                     "update_s", "update_mfu", "peak_gib")},
            "resident_gib": train.get("memory_gib"),
            "lm_head_peak_gib": {name: head[name]["peak_gib"] for name in ("policy_positions", "all_positions")
                                 if name in head},
            "failed_checks": [c["name"] for c in results["checks"] if not c["passed"]]}


def run(args: argparse.Namespace) -> dict:
    """Every step in order within the budget; the results."""
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline", "LFPC_CACHE": str(args.work_dir / "cache"), "PYTHONUNBUFFERED": "1"}
    results = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "device": args.device,
               "environment": environment(), "steps": {}}
    if results["environment"]["missing"]:
        results["steps"]["environment"] = {"status": "error: missing " + ", ".join(results["environment"]["missing"])
                                                     + " (PYTHONPATH=.gpu-site:$PWD, prepared by `make gpu-site`)"}
        return _finish(results, start)

    def left(name: str) -> float:
        return max(1.0, min(STEP_LIMITS_S[name], args.budget_s - (time.perf_counter() - start)))

    gpu = args.device == "cuda"
    mini_overrides = [*(MINI_GPU if gpu else MINI_CPU), f"hydra.run.dir={args.out / 'mini_fsdp2'}"]
    step = run_step(args.out, "mini_fsdp2", [sys.executable, "train.py", *mini_overrides], left("mini_fsdp2"), env)
    results["steps"]["mini_fsdp2"] = {**step, **mini_figures(args.out / "mini_fsdp2")}

    backends = ["hf", "vllm"] if results["environment"]["vllm"] else ["hf"]
    check = [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(args.out / "gpu_check"), "--quick",
             "--work-dir", str(args.work_dir), "--backends", *backends, *([] if gpu else GPU_CHECK_CPU)]
    step = run_step(args.out, "gpu_check", check, left("gpu_check"), env)
    results["steps"]["gpu_check"] = {**step, **gpu_check_figures(args.out / "gpu_check")}

    if results["environment"]["planner"]:
        # the mini run's export: the model it trained (a tiny model's own folder is built by train.py, not here)
        planner = [sys.executable, "-m", "lfpc.plan", *mini_overrides,
                   f"init_from={args.out / 'mini_fsdp2' / 'hf_model'}"]
        step = run_step(args.out, "planner", planner, left("planner"), env)
        step["output"] = (args.out / "planner.log").read_text(errors="replace").splitlines()[-40:]
        results["steps"]["planner"] = step
    else:
        results["steps"]["planner"] = {"status": "skipped: lfpc.plan is not in this checkout, so no planned peaks "
                                                 "stand beside the measured ones"}
    return _finish(results, start)


def _finish(results: dict, start: float) -> dict:
    results["total_s"] = time.perf_counter() - start
    results["passed"] = all(not s["status"].startswith("error") for s in results["steps"].values())
    return results


def format_markdown(results: dict) -> str:
    """The section for BENCHMARKS.md: where it ran, each step, the measured figures (and the planned ones)."""
    env = results["environment"]
    where = (f"measured on GPU: {env.get('gpu')} ({_fmt(env.get('gpu_memory_gib'))} GiB)" if results["device"] == "cuda"
             else "measured on CPU (the tiny model)")
    lines = [f"### Offline GPU check (benchmarks/gpu_offline.py): {'PASSED' if results['passed'] else 'FAILED'}", "",
             f"{where}; torch {env.get('torch')} (CUDA {env.get('cuda')}), transformers {env.get('transformers')}, "
             f"Python {env['python']}, vLLM {'installed' if env['vllm'] else 'not installed'}; "
             f"{results['started']}, {_fmt(results['total_s'])} s in all.", "",
             "| step | status | seconds | peak device memory GiB (nvidia-smi) |", "|---|---|---|---|"]
    for name, step in results["steps"].items():
        lines.append(f"| {name} | {step['status']} | {_fmt(step.get('seconds'))} | "
                     f"{_fmt(step.get('peak_device_memory_gib'))} |")
    mini = results["steps"].get("mini_fsdp2", {})
    if mini.get("grpo_steps") is not None:
        lines += ["", f"Mini FSDP2 run: {mini['grpo_steps']} GRPO steps, distributed checkpoint "
                      f"{'written' if mini['distributed_checkpoint'] else 'MISSING'}, export "
                      f"{'written' if mini['exported'] else 'MISSING'}; seconds per phase (last step): "
                      + ", ".join(f"{k.split('/')[-1]} {_fmt(v)}" for k, v in mini["phase_seconds"].items())]
    check = results["steps"].get("gpu_check", {})
    if check.get("train_mean"):
        mean = check["train_mean"]
        verdict = "passed" if check["passed"] else "FAILED"
        lines += ["", f"gpu_check ({check['dims']} random init, --quick): {verdict}; step "
                      f"{_fmt(mean['step_s'])} s (sync {_fmt(mean['sync_s'])}, rollout {_fmt(mean['rollout_s'])}, "
                      f"log-prob {_fmt(mean['logprob_s'])}, update {_fmt(mean['update_s'])}), update MFU "
                      f"{_fmt(mean['update_mfu'])}; allocated peaks GiB by phase: {_peaks(mean['peak_gib'])}; "
                      f"resident GiB: {_peaks(check['resident_gib'])}; LM head peaks GiB: "
                      + "; ".join(f"{k.replace('_', ' ')}: {_peaks(v)}" for k, v in check["lm_head_peak_gib"].items())]
        if check["failed_checks"]:
            lines.append(f"Failed checks: {', '.join(check['failed_checks'])}")
    planner = results["steps"].get("planner", {})
    lines += ["", f"Planner: {planner.get('status')}"]
    if planner.get("output"):
        lines += ["", "```", *planner["output"], "```"]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def _peaks(values: dict | None) -> str:
    return "-" if not values else ", ".join(f"{k} {_fmt(v)}" for k, v in values.items())


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: run, write ``gpu_offline.json`` and ``gpu_offline.md``; 0 when every step passed."""
    args = parse_args(argv)
    args.out, args.work_dir = args.out.resolve(), args.work_dir.resolve()  # the steps run from the checkout
    results = run(args)
    (args.out / "gpu_offline.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "gpu_offline.md").write_text(format_markdown(results))
    print(f"[gpu_offline] {'PASSED' if results['passed'] else 'FAILED'}: {args.out / 'gpu_offline.md'}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
