"""Tests for the strict JSONL sample loader and writer (lfpc/data/records.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lfpc.data.records import DatasetError, Sample, load_jsonl, write_jsonl

WIDTH, HEIGHT = 200, 100


@pytest.fixture()
def folder(tmp_path) -> Path:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (WIDTH, HEIGHT), (10, 20, 30)).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "images" / "broken.jpg").write_text("not an image")
    return tmp_path


def _row(**changes) -> dict:
    row = {"id": "q1", "image_path": "images/a.jpg", "question": "What colour is the cup?",
           "options": ["red", "green", "blue", "white"], "answer": "C",
           "boxes": [[10, 10, 30, 20], [5, 5, 60, 40], [0, 0, WIDTH, HEIGHT]], "category": "single",
           "meta": {"question_type": "color"}}
    row.update(changes)
    return row


def _write(folder: Path, *lines: str) -> Path:
    path = folder / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _without(name: str) -> dict:
    row = _row()
    del row[name]
    return row


# (bad row written as line 3, after a valid row and a blank line; field named in the message; other words)
BAD_ROWS = {
    "invalid json": ('{"id": "q2", "question": ', "", "invalid JSON"),
    "not an object": ("[1, 2, 3]", "", "JSON object"),
    "missing field": (json.dumps(_without("question")), "'question'", "missing field"),
    "wrong type": (json.dumps(_row(id=1.5)), "'id'", "str or int"),
    "missing image": (json.dumps(_row(image_path="images/nope.jpg")), "'image_path'", "does not exist"),
    "unreadable image": (json.dumps(_row(image_path="images/broken.jpg")), "'image_path'", "cannot read image"),
    "box outside image": (json.dumps(_row(boxes=[[150, 50, 201, 60]])), "'boxes[0]'", "outside the 200x100 image"),
    "box not ordered": (json.dumps(_row(boxes=[[10, 10, 30, 20], [40, 5, 20, 40]])), "'boxes[1]'", "x1<x2"),
    "box degenerate": (json.dumps(_row(boxes=[[10, 20, 30, 20]])), "'boxes[0]'", "y1<y2"),
    "box wrong arity": (json.dumps(_row(boxes=[[10, 10, 30]])), "'boxes[0]'", "4 numbers"),
    "box not numbers": (json.dumps(_row(boxes=[[10, "a", 30, 20]])), "'boxes[0]'", "must be numbers"),
    "boxes not nested": (json.dumps(_row(boxes=[[10, 10, 30, 20], [12, 5, 60, 40]])), "'boxes[1]'", "not nested"),
    "boxes not a list": (json.dumps(_row(boxes="10,10,30,20")), "'boxes'", "must be list"),
    "bad answer letter": (json.dumps(_row(answer="E")), "'answer'", "['A', 'B', 'C', 'D']"),
    "answer not a letter": (json.dumps(_row(answer="blue")), "'answer'", "got 'blue'"),
    "too few options": (json.dumps(_row(options=["red"], answer="A")), "'options'", "2 to 10"),
    "more options than letters": (json.dumps(_row(options=[str(i) for i in range(11)])), "'options'",
                                  "2 to 10 (one per letter of ABCDEFGHIJ) non-empty strings, got 11 items"),
    "special token in question": (json.dumps(_row(question="What does <|image_pad|> mean?")), "'question'",
                                  "contains the special token '<|image_pad|>'"),
    "special token in an option": (json.dumps(_row(options=["red", "<|im_end|>", "blue", "white"])),
                                   "'options[1]'", "contains the special token '<|im_end|>'"),
    "empty option": (json.dumps(_row(options=["red", " "], answer="A")), "'options'", "non-empty"),
    "meta not an object": (json.dumps(_row(meta=[1])), "'meta'", "must be dict"),
    "empty free-form answer": (json.dumps(_row(options=[], answer=" ")), "'answer'", "must not be empty"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_error_names_file_line_and_field(folder, case):
    line, field, words = BAD_ROWS[case]
    path = _write(folder, json.dumps(_row()), "", line)
    with pytest.raises(DatasetError) as err:
        load_jsonl(path)
    message = str(err.value)
    assert message.startswith(f"{path}:3: ")  # line 3: the blank line 2 still counts
    assert field in message
    assert words in message


def test_missing_dataset_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.jsonl: dataset file does not exist"):
        load_jsonl(tmp_path / "nowhere.jsonl")


@pytest.mark.parametrize("content, message", [
    (b"", r"data.jsonl: no samples \(the dataset is empty\)"),
    (b"\n  \n", r"data.jsonl: no samples"),
    (json.dumps(_row()).encode() + b'\n{"id": "caf\xe9"}\n', r"data.jsonl:2: not UTF-8 text \(byte 0xe9 at byte 12 "),
    (json.dumps(_row()).encode("utf-16"), r"data.jsonl:1: not UTF-8 text \(byte 0xff at byte 1 of the line\)"),
])
def test_empty_or_non_utf8_file_is_named(folder, content, message):
    (folder / "data.jsonl").write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_jsonl(folder / "data.jsonl")


def test_duplicate_ids_are_refused(folder):
    path = _write(folder, json.dumps(_row()), json.dumps(_row(id="q2")), json.dumps(_row()))
    with pytest.raises(DatasetError, match=rf"{path}: sample 3 has the id 'q1' of sample 1; ids must be unique"):
        load_jsonl(path)


def test_valid_rows_load(folder):
    path = _write(folder, json.dumps(_row()), json.dumps(_row(id=7, boxes=[], meta=None, category="cross")))
    first, second = load_jsonl(path)
    assert first.id == "q1" and second.id == "7"
    assert first.image_path == str(folder / "images" / "a.jpg")
    assert first.image_size == (WIDTH, HEIGHT)  # read from the image file
    assert first.boxes == ((10.0, 10.0, 30.0, 20.0), (5.0, 5.0, 60.0, 40.0), (0.0, 0.0, 200.0, 100.0))
    assert first.answer_text == "blue"  # "C" is the third option
    assert first.meta == {"question_type": "color"}
    assert second.boxes == () and second.meta == {} and second.category == "cross"
    assert second.source == "jsonl"  # default when the row names no source


def test_free_form_rows_load(folder):
    """A row without options (absent, null or empty) is a free-form question whose answer is the reference text."""
    absent = _without("options") | {"answer": "12 meters"}
    path = _write(folder, json.dumps(absent), json.dumps(_row(id="q2", options=None, answer="yes")),
                  json.dumps(_row(id="q3", options=[], answer="Harbinger School")))
    first, second, third = load_jsonl(path)
    assert first.options == () and first.answer == "12 meters" and first.answer_text == "12 meters"
    assert second.options == () and second.answer == "yes"
    assert third.answer_text == "Harbinger School"
    out = folder / "copy.jsonl"
    write_jsonl([first], out)
    assert load_jsonl(out)[0] == first


def test_relative_dataset_path_gives_absolute_image_paths(folder, monkeypatch):
    _write(folder, json.dumps(_row()))
    monkeypatch.chdir(folder.parent)
    (sample,) = load_jsonl(Path(folder.name) / "data.jsonl")
    assert sample.image_path == str(folder / "images" / "a.jpg")


def test_write_then_load_round_trips(folder):
    (original,) = load_jsonl(_write(folder, json.dumps(_row())))
    # Written into a sub-folder, the absolute image path becomes relative to that folder.
    copy = folder / "splits" / "train.jsonl"
    write_jsonl([original], copy)
    assert json.loads(copy.read_text())["image_path"] == "../images/a.jpg"
    (loaded,) = load_jsonl(copy)
    assert loaded == original
    assert loaded.meta == original.meta  # meta is excluded from ==, so compare it too


def test_write_keeps_relative_image_paths(folder):
    sample = Sample(id="s", image_path="images/a.jpg", question="Q?", options=("x", "y"), answer="B",
                    boxes=((1.0, 2.0, 3.0, 4.0),), image_size=(WIDTH, HEIGHT))
    write_jsonl([sample], folder / "out.jsonl")
    row = json.loads((folder / "out.jsonl").read_text())
    assert row["image_path"] == "images/a.jpg"
    assert row["boxes"] == [[1.0, 2.0, 3.0, 4.0]] and row["image_size"] == [WIDTH, HEIGHT]
    (loaded,) = load_jsonl(folder / "out.jsonl")
    assert loaded.answer_text == "y"
