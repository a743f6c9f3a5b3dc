"""The GPU verification script (benchmarks/gpu_check.py) on CPU with the tiny model: every section runs, the JSON and
markdown summaries hold their figures, log-probs agree, and a failing section is recorded without stopping the run."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from PIL import Image

from benchmarks import gpu_check
from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.rollout.inputs import batch_inputs

SMALL = ["--device", "cpu", "--dims", "tiny", "--quick", "--backends", "hf", "vllm", "--image-size", "1024", "576",
         "--budget", "64", "--crop-tokens", "64", "--new-tokens", "8", "--train-backend", "hf"]
PHASES = ("sync", "rollout", "logprob", "update")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu-check-work")  # the tiny checkpoint and the images, shared by the runs


def _run(out, work_dir, *extra):
    code = gpu_check.main([*SMALL, "--out", str(out), "--work-dir", str(work_dir), *extra])
    return code, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_cpu_run_writes_every_figure_and_passes(tmp_path, work_dir, precision):
    code, results, markdown = _run(tmp_path, work_dir, "--precision", precision)
    sections = results["sections"]
    assert code == 0 and results["passed"], [c for c in results["checks"] if not c["passed"]]
    # the sync sections run in the order that restarts the fewest engines (vLLM first when it is installed)
    assert set(sections) == {"environment", "checkpoint", "train", "lm_head", "sync_hf", "sync_vllm"}
    for name in ("environment", "checkpoint", "train", "lm_head", "sync_hf"):
        assert sections[name]["status"] == "ok" and sections[name]["seconds"] >= 0
    if importlib.util.find_spec("vllm") is None:
        assert sections["sync_vllm"]["status"] == "skipped: vllm not installed"
    assert sections["environment"]["torch"] and sections["environment"]["gpu"] is None

    train = sections["train"]
    assert train["precision"] == precision and train["backend"] == "hf" and len(train["steps"]) == 1  # --quick
    step = train["steps"][0]
    assert step["trajectories"] == 2 and step["turns"] == 4 and step["crops"] == 2  # group 2, 1 zoom-in + answer
    assert all(step[f"{phase}_s"] > 0 for phase in PHASES)
    assert sum(train["mean"]["phase_share"].values()) == pytest.approx(1.0)
    assert train["mean"]["update_tokens_per_s"] > 0 and train["mean"]["generated_tokens"] > 0
    assert 0 < train["mean"]["update_mfu"] and 0 < train["mean"]["mfu_6nd"]  # figures, not judged on a busy CPU
    assert train["memory_gib"]["adam_states"] == pytest.approx(2 * train["memory_gib"]["weights"], rel=1e-3)
    assert "peak_gib" not in train["mean"]  # allocated-memory peaks are CUDA figures

    head = sections["lm_head"]
    assert 0 < head["positions"]["share"] < 0.2  # the sequences are mostly image and prompt tokens
    assert head["policy_positions"]["grad_norm"] == pytest.approx(head["all_positions"]["grad_norm"], rel=1e-3)

    sync = sections["sync_hf"]
    limit_max, limit_mean = gpu_check.TOLERANCES[sync["compute_dtype"]]
    assert sync["compute_dtype"] == ("bfloat16" if precision == "bf16-mixed" else "float32")
    assert sync["episodes"]["images"] == [2, 2]  # the global view and one crop; the engine samples the last turn
    for when in ("after_push", "after_changed_push", "after_wake"):
        assert sync[when]["tokens"] > 0
        assert sync[when]["max_abs"] <= limit_max and sync[when]["mean_abs"] <= limit_mean
    if precision == "32-true":  # the same kernels and weights on CPU: far inside even the fp32 limit
        assert sync["after_push"]["max_abs"] < 2e-3  # (bf16-mixed: the replica holds bf16 weights, as vLLM does)
    assert sync["stale"]["mean_abs"] > gpu_check.STALE_FACTOR * sync["after_changed_push"]["mean_abs"]

    assert {c["name"] for c in results["checks"]} >= {
        "train: multi-turn episodes", "lm_head: finite, non-zero gradient",
        "sync_hf: the push changed the engine (stale mean / fresh mean)"}
    for header in ("# GPU verification (benchmarks/gpu_check.py): PASSED", "## Environment", "## Sections",
                   "## Training step", "## LM head", "## Weight sync", "## Checks"):
        assert header in markdown


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, work_dir, monkeypatch):
    def broken(state):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check, "train_section", broken)
    code, results, markdown = _run(tmp_path, work_dir, "--backends", "hf")
    sections = results["sections"]
    assert code == 1 and not results["passed"]
    assert sections["train"]["status"] == "error: RuntimeError: boom" and "boom" in sections["train"]["traceback"]
    assert sections["lm_head"]["status"].startswith("error: RuntimeError: no trajectories")
    assert sections["sync_hf"]["status"] == "ok"  # builds the policy itself
    assert "| **NO** | train: ran |" in markdown and "FAILED" in markdown


def test_suppressed_tokens_renormalise_over_the_tokens_an_engine_may_sample(tiny_model, codec, noise_sample):
    """vLLM's log-probs exclude the suppressed vision tokens; the trainer's view of them must do the same."""
    image = Image.open(noise_sample.image_path).convert("RGB").resize((112, 84))
    context = codec.start([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "zoom"}]}],
                          [image])
    context.extend(codec.completion_ids("<answer>A</answer>"), from_policy=True)
    with torch.no_grad():
        plain = sequence_logprobs(tiny_model, [context], codec.pad_id, codec.image_pad_id)["logprobs"]
        renormalised = sequence_logprobs(tiny_model, [context], codec.pad_id, codec.image_pad_id,
                                         suppress_token_ids=codec.vision_token_ids)["logprobs"]
        logits = tiny_model(**batch_inputs([context], codec.pad_id, codec.image_pad_id), use_cache=False).logits
    mask = shifted_policy_tensors([context])["mask"].bool()
    logits = logits[:, :-1].float()
    suppressed = torch.logsumexp(logits[..., list(codec.vision_token_ids)], -1) - torch.logsumexp(logits, -1)
    expected = plain - torch.log1p(-suppressed.exp())  # log p(token) - log(1 - P(suppressed))
    torch.testing.assert_close(renormalised[mask], expected[mask], atol=1e-5, rtol=0)
    assert (renormalised[mask] > plain[mask]).all()
