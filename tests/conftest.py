"""Shared fixtures: the tiny Qwen2.5-VL (built once per session) and small images/samples."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lfpc.data.records import Sample
from lfpc.model.loading import load_model
from lfpc.model.tiny import build_tiny_model
from lfpc.rollout.codec import ChatCodec
from lfpc.vision.images import set_max_image_pixels


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def codec(tiny_model_dir):
    return ChatCodec.for_model(str(tiny_model_dir), 256)


@pytest.fixture()
def tiny_model(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def noise_sample(tmp_path_factory):
    """A 1024x768 random-noise image with a two-level box hierarchy."""
    path = tmp_path_factory.mktemp("images") / "noise.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (768, 1024, 3), dtype=np.uint8)).save(path)
    return Sample(id="noise", image_path=str(path), question="What color is the dot?",
                  options=("red", "blue", "green", "white"), answer="B",
                  boxes=((100.0, 100.0, 160.0, 140.0), (50.0, 50.0, 400.0, 300.0)), image_size=(1024, 768))


@pytest.fixture()
def pixel_limit():
    """``set_max_image_pixels``, with PIL's pixel limit restored after the test."""
    previous = Image.MAX_IMAGE_PIXELS
    yield set_max_image_pixels
    Image.MAX_IMAGE_PIXELS = previous


@pytest.fixture()
def holding():
    """``holding(folder)``: start another process that holds ``folder``'s output lock (as a running train.py or
    eval.py does) until the test ends; returns the process."""
    import subprocess
    import sys
    from pathlib import Path
    code = ("import sys, time\nfrom lfpc.files import single_writer\n"
            "with single_writer(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)")
    started = []

    def hold(folder):
        proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[1])
        started.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in started:
        proc.kill()
        proc.wait()
