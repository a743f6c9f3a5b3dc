"""The performance benchmark script (benchmarks/bench.py): a smoke run at its smallest size, and its FLOP model."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from benchmarks.archs import FlopModel, arch_config
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
        # timings are reported, never judged here (wall clock on a loaded machine): only that every figure is there
        # and the phases split the step's time
        assert {"outside_model_share", "host_share", "phase_share", "update_mfu", "logprob_mfu"} <= s.keys()
        assert sum(s["phase_share"].values()) == pytest.approx(1.0)
    # Cache of one image, 2 prompts x group 2, 1 zoom-in each: one decode per prompt = 2. Decoding again per crop
    # (as before the fix) would be 2 + 2: the crops of the second prompt's episodes evict the first prompt's image.
    assert results["cache_pressure"]["crops"] == 4
    assert results["cache_pressure"]["decodes"] == 2
    assert "OK: one decode per prompt" in report


def test_7b_flop_model_matches_the_released_architecture(tmp_path):
    config = arch_config("7b", build_tiny_model(tmp_path / "tiny"))
    with torch.device("meta"):
        flops = FlopModel.of(Qwen2_5_VLForConditionalGeneration(config))
    assert flops.total_params == pytest.approx(8.29e9, rel=2e-3)  # Qwen2.5-VL-7B-Instruct: 8.29B parameters
    # Text, per decoder layer: q 3584^2+3584 = 12,848,640; k, v 3584*512+512 = 1,835,520 each; o 3584^2 =
    # 12,845,056; MLP 3*3584*18944 = 203,685,888; 2 RMSNorms 7,168 -> 233,057,792. LM head 152,064 x 3,584.
    assert flops.text_params == 28 * 233_057_792 + 152_064 * 3_584
    # Vision, per block: qkv 1280*3840+3840 = 4,919,040; proj 1280^2+1280 = 1,639,680; MLP 2*(1280*3420+3420) +
    # 3420*1280+1280 = 13,140,920; 2 RMSNorms 2,560 -> 19,702,200. Patch embed 1176*1280 = 1,505,280.
    # Merger: RMSNorm 1280 + 5120^2+5120 + 5120*3584+3584 = 44,574,464.
    assert flops.vision_params == 32 * 19_702_200 + 1_505_280
    assert flops.merger_params == 44_574_464
    # One 1,000-token sequence holding one 256-patch image:
    #   text attention 4 x 28 layers x 3584 x 1000^2 = 401,408,000,000
    #   vision weights 2 x 631,975,680 x 256 = 323,571,548,160; merger 2 x 44,574,464 x 256/4 = 5,705,531,392
    #   vision attention 4 x 1280 x 256 x (4 full blocks x 256 + 28 window blocks x 64) = 3,690,987,520
    expected = (2 * flops.text_params * 1_000 + 401_408_000_000
                + 323_571_548_160 + 5_705_531_392 + 3_690_987_520)
    assert flops.forward([1_000], [256]) == pytest.approx(expected, rel=1e-12)
