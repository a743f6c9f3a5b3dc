"""Stage II box files (lfpc/data/box_annotations.py): attaching nested boxes to converted rows, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lfpc.data.box_annotations import attach_boxes, main, read_box_file
from lfpc.data.records import DatasetError, load_jsonl

W, H = 400, 300


@pytest.fixture()
def rows(tmp_path) -> Path:
    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    lines = [{"id": f"vp-{i}", "image_path": "a.png", "question": "What is on the flag?", "answer": "star"}
             for i in range(3)]
    path = tmp_path / "vp.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def box_file(tmp_path: Path, *lines: dict | str) -> Path:
    path = tmp_path / "boxes.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


B1, B2, B3 = [10, 10, 20, 20], [5, 5, 50, 40], [0, 0, 200, 150]


def test_boxes_attach_to_their_rows(rows, tmp_path):
    boxes = box_file(tmp_path, {"id": "vp-1", "boxes": [B1, B2, B3], "image_size": [W, H], "note": "flag"},
                     {"id": "vp-2", "boxes": [B2]})
    out = tmp_path / "stage2.jsonl"
    main([str(rows), str(boxes), str(out)])
    first, second = load_jsonl(out)
    assert first.id == "vp-1" and first.boxes == tuple(tuple(float(v) for v in b) for b in (B1, B2, B3))
    assert second.id == "vp-2" and len(second.boxes) == 1
    everything = attach_boxes(load_jsonl(rows), read_box_file(boxes), keep_unannotated=True)
    assert [bool(s.boxes) for s in everything] == [False, True, True]


BAD = {
    "not nested": ({"id": "vp-0", "boxes": [B1, [30, 30, 60, 60]]}, "boxes are not nested"),
    "wrong order": ({"id": "vp-0", "boxes": [B3, B2, B1]}, "wrong order"),
    "outside the image": ({"id": "vp-0", "boxes": [B1, [0, 0, W + 1, 100]]}, f"outside the {W}x{H} image"),
    "corners swapped": ({"id": "vp-0", "boxes": [[20, 10, 10, 20]]}, "not ordered as x1<x2"),
    "not four numbers": ({"id": "vp-0", "boxes": [[1, 2, 3]]}, "4 numbers"),
    "empty boxes": ({"id": "vp-0", "boxes": []}, "non-empty list"),
    "unknown id": ({"id": "vp-9", "boxes": [B1]}, "matches no row"),
    "resized image": ({"id": "vp-0", "boxes": [B1], "image_size": [200, 150]}, "drawn on a 200x150 image"),
    "no id": ({"boxes": [B1]}, "with an 'id'"),
    "invalid json": ('{"id": "vp-0", "boxes": [', "invalid JSON"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_box_files_name_file_line_and_problem(rows, tmp_path, case):
    line, words = BAD[case]
    path = box_file(tmp_path, {"id": "vp-1", "boxes": [B1]}, line)
    with pytest.raises(DatasetError) as err:
        attach_boxes(load_jsonl(rows), read_box_file(path))
    message = str(err.value)
    assert message.startswith(f"{path}:2") and words in message
    if case not in ("no id", "invalid json"):
        assert "(id vp-" in message


def test_repeated_id_is_an_error(rows, tmp_path):
    path = box_file(tmp_path, {"id": "vp-1", "boxes": [B1]}, {"id": "vp-1", "boxes": [B2]})
    with pytest.raises(DatasetError, match=r"boxes.jsonl:2 \(id vp-1\): id already annotated at .*boxes.jsonl:1"):
        read_box_file(path)


@pytest.mark.parametrize("target", ["rows", "boxes"])
def test_an_output_equal_to_an_input_is_refused_and_the_input_kept(rows, tmp_path, target):
    boxes = box_file(tmp_path, {"id": "vp-1", "boxes": [B1]})
    before = {path: path.read_bytes() for path in (rows, boxes)}
    out = rows if target == "rows" else boxes
    with pytest.raises(SystemExit, match="is the input"):
        main([str(rows), str(boxes), str(out)])
    assert {path: path.read_bytes() for path in (rows, boxes)} == before


def test_an_interrupted_write_leaves_the_old_output_whole(rows, tmp_path, monkeypatch):
    boxes = box_file(tmp_path, {"id": "vp-1", "boxes": [B1]}, {"id": "vp-2", "boxes": [B2]})
    out = tmp_path / "stage2.jsonl"
    main([str(rows), str(boxes), str(out)])
    before = out.read_bytes()
    calls = []

    def killed(self):  # the process dies while the second row is written
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self)

    from lfpc.data.records import Sample
    real = Sample.to_json
    monkeypatch.setattr(Sample, "to_json", killed)
    with pytest.raises(KeyboardInterrupt):
        main([str(rows), str(boxes), str(out), "--keep-unannotated"])
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
