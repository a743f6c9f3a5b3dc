"""Synthetic grounding data from COCO-format annotations (lfpc/data/coco_paste.py), on a fixture built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lfpc.boxes import contains
from lfpc.data.coco_paste import generate_coco_paste, load_coco_objects, main
from lfpc.data.records import DatasetError, load_jsonl

COLOURS = {"cat": (250, 20, 20), "dog": (20, 250, 20), "kite": (20, 20, 250), "bus": (250, 250, 20),
           "cup": (250, 20, 250)}


@pytest.fixture()
def coco(tmp_path) -> tuple[Path, Path]:
    """Two 320x240 images, one solid-coloured rectangle per category; the cat also has a triangle polygon."""
    images = tmp_path / "coco" / "images"
    images.mkdir(parents=True)
    annotations, files = [], []
    for image_id, names in enumerate((["cat", "dog", "kite"], ["bus", "cup"])):
        image = Image.new("RGB", (320, 240), (128, 128, 128))
        for k, name in enumerate(names):
            x, y = 10 + 100 * k, 40
            image.paste(COLOURS[name], (x, y, x + 80, y + 60))
            ann = {"id": len(annotations), "image_id": image_id, "bbox": [x, y, 80, 60], "iscrowd": 0,
                   "category_id": list(COLOURS).index(name) + 1, "area": 4800}
            if name == "cat":
                ann["segmentation"] = [[x, y, x + 80, y, x + 40, y + 60]]
            annotations.append(ann)
        image.save(images / f"{image_id:012d}.jpg")
        files.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": 320, "height": 240})
    annotations.append({"id": 99, "image_id": 0, "bbox": [0, 0, 320, 240], "iscrowd": 1, "category_id": 1})
    annotations.append({"id": 98, "image_id": 0, "bbox": [0, 0, 8, 8], "iscrowd": 0, "category_id": 2})  # tiny
    path = tmp_path / "coco" / "instances.json"
    path.write_text(json.dumps({"images": files, "annotations": annotations,
                                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(COLOURS)]}))
    return path, images


def test_objects_skip_crowds_and_tiny_boxes(coco):
    objects = load_coco_objects(*coco)
    assert sorted(o.category for o in objects) == sorted(COLOURS)
    assert next(o for o in objects if o.category == "cat").polygons


def test_pasted_objects_have_nested_boxes_and_a_question(coco, tmp_path):
    out = tmp_path / "out" / "paste.jsonl"
    generate_coco_paste(*coco, out, num_samples=2, seed=3, image_size=(800, 600), object_side=(0.08, 0.12))
    samples = load_jsonl(out)  # the project's loader validates nesting and image bounds
    assert len(samples) == 2 and all(s.image_size == (800, 600) for s in samples)
    for sample in samples:
        assert len(sample.options) == 4 and sample.answer_text == sample.meta["object"]
        b1 = sample.boxes[0]
        assert len(sample.boxes) >= 2 and all(contains(o, i) for i, o in zip(sample.boxes, sample.boxes[1:]))
        side = max(b1[2] - b1[0], b1[3] - b1[1])
        assert 0.08 * 600 <= side <= 0.12 * 600 + 6  # the object's longer side (+ padding)
        # the object's colour is inside B1 and nowhere else
        pixels = np.asarray(Image.open(sample.image_path).convert("RGB")).astype(int)
        target = np.array(COLOURS[sample.meta["object"]])
        ys, xs = np.nonzero(np.abs(pixels - target).sum(axis=-1) < 60)
        assert len(xs) > 50
        assert b1[0] <= xs.min() and xs.max() < b1[2] and b1[1] <= ys.min() and ys.max() < b1[3]
    again = tmp_path / "again" / "paste.jsonl"
    generate_coco_paste(*coco, again, num_samples=2, seed=3, image_size=(800, 600), object_side=(0.08, 0.12))
    assert [(s.boxes, s.options, s.answer) for s in load_jsonl(again)] == \
        [(s.boxes, s.options, s.answer) for s in samples]  # deterministic in the seed


def test_free_form_questions_and_photo_backgrounds(coco, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (640, 480), (0, 90, 160)).save(photos / "sky.jpg")
    out = tmp_path / "ff.jsonl"
    main([str(coco[0]), str(coco[1]), str(out), "--num", "2", "--size", "800", "600", "--free-form",
          "--backgrounds", str(photos)])
    assert "wrote 2 samples" in capsys.readouterr().out
    for sample in load_jsonl(out):
        assert sample.options == () and sample.answer in COLOURS
        corner = Image.open(sample.image_path).convert("RGB").getpixel((2, 2))
        assert np.abs(np.array(corner) - (0, 90, 160)).sum() < 30  # the photo, resized


def test_too_few_categories_is_an_error(coco, tmp_path):
    data = json.loads(coco[0].read_text())
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] <= 3]
    path = tmp_path / "three.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="at least 4 categories"):
        load_coco_objects(path, coco[1])
    with pytest.raises(DatasetError, match="not a COCO annotation file"):
        load_coco_objects(coco[1] / "000000000000.jpg", coco[1])


def test_an_output_equal_to_the_annotations_is_refused_and_they_are_kept(coco):
    annotations, images = coco
    before = Path(annotations).read_bytes()
    with pytest.raises(ValueError, match="is the input"):
        generate_coco_paste(annotations, images, annotations, num_samples=1, image_size=(800, 600),
                            object_side=(0.08, 0.12))
    assert Path(annotations).read_bytes() == before
