"""`train.py` end to end on the embedded default (tiny model, synthetic data), as a user runs it."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lfpc.distributed import weights_digest
from lfpc.model.loading import load_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["logger=csv", "model=tiny", "data=synthetic", "grpo=tiny", "vision.global_max_tokens=64", "model.warmup.steps=20", "data.num_samples=4", "data.image_size=[1024,1024]",
         "trainer.max_steps=1", "grpo.group_size=2", "grpo.prompts_per_step=1", "grpo.mini_batch_size=2",
         "episode.max_turns=2"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def train(*overrides: str, cache: Path, run_dir: Path | None = None, multirun: bool = False,
          model: str = "tiny") -> str:
    """Run train.py (``model``: the model preset); a distributed run whose rendezvous port was taken meanwhile
    (Lightning picks a free port just before it starts the ranks) is run again, up to 3 times."""
    small = [o if o != "model=tiny" else f"model={model}" for o in SMALL]
    args = [sys.executable, "train.py", *(["-m"] if multirun else []), *small, f"cache_dir={cache}", *overrides]
    if run_dir is not None:
        args.append(f"hydra.{'sweep' if multirun else 'run'}.dir={run_dir}")
    env = {**os.environ, "WANDB_MODE": "offline"}
    for _ in range(3):
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        if proc.returncode == 0 or "address already in use" not in proc.stderr.lower():
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_stage1_checkpoints_resume_and_stage2_starts_from_stage1(cache, tmp_path):
    stage1 = tmp_path / "stage1"
    train("+stage=infogap", cache=cache, run_dir=stage1)
    first = summary(stage1)
    assert first["grpo_steps"] == 1
    assert (stage1 / "checkpoints" / "last.ckpt").is_file() and (stage1 / "hf_model" / "config.json").is_file()
    for key in ("reward/total", "reward/acc", "rollout/tool_calls", "rollout/response_tokens", "train/grad_norm",
                "train/clip_frac", "time/rollout", "time/update"):
        assert key in first, key
    rollouts = [json.loads(line) for line in (stage1 / "rollouts" / "rank0.jsonl").read_text().splitlines()]
    assert len(rollouts) == 2 and {r["step"] for r in rollouts} == {0}  # group_size 2 x 1 prompt, step 0
    assert all(set(r["scores"]) >= {"total", "acc", "fmt", "tool"} and r["turns"] for r in rollouts)
    config = yaml.safe_load((stage1 / ".hydra" / "config.yaml").read_text())
    assert config["stage"] == "infogap" and config["resolution"]["strategy"] != "original"
    assert first["learning_curve"]["reward/total"]["steps"] == 1
    assert first["learning_curve"]["reward/total"]["last_quarter"] == pytest.approx(first["reward/total"])

    train("+stage=infogap", "trainer.max_steps=2", f"ckpt_path={stage1 / 'checkpoints' / 'last.ckpt'}",
          cache=cache, run_dir=stage1)
    resumed = summary(stage1)
    assert resumed["grpo_steps"] == 2
    assert resumed["learning_curve"]["reward/total"]["steps"] == 2   # the curve before the resume came back too
    assert resumed["learning_curve"]["reward/total"]["first_quarter"] == pytest.approx(first["reward/total"])
    steps = []
    for path in sorted((stage1 / "csv").glob("version_*/metrics.csv")):  # the first run's log is kept
        with open(path) as handle:
            steps += [int(row["step"]) for row in csv.DictReader(handle) if row.get("reward/total")]
    assert len(steps) == 2 and steps[0] < steps[1]  # one row per GRPO step, the resumed one after the first

    stage2 = tmp_path / "stage2"
    train("+stage=grounding", f"init_from={stage1 / 'hf_model'}", cache=cache, run_dir=stage2)
    assert summary(stage2)["model"] == str(stage1 / "hf_model")
    config = yaml.safe_load((stage2 / ".hydra" / "config.yaml").read_text())
    assert config["reward"]["iou_mode"] == "thresh" and config["reward"]["use_l1"] is True


@pytest.mark.parametrize("model, model_type", [("tiny_qwen3_vl", "qwen3_vl"), ("tiny_qwen3_5", "qwen3_5")])
def test_newer_backbones_train_two_grpo_steps_with_resume(cache, tmp_path, model, model_type):
    """The same run on a tiny Qwen3-VL or Qwen3.5 (model=tiny_qwen3_vl / tiny_qwen3_5): warm-up, GRPO, checkpoint,
    resume, export."""
    run = tmp_path / model
    train(cache=cache, run_dir=run, model=model)
    assert summary(run)["grpo_steps"] == 1
    train("trainer.max_steps=2", cache=cache, run_dir=run, model=model)  # resumes from its last.ckpt
    resumed = summary(run)
    assert resumed["grpo_steps"] == 2 and resumed["learning_curve"]["reward/total"]["steps"] == 2
    assert json.loads((run / "hf_model" / "config.json").read_text())["model_type"] == model_type
    rollouts = [json.loads(line) for line in (run / "rollouts" / "rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rollouts] == [0, 0, 1, 1]
    assert all(r["display_size"] == [256, 256] for r in rollouts)  # 1024 px at 64 tokens of 32 px (Qwen2.5-VL: 224)


def test_sigterm_saves_a_checkpoint_and_exits_non_zero_saying_how_to_resume(cache, tmp_path):
    run = tmp_path / "run"
    small = [o for o in SMALL if not o.startswith(("trainer.max_steps=", "model.warmup.steps="))]
    args = [sys.executable, "train.py", *small, "trainer.max_steps=50", "model.warmup.steps=0", f"cache_dir={cache}",
            "grpo.mini_batch_size=1", f"hydra.run.dir={run}"]  # 2 optimizer steps per GRPO step
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    rollouts = run / "rollouts" / "rank0.jsonl"
    while not rollouts.exists() or len(rollouts.read_text().splitlines()) < 4:  # 2 GRPO steps of 2 trajectories
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)                          # what a cluster preemption sends
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr[-3000:]
    assert re.search(r"stopped by SIGTERM after [1-9]\d* GRPO step\(s\); checkpoint .*last.ckpt; resume with:", stderr)
    assert f"ckpt_path={run.resolve()}/checkpoints/last.ckpt hydra.run.dir={run.resolve()}" in stderr
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "hf_model").exists()
    steps = [json.loads(line)["step"] for line in rollouts.read_text().splitlines()]
    assert steps == [i // 2 for i in range(len(steps))]  # numbered by GRPO step (as metrics.csv), not optimizer step
def test_a_run_stopped_by_a_collapse_alarm_exits_non_zero_without_a_model(cache, tmp_path):
    run = tmp_path / "run"
    small = [o for o in SMALL if not o.startswith("trainer.max_steps=")]
    args = [sys.executable, "train.py", *small, "trainer.max_steps=4", "alarms.stop=true", "alarms.patience=2",
            "alarms.max_zero_adv_groups=-1", f"cache_dir={cache}", f"hydra.run.dir={run}"]  # trips at every step
    proc = subprocess.run(args, cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"}, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert re.search(r"stopped on a collapse alarm at GRPO step 2: .*groups/zero_adv = .* > -1 for 2\+ consecutive "
                     r"steps \(alarms.stop=true\): no hf_model exported", proc.stderr), proc.stderr[-3000:]
    result = summary(run)
    assert result["grpo_steps"] == 2 and result["stopped_on_alarm"].startswith("collapse alarm at GRPO step 2")
    assert result["alarm_checkpoint"] == str(run / "checkpoints" / "alarm.ckpt")
    assert (run / "checkpoints" / "alarm.ckpt").is_file() and not (run / "hf_model").exists()


def rollout_steps(run_dir: Path) -> list[tuple[int, str]]:
    lines = (run_dir / "rollouts" / "rank0.jsonl").read_text().splitlines()
    return [(record["step"], record["sample_id"]) for record in map(json.loads, lines)]


def test_interrupted_and_resumed_run_ends_identical_to_an_uninterrupted_one(cache, tmp_path):
    # the entropy bonus makes every step's gradient depend on its prompts even when all rewards are 0
    common = ["grpo.loss.entropy_coef=0.01", "data.num_samples=4"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(*common, "trainer.max_steps=3", "checkpoint.keep_every_n_steps=2", cache=cache, run_dir=straight)
    train(*common, "trainer.max_steps=1", cache=cache, run_dir=resumed)
    train(*common, "trainer.max_steps=3", cache=cache, run_dir=resumed)  # resumes from its last.ckpt by itself
    assert rollout_steps(resumed) == rollout_steps(straight)  # step 1 trains on the next prompts, not step 0's
    assert len({sample for _, sample in rollout_steps(straight)}) == 3
    assert summary(resumed)["rank_weight_digests"] == summary(straight)["rank_weight_digests"]
    # bounded checkpoints: the latest one (last.ckpt links it), plus those kept every keep_every_n_steps
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["kept", "last.ckpt", "step=3.ckpt"]
    assert (straight / "checkpoints" / "last.ckpt").resolve().name == "step=3.ckpt"
    assert sorted(p.name for p in (straight / "checkpoints" / "kept").iterdir()) == ["step=2.ckpt"]


def test_multirun_sweeps_rewards_sequentially_into_separate_folders(cache, tmp_path):
    train("reward=iou,iou_nothresh,none", cache=cache, run_dir=tmp_path, multirun=True)
    runs = sorted(p for p in tmp_path.iterdir() if (p / "summary.json").is_file())
    assert len(runs) == 3
    modes = sorted(yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["reward"]["iou_mode"] for run in runs)
    assert modes == ["none", "nothresh", "thresh"]


def test_fsdp2_two_gloo_ranks_update_and_resume_from_the_distributed_checkpoint(cache, tmp_path):
    # the launch path (Lightning's FSDP2 strategy, export from shards): each rank's digest is of all-gathered
    # tensors, so equal digests are expected by construction; test_fsdp2_update checks the update's values.
    # The entropy bonus guarantees a non-zero gradient even when every reward of the tiny policy is 0.
    # Global batch sizes: 2 prompts (one per rank) and mini-batches of 4 trajectories (2 per rank).
    sizes = ["trainer=cpu_fsdp2", "grpo.loss.entropy_coef=0.01", "grpo.prompts_per_step=2", "grpo.mini_batch_size=4"]
    train(*sizes, cache=cache, run_dir=tmp_path / "run")
    result = summary(tmp_path / "run")
    digests = result["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    initial = weights_digest(load_model(result["model"]).state_dict().items())
    assert digests[0] != initial
    # rerun in the same folder at max_steps: it resumes from the sharded checkpoint (a folder of per-rank shards)
    # and exports it without a rollout; ignoring the checkpoint would redo the (seeded) step and export the same
    # weights, but roll out (the rollout log would grow)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_dir()
    logged = [(tmp_path / "run" / "rollouts" / f"rank{r}.jsonl").read_text() for r in range(2)]
    train(*sizes, cache=cache, run_dir=tmp_path / "run")
    assert summary(tmp_path / "run")["rank_weight_digests"] == digests
    assert [(tmp_path / "run" / "rollouts" / f"rank{r}.jsonl").read_text() for r in range(2)] == logged
    # one more step from the sharded checkpoint ends where an uninterrupted 2-step run ends: weights AND Adam
    # moments were restored (fresh moments would make the second update differ), on the next prompts
    train(*sizes, "trainer.max_steps=2", cache=cache, run_dir=tmp_path / "run")
    train(*sizes, "trainer.max_steps=2", cache=cache, run_dir=tmp_path / "straight")
    assert summary(tmp_path / "run")["rank_weight_digests"] == summary(tmp_path / "straight")["rank_weight_digests"]
    assert summary(tmp_path / "run")["rank_weight_digests"] != digests
    assert rollout_steps(tmp_path / "run") == rollout_steps(tmp_path / "straight")


def test_bf16_true_trains_and_logs_rollout_metrics_in_float32(cache, tmp_path):
    # bf16-true casts every batch (a frozen Sample used to crash it) and sets the default dtype to bf16
    train("trainer.precision=bf16-true", "grpo.prompts_per_step=2", cache=cache, run_dir=tmp_path)
    result = summary(tmp_path)
    rollouts = [json.loads(line) for line in (tmp_path / "rollouts" / "rank0.jsonl").read_text().splitlines()]
    assert len(rollouts) == 4 and result["grpo_steps"] == 1
    for key, values in (("reward/total", [r["scores"]["total"] for r in rollouts]),
                        ("reward/fmt", [r["scores"]["fmt"] for r in rollouts]),
                        ("rollout/response_tokens", [r["response_tokens"] for r in rollouts])):
        assert result[key] == pytest.approx(sum(values) / len(values), rel=1e-6), key


def test_lora_and_dynamic_sampling_on_fsdp2_export_merged_weights_stage2_reads(cache, tmp_path):
    # the 1-4 GPU options on the launch path: a LoRA policy sharded over 2 gloo ranks with dynamic sampling, its
    # sharded checkpoint resumed, its export a plain transformers model that Stage II starts from (LoRA again)
    sizes = ["trainer=cpu_fsdp2", "grpo.loss.entropy_coef=0.01", "grpo.prompts_per_step=2", "grpo.mini_batch_size=4",
             "+lora=default", "model.lora.r=4", "grpo.dynamic_sampling.enabled=true",
             "grpo.dynamic_sampling.max_rounds=2"]
    run = tmp_path / "run"
    train(*sizes, "trainer.max_steps=2", cache=cache, run_dir=run)
    result = summary(run)
    digests = result["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    exported = load_model(run / "hf_model").state_dict()
    initial = load_model(result["model"]).state_dict()
    assert exported.keys() == initial.keys() and weights_digest(exported.items()) == digests[0]
    changed = {k for k, v in exported.items() if not torch.equal(v, initial[k])}
    assert changed and all(re.search(r"language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$", k)
                           for k in changed)  # only the adapted weights moved (entropy bonus: a gradient)
    generated = result["sampling/groups_generated"]  # summed over the ranks: 1 prompt each, 1 or 2 rounds
    assert 2 <= generated <= 4 and result["sampling/groups_dropped"] == generated - 2
    # one more step from the sharded checkpoint (adapters and their Adam moments) ends like a straight 3-step run
    train(*sizes, "trainer.max_steps=3", cache=cache, run_dir=run)
    train(*sizes, "trainer.max_steps=3", cache=cache, run_dir=tmp_path / "straight")
    assert summary(run)["rank_weight_digests"] == summary(tmp_path / "straight")["rank_weight_digests"]
    assert rollout_steps(run) == rollout_steps(tmp_path / "straight")
    train("+stage=grounding", f"init_from={run / 'hf_model'}", "+lora=default", "model.lora.r=4", cache=cache,
          run_dir=tmp_path / "stage2")
    assert summary(tmp_path / "stage2")["model"] == str(run / "hf_model")
