"""Smoke test of the performance benchmark script (benchmarks/bench.py) at its smallest size."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.archs import arch_config, forward_flops, matmul_params
from lfpc.model.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_prints_every_section_with_sane_figures(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--backends", "hf", "vllm",
         "--threads", "1", "--work-dir", str(tmp_path / "work"), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = proc.stdout
    for header in ("== 1. Rollout throughput", "== 2. GRPO step time", "== 3. Image path",
                   "== 4. Model FLOPs utilisation", "command : python -m benchmarks.bench --quick"):
        assert header in report
    if importlib.util.find_spec("vllm") is None:
        assert "vLLM: not installed" in report

    results = json.loads(out.read_text())
    steps = [s for s in results["steps"] if s["backend"] == "hf"]
    assert [(s["budget"], s["group"]) for s in steps] == [(64, 2), (256, 2)]  # --quick: budgets 64/256, group 2
    for s in steps:
        assert s["trajectories"] == 2          # 1 prompt x group 2
        assert s["turns"] == 4                 # 2 trajectories x (1 zoom-in + 1 answer)
        assert s["crops"] == 2                 # 2 trajectories x 1 zoom-in
        assert s["jpeg_decodes"] == 1          # the original is decoded once per prompt, never per crop
        assert s["calls"]["processor"] == 3    # global view once per prompt (shared by the group) + 2 crops
        assert 0 < s["generated_tokens"] <= 32  # 2 trajectories x 2 turns x at most 8 new tokens
        assert 0 < s["outside_model_share"] < 1
        assert 0 < sum(s["host_share"].values()) <= s["outside_model_share"] + 1e-9
        assert all(0 < share < 1 for share in s["phase_share"].values())
        assert sum(s["phase_share"].values()) == pytest.approx(1.0)
        assert 0 < s["update_mfu"] < 1 and 0 < s["logprob_mfu"] < 1
    # Cache of one image, 2 prompts x group 2, 1 zoom-in each: one decode per prompt = 2. Decoding again per crop
    # (as before the fix) would be 2 + 2: the crops of the second prompt's episodes evict the first prompt's image.
    assert results["cache_pressure"]["crops"] == 4
    assert results["cache_pressure"]["decodes"] == 2
    assert "OK: one decode per prompt" in report


def test_7b_config_has_the_released_parameter_count_and_flops(tmp_path):
    config = arch_config("7b", build_tiny_model(tmp_path / "tiny"))
    with torch.device("meta"):
        from transformers import Qwen2_5_VLForConditionalGeneration
        params = matmul_params(Qwen2_5_VLForConditionalGeneration(config))
    # Qwen2.5-VL-7B-Instruct is published as 8.29B parameters. Vision by hand, per block: qkv 1280*3840+3840 =
    # 4,919,040; proj 1280^2+1280 = 1,639,680; MLP 2*(1280*3420+3420) + 3420*1280+1280 = 13,140,920; 2 RMSNorms
    # 2,560; so 19,702,200 x 32 blocks = 630,470,400. Patch embed 1176*1280 = 1,505,280. Merger: RMSNorm 1280 +
    # 5120^2+5120 + 5120*3584+3584 = 44,574,464. Total 676,550,144.
    assert params["total"] == pytest.approx(8.29e9, rel=2e-3)
    assert params["vision"] == 630_470_400 + 1_505_280 + 44_574_464
    # 1,000 tokens and 4,000 patches forward: 2 x (text params x 1,000 + vision params x 4,000) FLOPs.
    assert forward_flops(params, 1_000, 4_000) == 2 * (params["text"] * 1_000 + params["vision"] * 4_000)
