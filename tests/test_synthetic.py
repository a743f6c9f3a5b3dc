"""Tests for the synthetic high-resolution VQA generator (lfpc/data/synthetic.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lfpc.boxes import area, contains
from lfpc.data.records import load_jsonl
from lfpc.data.synthetic import generate_synthetic, main

SIDE = 1024
NUM = 20  # 4 samples of each of the 5 question types (they cycle: color, text, shape, relation, largest)

# Hue in degrees of each option colour, computed by hand from its RGB value with the HSV formula, e.g.
# orange (245, 135, 20): max R, hue = 60 * (G - B) / (max - min) = 60 * 115 / 225 = 31;
# blue (35, 75, 225): max B, hue = 60 * (4 + (R - G) / (max - min)) = 60 * (4 - 40 / 190) = 227.
HUES = {"red": 0, "orange": 31, "yellow": 54, "green": 129, "cyan": 186, "blue": 227, "purple": 275, "pink": 324}
# Which way the first object lies from the second (x, y signs of centre1 - centre2) for each relation option.
DIRECTIONS = {"left of it": (-1, 0), "right of it": (1, 0), "above it": (0, -1), "below it": (0, 1)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "data", NUM, (SIDE, SIDE), seed=7)


@pytest.fixture(scope="module")
def samples(dataset):
    return load_jsonl(dataset)


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _color_map(image_path: str, box) -> np.ndarray:
    """Colour name index (into HUES) of each saturated, bright pixel inside ``box``; -1 for other pixels.

    The background is grey (saturation < 0.5); the brightness floor drops the dark anti-aliased fringes of sign
    text, whose hue JPEG shifts (the darkest option colour, green (40, 170, 60), has value 170 / 255 = 0.67).
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    hsv = np.asarray(Image.open(image_path).convert("RGB").crop((x1, y1, x2, y2)).convert("HSV")).astype(float)
    hue, sat, val = hsv[..., 0] * 360 / 255, hsv[..., 1] / 255, hsv[..., 2] / 255
    centres = np.array(list(HUES.values()), dtype=float)
    distance = np.abs(hue[..., None] - centres)
    nearest = np.argmin(np.minimum(distance, 360 - distance), axis=-1)  # hue is circular
    return np.where((sat > 0.5) & (val > 0.5), nearest, -1)


def _of_type(samples, question_type: str):
    chosen = [s for s in samples if s.meta["question_type"] == question_type]
    assert len(chosen) == NUM // 5
    return chosen


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    first = generate_synthetic(tmp_path / "a", 5, (512, 384), seed=3)
    second = generate_synthetic(tmp_path / "b", 5, (512, 384), seed=3)
    other = generate_synthetic(tmp_path / "c", 5, (512, 384), seed=4)
    files_a, files_b, files_c = (_file_bytes(p.parent) for p in (first, second, other))
    assert len(files_a) == 5 + 2  # 5 images + data.jsonl + params.json
    assert files_a == files_b
    rows_a = [json.loads(line) for line in first.read_text().splitlines()]
    rows_c = [json.loads(line) for line in other.read_text().splitlines()]
    assert all(ra["question"] != rc["question"] or ra["boxes"] != rc["boxes"] for ra, rc in zip(rows_a, rows_c))
    images_a = [v for k, v in files_a.items() if k.endswith(".jpg")]
    images_c = [v for k, v in files_c.items() if k.endswith(".jpg")]
    assert not set(images_a) & set(images_c)


def test_second_call_reuses_the_cache(tmp_path):
    path = generate_synthetic(tmp_path, 3, (400, 300), seed=1)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert generate_synthetic(tmp_path, 3, (400, 300), seed=1) == path
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before
    # Other parameters regenerate: 4 rows now.
    generate_synthetic(tmp_path, 4, (400, 300), seed=1)
    assert len(load_jsonl(path)) == 4
    assert json.loads((tmp_path / "params.json").read_text())["num_samples"] == 4


def test_half_written_folder_is_regenerated(tmp_path):
    path = generate_synthetic(tmp_path, 3, (400, 300), seed=2)
    complete = _file_bytes(tmp_path)
    # Simulate a crash: params.json not written yet, data.jsonl cut short, an image missing.
    (tmp_path / "params.json").unlink()
    path.write_text(path.read_text().splitlines()[0] + "\n")
    next((tmp_path / "images").glob("*.jpg")).unlink()
    assert generate_synthetic(tmp_path, 3, (400, 300), seed=2) == path
    assert _file_bytes(tmp_path) == complete


def test_rows_load_with_valid_nested_boxes(samples):
    assert len(samples) == NUM
    assert len({s.id for s in samples}) == NUM
    for sample in samples:
        assert sample.image_size == (SIDE, SIDE)
        assert Path(sample.image_path).is_file()
        assert len(sample.options) == 4 and len(set(sample.options)) == 4
        assert sample.answer in "ABCD"
        assert sample.category == ("cross" if sample.meta["question_type"] in ("relation", "largest") else "single")
        assert len(sample.boxes) == 3  # B1 and two context boxes (loader already checked order and nesting)
        for inner, outer in zip(sample.boxes, sample.boxes[1:]):
            assert contains(outer, inner) and area(outer) > area(inner)
        for target in sample.meta["targets"]:
            assert contains(sample.boxes[0], target["box"])
    # The correct option's position is shuffled, not fixed.
    assert len({s.answer for s in samples}) >= 3


def test_targets_are_small_and_b1_is_much_smaller_than_the_image(samples):
    for sample in samples:
        for target in sample.meta["targets"]:
            x1, y1, x2, y2 = target["box"]
            assert max(x2 - x1, y2 - y1) < 0.05 * SIDE  # < 51.2 px
        b1 = sample.boxes[0]
        if sample.category == "single":
            # one target < 51.2 px + 2 * 2 px padding (+1 px rounding each side) on a side: < 0.3 % of the area
            assert area(b1) < 0.003 * SIDE * SIDE
        else:
            assert max(b1[2] - b1[0], b1[3] - b1[1]) < 0.3 * SIDE
    for sample in _of_type(samples, "text"):
        _, y1, _, y2 = sample.meta["targets"][0]["box"]
        assert (y2 - y1) * 512 / SIDE < 10  # the sign's text is a few pixels tall once downsampled to 512 px


def test_color_answer_matches_the_pixels_inside_b1(samples):
    names = list(HUES)
    for sample in _of_type(samples, "color"):
        labels = _color_map(sample.image_path, sample.boxes[0])
        counts = np.bincount(labels[labels >= 0], minlength=len(names))
        assert counts.max() > 25  # a real coloured object (the smallest, a 12 px star, has ~40 px), not noise
        assert names[int(np.argmax(counts))] == sample.answer_text


def test_shape_question_color_is_unique_in_the_image(samples):
    # "the small <color> object" must name one object: that colour appears nowhere outside B1.
    names = list(HUES)
    for sample in _of_type(samples, "shape"):
        color = sample.meta["targets"][0]["color"]
        labels = _color_map(sample.image_path, (0, 0, SIDE, SIDE))
        x1, y1, x2, y2 = (int(v) for v in sample.boxes[0])
        inside = labels[y1:y2, x1:x2] == names.index(color)
        assert inside.sum() > 25
        assert (labels == names.index(color)).sum() - inside.sum() < 20  # JPEG fringes only, no ~40 px object


def test_relation_answer_matches_the_object_centroids(samples):
    names = list(HUES)
    for sample in _of_type(samples, "relation"):
        first, second = (t["color"] for t in sample.meta["targets"])
        if first == second:  # same colour, different shapes: centroids cannot separate them
            continue
        labels = _color_map(sample.image_path, sample.boxes[0])
        centres = [np.argwhere(labels == names.index(c)).mean(axis=0) for c in (first, second)]  # (row, col)
        dy, dx = centres[0] - centres[1]
        sign_x, sign_y = DIRECTIONS[sample.answer_text]
        if sign_x:
            assert np.sign(dx) == sign_x and abs(dx) > 3 * abs(dy)
        else:
            assert np.sign(dy) == sign_y and abs(dy) > 3 * abs(dx)


def test_largest_answer_has_the_most_pixels(samples):
    names = list(HUES)
    for sample in _of_type(samples, "largest"):
        labels = _color_map(sample.image_path, sample.boxes[0])
        counts = {t["color"]: int((labels == names.index(t["color"])).sum()) for t in sample.meta["targets"]}
        ranked = sorted(counts, key=counts.get, reverse=True)
        assert sample.answer_text == f"the {ranked[0]} {sample.meta['targets'][0]['shape']}"
        assert counts[ranked[0]] > 2 * counts[ranked[1]]  # side 1.8x vs at most 1.1x: area ratio >= 2.6


def test_size_range_draws_sizes_per_image(tmp_path):
    samples = load_jsonl(generate_synthetic(tmp_path, 6, seed=0, size_range=(300, 420)))
    sizes = [s.image_size for s in samples]
    assert all(300 <= w <= 420 and 300 <= h <= 420 for w, h in sizes)
    assert len(set(sizes)) > 1


def test_rejects_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="image sides"):
        generate_synthetic(tmp_path, 2, (100, 100))
    with pytest.raises(ValueError, match="question_types"):
        generate_synthetic(tmp_path, 2, (512, 512), question_types=["count"])
    with pytest.raises(ValueError, match="num_samples"):
        generate_synthetic(tmp_path, 0, (512, 512))
    assert not any(tmp_path.iterdir())


def test_cli_writes_the_dataset(tmp_path, capsys):
    main(["--out", str(tmp_path), "--num", "2", "--size", "320", "288", "--seed", "5",
          "--question-types", "text", "largest"])
    printed = Path(capsys.readouterr().out.strip())
    assert printed == tmp_path / "data.jsonl"
    samples = load_jsonl(printed)
    assert [s.image_size for s in samples] == [(320, 288), (320, 288)]
    assert [s.meta["question_type"] for s in samples] == ["text", "largest"]


def test_a_second_process_waits_for_the_cache_being_generated(tmp_path):
    import threading
    import time

    from lfpc.files import entry_lock
    out, result = tmp_path / "synthetic", {}
    with entry_lock(out, wait=True):  # another process is generating this cache
        worker = threading.Thread(target=lambda: result.update(path=generate_synthetic(out, 3, (400, 300), seed=1)))
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and not out.exists()  # it waits: it never reads or rewrites half-made files
    worker.join(60)
    assert result["path"] == out / "data.jsonl" and len(load_jsonl(result["path"])) == 3
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary file left
