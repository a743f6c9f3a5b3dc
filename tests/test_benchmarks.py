"""Tests for the HR-Bench and V* Bench loaders and the shared option shuffling (fixtures built in tmp_path)."""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from lfpc.data.benchmarks import load_hrbench, load_vstar, shuffle_options, shuffle_sample
from lfpc.data.records import DatasetError, Sample

HAS_PARQUET = all(importlib.util.find_spec(m) for m in ("pandas", "pyarrow"))


def image_bytes(size: tuple[int, int], fmt: str, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# HR-Bench fixture: 3 rows, columns in the order of the released TSV; row 1 has a two-line (quoted) question,
# so the physical lines are: header 1, row 1 lines 2-3, row 2 line 4, row 3 line 5.

HR_IMAGES = {
    0: image_bytes((40, 30), "PNG", (255, 0, 0)),
    1: image_bytes((64, 48), "JPEG", (0, 128, 255)),
    7: image_bytes((20, 10), "PNG", (0, 255, 0)),
}
HR_HEADER = ["index", "question", "answer", "category", "A", "B", "C", "D", "image", "cycle_category"]


def hr_rows() -> list[dict[str, str]]:
    encode = {i: base64.b64encode(data).decode() for i, data in HR_IMAGES.items()}
    return [
        {"index": "0", "question": 'What colour is the "sign"?\nAnswer briefly.', "answer": "B", "category": "single",
         "A": "blue", "B": "red", "C": "green", "D": "white", "image": encode[0], "cycle_category": "cyc0"},
        {"index": "1", "question": "How many cars are there?", "answer": "D", "category": "cross",
         "A": "1", "B": "2", "C": "3", "D": "4", "image": encode[1], "cycle_category": "cyc1"},
        {"index": "7", "question": "Which side is the door on?", "answer": "A", "category": "single",
         "A": "left", "B": "right", "C": "top", "D": "bottom", "image": encode[7], "cycle_category": ""},
    ]


def write_tsv(path: Path, rows: list[dict[str, str]], header: list[str] = HR_HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(name, "") for name in header])
    return path


@pytest.fixture
def hr_tsv(tmp_path: Path) -> Path:
    return write_tsv(tmp_path / "hr_bench_8k.tsv", hr_rows())


def test_hrbench_tsv_every_field(hr_tsv: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    samples = load_hrbench(hr_tsv, cache)
    folder = cache / "hr_bench_8k"
    expected = [
        Sample(id="hrbench:hr_bench_8k:0", image_path=str(folder / "0.png"),
               question='What colour is the "sign"?\nAnswer briefly.', options=("blue", "red", "green", "white"),
               answer="B", boxes=(), category="single", source="hrbench_8k", image_size=(40, 30)),
        Sample(id="hrbench:hr_bench_8k:1", image_path=str(folder / "1.jpg"), question="How many cars are there?",
               options=("1", "2", "3", "4"), answer="D", boxes=(), category="cross", source="hrbench_8k",
               image_size=(64, 48)),
        Sample(id="hrbench:hr_bench_8k:7", image_path=str(folder / "7.png"), question="Which side is the door on?",
               options=("left", "right", "top", "bottom"), answer="A", boxes=(), category="single",
               source="hrbench_8k", image_size=(20, 10)),
    ]
    assert samples == expected  # meta is excluded from ==, checked below
    assert [s.meta for s in samples] == [
        {"subtask": "FSP", "cycle_category": "cyc0", "index": 0, "question": 0},
        {"subtask": "FCP", "cycle_category": "cyc1", "index": 1, "question": 1},
        {"subtask": "FSP", "cycle_category": "", "index": 7, "question": 7},
    ]
    assert [s.answer_text for s in samples] == ["red", "4", "left"]
    # The cache holds exactly the original encoded bytes, one file per row, and no leftover temp files.
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.jpg", "7.png"]
    for index, name in [(0, "0.png"), (1, "1.jpg"), (7, "7.png")]:
        assert (folder / name).read_bytes() == HR_IMAGES[index]


def test_hrbench_reuses_cached_images(hr_tsv: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    first = load_hrbench(hr_tsv, cache)
    old = 1_000_000_000
    for sample in first:
        os.utime(sample.image_path, ns=(old, old))
    second = load_hrbench(hr_tsv, cache)
    assert second == first
    # Not rewritten: the modification times set above survive the second load.
    assert [os.stat(s.image_path).st_mtime_ns for s in second] == [old, old, old]
    # Reuse means no base64 decoding at all: a cached row loads even after its base64 is broken.
    rows = hr_rows()
    rows[1]["image"] = "!!not base64!!"
    broken = write_tsv(hr_tsv, rows)
    assert load_hrbench(broken, cache)[1].image_size == (64, 48)
    with pytest.raises(DatasetError, match="field 'image': invalid base64"):
        load_hrbench(broken, tmp_path / "fresh_cache")


def cycled_rows() -> list[dict[str, str]]:
    """Question 0 listed 4 times, its options rotated (HR-Bench's cycles), each row with a copy of the image; then
    question 1 once."""
    first, second = hr_rows()[:2]
    options = [first[letter] for letter in "ABCD"]
    rows = []
    for shift in range(4):
        rotated = options[shift:] + options[:shift]
        rows.append({**first, "index": str(10 + shift), "cycle_category": f"c{shift}",
                     **dict(zip("ABCD", rotated)), "answer": "ABCD"[rotated.index("red")]})
    return [*rows, {**second, "index": "20"}]


def test_hrbench_decodes_one_image_per_question_and_keeps_its_cycles(tmp_path: Path):
    cache = tmp_path / "cache"
    samples = load_hrbench(write_tsv(tmp_path / "hr_bench_8k.tsv", cycled_rows()), cache)
    # one image file per question (the old loader wrote one per row: 5 files)
    assert sorted(p.name for p in (cache / "hr_bench_8k").iterdir()) == ["10.png", "20.jpg"]
    assert {s.image_path for s in samples[:4]} == {str(cache / "hr_bench_8k" / "10.png")}
    assert [s.meta["question"] for s in samples] == [10, 10, 10, 10, 20]
    assert [s.meta["cycle_category"] for s in samples[:4]] == ["c0", "c1", "c2", "c3"]
    assert [s.answer_text for s in samples[:4]] == ["red"] * 4 and [s.answer for s in samples[:4]] == list("BADC")


def test_hrbench_box_file_gives_each_question_its_nested_boxes(tmp_path: Path):
    tsv = write_tsv(tmp_path / "hr_bench_8k.tsv", cycled_rows())
    assert all(s.boxes == () for s in load_hrbench(tsv, tmp_path / "c"))     # no box file: no boxes
    # keyed by the index of any row of the question; listed largest first, stored smallest (B1) first
    (tmp_path / "hr_bench_8k.boxes.json").write_text(json.dumps({"11": [[0, 0, 40, 30], [5, 5, 15, 12]]}))
    samples = load_hrbench(tsv, tmp_path / "c")
    assert [s.boxes for s in samples] == [((5.0, 5.0, 15.0, 12.0), (0.0, 0.0, 40.0, 30.0))] * 4 + [()]
    other = tmp_path / "mine.json"
    for content, message in (({"99": [[0, 0, 1, 1]]}, r"index\(es\) not in the benchmark: \['99'\]"),
                             ({"10": [[0, 0, 41, 30]]}, "question 10, box 0: box .* lies outside the 40x30 image"),
                             ({"10": []}, "question 10: expected a non-empty list")):
        other.write_text(json.dumps(content))
        with pytest.raises(DatasetError, match=message):
            load_hrbench(tsv, tmp_path / "c", boxes_path=other)
    with pytest.raises(DatasetError, match="missing.json: box file does not exist"):
        load_hrbench(tsv, tmp_path / "c", boxes_path=tmp_path / "missing.json")


def test_hrbench_source_from_name_or_argument(tmp_path: Path):
    four_k = write_tsv(tmp_path / "hr_bench_4k.tsv", hr_rows())
    assert {s.source for s in load_hrbench(four_k, tmp_path / "c")} == {"hrbench_4k"}
    assert {s.source for s in load_hrbench(four_k, tmp_path / "c", source="hrbench_8k")} == {"hrbench_8k"}
    unnamed = write_tsv(tmp_path / "hrbench.tsv", hr_rows())
    with pytest.raises(DatasetError, match=r"hrbench\.tsv: cannot tell 4K from 8K"):
        load_hrbench(unnamed, tmp_path / "c")
    assert load_hrbench(unnamed, tmp_path / "c", source="hrbench_4k")[0].id == "hrbench:hrbench:0"
    with pytest.raises(ValueError, match="source must be one of"):
        load_hrbench(unnamed, tmp_path / "c", source="hrbench_16k")


# Each case breaks row 2 (index 1, line 4) unless stated; the message must name file, row, line and field.
ROW2 = r"row 2 \(index '1', line 4\)"


@pytest.mark.parametrize("field, value, message", [
    ("image", "abc$", ROW2 + r": field 'image': invalid base64"),
    ("image", base64.b64encode(b"this is not an image").decode(), ROW2 + r": field 'image': not a usable image"),
    ("image", base64.b64encode(HR_IMAGES[1][:200]).decode(), ROW2 + r": field 'image': not a usable image"),
    ("answer", "E", ROW2 + r": field 'answer' must be one of \['A', 'B', 'C', 'D'\], got 'E'"),
    ("answer", "4", ROW2 + r": field 'answer' must be one of"),
    ("category", "multi", ROW2 + r": field 'category' must be one of \['single', 'cross'\], got 'multi'"),
    ("question", " ", ROW2 + r": field 'question' is empty"),
    ("C", "", ROW2 + r": field 'C' is empty"),
    ("question", "What is <|vision_start|>?", ROW2 + r": field 'question' contains the special token '<\|vision_start"),
    ("B", "<|image_pad|>", ROW2 + r": field 'B' contains the special token '<\|image_pad\|>'"),
    ("index", "1a", r"row 2 \(index '1a', line 4\): field 'index' must be an integer, got '1a'"),
    ("index", "0", r"row 2 \(index '0', line 4\): field 'index': duplicate of row 1"),
])
def test_hrbench_malformed_row(tmp_path: Path, field: str, value: str, message: str):
    rows = hr_rows()
    rows[1][field] = value
    path = write_tsv(tmp_path / "hr_bench_4k.tsv", rows)
    with pytest.raises(DatasetError, match=message) as err:
        load_hrbench(path, tmp_path / "cache")
    assert str(err.value).startswith(f"{path}: ")


def test_hrbench_malformed_file(tmp_path: Path):
    no_answer = write_tsv(tmp_path / "a_4k.tsv", hr_rows(), header=[h for h in HR_HEADER if h != "answer"])
    with pytest.raises(DatasetError, match=r"a_4k\.tsv: header: missing column\(s\) \['answer'\]"):
        load_hrbench(no_answer, tmp_path / "cache")
    short = write_tsv(tmp_path / "b_4k.tsv", hr_rows())
    lines = short.read_text().split("\n")
    lines[4] = lines[4].rsplit("\t", 1)[0]  # row 3 (line 5) loses its last field
    short.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"b_4k\.tsv: line 5: 9 fields, the header has 10"):
        load_hrbench(short, tmp_path / "cache")
    with pytest.raises(DatasetError, match=r"missing_4k\.tsv: dataset file does not exist"):
        load_hrbench(tmp_path / "missing_4k.tsv", tmp_path / "cache")


def test_hrbench_non_utf8_or_empty_file_is_named(tmp_path: Path):
    path = write_tsv(tmp_path / "hr_bench_4k.tsv", hr_rows())
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"How many", b"How m\xffny")  # row 2, line 4
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DatasetError, match=r"hr_bench_4k\.tsv:4: not UTF-8 text \(byte 0xff"):
        load_hrbench(path, tmp_path / "cache")
    header_only = write_tsv(tmp_path / "hr_bench_8k.tsv", [])
    with pytest.raises(DatasetError, match=r"hr_bench_8k\.tsv: no samples"):
        load_hrbench(header_only, tmp_path / "cache")


def test_hrbench_quote_that_swallows_rows_is_an_error(tmp_path: Path):
    rows = hr_rows()
    rows[1]["question"] = '"How many cars'       # an unclosed quote: rows 2 and 3 would merge into one sample
    rows[2]["question"] = 'Is the "door" left?'  # the quote that closes it
    path = tmp_path / "hr_bench_4k.tsv"
    body = ["\t".join(HR_HEADER)] + ["\t".join(row[name] for name in HR_HEADER) for row in rows[1:]]
    path.write_text("\n".join(body) + "\n")
    with pytest.raises(DatasetError, match=r"hr_bench_4k\.tsv: line 2: field 'question' holds a tab: a '\"' opening"):
        load_hrbench(path, tmp_path / "cache")


def test_hrbench_handles_fields_over_the_default_csv_limit(tmp_path: Path):
    big = image_bytes((400, 400), "PNG", (1, 2, 3))
    big = big + b"\0" * max(0, 200_000 - len(big))  # trailing bytes after IEND are ignored by decoders
    rows = hr_rows()[:1]
    rows[0]["image"] = base64.b64encode(big).decode()  # 200,000 bytes -> 266,668 base64 chars > 131,072
    path = write_tsv(tmp_path / "hr_bench_4k.tsv", rows)
    previous = csv.field_size_limit(131_072)  # csv's default limit
    try:
        assert load_hrbench(path, tmp_path / "cache")[0].image_size == (400, 400)
        assert csv.field_size_limit() == 131_072  # restored after a successful load ...
        rows[0]["answer"] = "Z"
        with pytest.raises(DatasetError, match="field 'answer'"):
            load_hrbench(write_tsv(path, rows), tmp_path / "cache")
        assert csv.field_size_limit() == 131_072  # ... and after a rejected row
    finally:
        csv.field_size_limit(previous)


@pytest.mark.skipif(not HAS_PARQUET, reason="needs pandas and pyarrow")
def test_hrbench_parquet_matches_tsv(hr_tsv: Path, tmp_path: Path):
    import pandas as pd

    frame = pd.DataFrame(hr_rows())
    frame["index"] = frame["index"].astype(int)  # the released parquet stores index as an integer
    parquet = tmp_path / "hr_bench_8k.parquet"
    frame.to_parquet(parquet)
    from_parquet = load_hrbench(parquet, tmp_path / "cache_parquet")
    from_tsv = load_hrbench(hr_tsv, tmp_path / "cache_tsv")
    # Same records except the cache folder the images went to.
    assert [replace(s, image_path=Path(s.image_path).name) for s in from_parquet] == \
        [replace(s, image_path=Path(s.image_path).name) for s in from_tsv]
    assert [s.meta for s in from_parquet] == [s.meta for s in from_tsv]
    frame.loc[2, "answer"] = "Z"
    frame.to_parquet(parquet)
    with pytest.raises(DatasetError, match=r"hr_bench_8k\.parquet: row 3 \(index '7'\): field 'answer'"):
        load_hrbench(parquet, tmp_path / "cache_parquet")


@pytest.mark.skipif(HAS_PARQUET, reason="checks the message shown when pyarrow is missing")
def test_hrbench_parquet_without_pyarrow_says_what_to_install(tmp_path: Path):
    parquet = tmp_path / "hr_bench_8k.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pip install pandas pyarrow"):
        load_hrbench(parquet, tmp_path / "cache")


# ----------------------------------------------------------------------------------------------------------------
# Option shuffling

def test_shuffle_options_keeps_the_answer_with_its_option():
    options = ("w", "x", "y", "z")
    letters = set()
    for seed in range(40):
        for correct in range(4):
            shuffled, letter = shuffle_options(options, correct, random.Random(seed))
            assert sorted(shuffled) == sorted(options)
            assert shuffled["ABCD".index(letter)] == options[correct]
            letters.add(letter)
        assert shuffle_options(options, 2, random.Random(seed)) == shuffle_options(options, 2, random.Random(seed))
    assert letters == {"A", "B", "C", "D"}  # the correct option lands in every position for some seed
    with pytest.raises(ValueError, match="correct_index 4 is out of range for 4 options"):
        shuffle_options(options, 4, random.Random(0))


def test_shuffle_sample_is_seeded_by_seed_and_id():
    sample = Sample(id="q1", image_path="x.png", question="?", options=("a", "b", "c", "d"), answer="C")
    assert shuffle_sample(sample, 3) == shuffle_sample(sample, 3)
    orders = {shuffle_sample(sample, seed).options for seed in range(20)}
    assert len(orders) > 1
    other = Sample(id="q2", image_path="x.png", question="?", options=("a", "b", "c", "d"), answer="C")
    assert [shuffle_sample(sample, s).options for s in range(5)] != [shuffle_sample(other, s).options for s in range(5)]
    for seed in range(20):
        assert shuffle_sample(sample, seed).answer_text == "c"


def test_shuffle_sample_leaves_free_form_questions_alone():
    sample = Sample(id="q1", image_path="x.png", question="How many?", options=(), answer="3")
    assert shuffle_sample(sample, 3) is sample


# ----------------------------------------------------------------------------------------------------------------
# V* fixture: 2 questions per split; bbox is [x, y, w, h] in original pixels.

VSTAR = {
    "direct_attributes": {
        "sa_1": ((100, 80), {"question": "What is the color of the cup?", "options": ["red", "blue", "green", "pink"],
                             "target_object": ["cup"], "bbox": [[10, 20, 30, 40]]}),
        "sa_2": ((120, 90), {"question": "What is the material of the bag?",
                             "options": ["leather", "cloth", "plastic", "paper"],
                             "target_object": ["bag"], "bbox": [[0, 0, 120, 90]]}),
    },
    "relative_position": {
        "sa_3": ((100, 80), {"question": "Is the dog on the left or right of the cat?", "options": ["left", "right"],
                             "target_object": ["dog", "cat"], "bbox": [[5, 5, 10, 10], [50, 30, 20.5, 20]]}),
        "sa_4": ((60, 60), {"question": "Is the lamp above or below the chair?", "options": ["below", "above"],
                            "target_object": ["lamp", "chair"], "bbox": [[40, 40, 10, 10], [10, 10, 5, 5]]}),
    },
}


def write_vstar(root: Path) -> Path:
    for split, questions in VSTAR.items():
        (root / split).mkdir(parents=True)
        for name, (size, data) in questions.items():
            Image.new("RGB", size, (9, 9, 9)).save(root / split / f"{name}.jpg")
            (root / split / f"{name}.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def vstar_root(tmp_path: Path) -> Path:
    return write_vstar(tmp_path / "vstar")


def test_vstar_every_field_unshuffled(vstar_root: Path):
    samples = load_vstar(vstar_root, shuffle_options=False)
    da, rp = vstar_root / "direct_attributes", vstar_root / "relative_position"
    assert samples == [
        Sample(id="vstar:direct_attributes:sa_1", image_path=str(da / "sa_1.jpg"),
               question="What is the color of the cup?", options=("red", "blue", "green", "pink"), answer="A",
               boxes=((10.0, 20.0, 40.0, 60.0),),  # (10, 20, 10+30, 20+40)
               category="attribute", source="vstar", image_size=(100, 80)),
        Sample(id="vstar:direct_attributes:sa_2", image_path=str(da / "sa_2.jpg"),
               question="What is the material of the bag?", options=("leather", "cloth", "plastic", "paper"),
               answer="A", boxes=((0.0, 0.0, 120.0, 90.0),),  # the whole 120x90 image (borders may touch)
               category="attribute", source="vstar", image_size=(120, 90)),
        Sample(id="vstar:relative_position:sa_3", image_path=str(rp / "sa_3.jpg"),
               question="Is the dog on the left or right of the cat?", options=("left", "right"), answer="A",
               # union of (5, 5, 15, 15) and (50, 30, 70.5, 50): (min 5, min 5, max 70.5, max 50)
               boxes=((5.0, 5.0, 70.5, 50.0),), category="spatial", source="vstar", image_size=(100, 80)),
        Sample(id="vstar:relative_position:sa_4", image_path=str(rp / "sa_4.jpg"),
               question="Is the lamp above or below the chair?", options=("below", "above"), answer="A",
               # union of (40, 40, 50, 50) and (10, 10, 15, 15): (10, 10, 50, 50)
               boxes=((10.0, 10.0, 50.0, 50.0),), category="spatial", source="vstar", image_size=(60, 60)),
    ]
    assert [s.meta for s in samples] == [
        {"subtask": "Attr", "target_objects": ["cup"], "object_boxes": [(10.0, 20.0, 40.0, 60.0)]},
        {"subtask": "Attr", "target_objects": ["bag"], "object_boxes": [(0.0, 0.0, 120.0, 90.0)]},
        {"subtask": "Spatial", "target_objects": ["dog", "cat"],
         "object_boxes": [(5.0, 5.0, 15.0, 15.0), (50.0, 30.0, 70.5, 50.0)]},
        {"subtask": "Spatial", "target_objects": ["lamp", "chair"],
         "object_boxes": [(40.0, 40.0, 50.0, 50.0), (10.0, 10.0, 15.0, 15.0)]},
    ]


def test_vstar_shuffle_is_seeded_and_keeps_the_answer(vstar_root: Path, tmp_path: Path):
    plain = load_vstar(vstar_root, shuffle_options=False)
    shuffled = load_vstar(vstar_root, seed=5)
    assert load_vstar(vstar_root, seed=5) == shuffled
    for before, after in zip(plain, shuffled):
        assert sorted(after.options) == sorted(before.options)
        assert after.answer_text == before.options[0]  # the JSON lists the correct option first
        assert (after.id, after.boxes, after.meta) == (before.id, before.boxes, before.meta)
    # Across seeds the correct answer of the 4-option question sa_1 moves between letters.
    assert len({load_vstar(vstar_root, seed=s)[0].answer for s in range(12)}) > 1
    # A question's order depends only on (seed, id), not on which other questions were loaded before it.
    fewer = tmp_path / "fewer"
    shutil.copytree(vstar_root, fewer)
    for suffix in ("jpg", "json"):
        (fewer / "direct_attributes" / f"sa_1.{suffix}").unlink()
    by_id = {s.id: s.options for s in load_vstar(fewer, seed=5)}
    assert by_id == {s.id: s.options for s in shuffled[1:]}


def break_vstar(root: Path, split: str, name: str, **changes) -> Path:
    path = root / split / f"{name}.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("split, name, changes, message", [
    ("direct_attributes", "sa_2", {"question": None}, "missing field 'question'"),
    ("direct_attributes", "sa_2", {"options": None}, "missing field 'options'"),
    ("direct_attributes", "sa_2", {"options": ["only one"]}, "field 'options' must list 2 to 10"),
    ("direct_attributes", "sa_2", {"target_object": None}, "missing field 'target_object'"),
    ("direct_attributes", "sa_2", {"target_object": []}, "field 'target_object' must list at least 1"),
    ("direct_attributes", "sa_2", {"bbox": None}, "missing field 'bbox'"),
    ("direct_attributes", "sa_2", {"bbox": [[1, 2, 3]]}, r"field 'bbox\[0\]': a box needs 4 numbers"),
    # x 130 >= the image width 120: nothing left after clipping
    ("direct_attributes", "sa_2", {"bbox": [[130, 10, 30, 10]]},
     r"field 'bbox\[0\]': box \[130.0, 10.0, 160.0, 20.0\] lies outside the 120x90 image \(nothing left"),
    ("relative_position", "sa_3", {"bbox": [[5, 5, 10, 10], [50, 30, 0, 20]]},
     r"field 'bbox\[1\]': width and height must be positive"),
    ("relative_position", "sa_3", {"bbox": [[5, 5, 10, 10]]}, "field 'bbox' has 1 boxes for 2 target objects"),
])
def test_vstar_malformed_json(vstar_root: Path, split: str, name: str, changes: dict, message: str):
    path = break_vstar(vstar_root, split, name, **changes)
    with pytest.raises(DatasetError, match=message) as err:
        load_vstar(vstar_root)
    assert str(err.value).startswith(f"{path}: ")


def test_vstar_box_across_the_border_is_clipped(vstar_root: Path):
    # 100 + 30 = 130 > the image width 120: clipped to 120, as V*'s evaluation does (the old loader refused V*)
    break_vstar(vstar_root, "direct_attributes", "sa_2", bbox=[[100, 10, 30, 10]])
    sample = next(s for s in load_vstar(vstar_root, shuffle_options=False) if s.id.endswith("sa_2"))
    assert sample.boxes == ((100.0, 10.0, 120.0, 20.0),) and sample.meta["object_boxes"] == [(100.0, 10.0, 120.0, 20.0)]


def test_vstar_malformed_files(vstar_root: Path):
    json_path = vstar_root / "relative_position" / "sa_4.json"
    (vstar_root / "relative_position" / "sa_4.jpg").unlink()
    with pytest.raises(DatasetError, match=r"sa_4\.json: field 'image_path': image file .*sa_4\.jpg does not exist"):
        load_vstar(vstar_root)
    json_path.unlink()
    Image.new("RGB", (8, 8)).save(vstar_root / "relative_position" / "sa_9.jpg")
    with pytest.raises(DatasetError, match=r"relative_position: image\(s\) without a question file: \['sa_9.jpg'\]"):
        load_vstar(vstar_root)
    (vstar_root / "relative_position" / "sa_9.jpg").unlink()
    (vstar_root / "direct_attributes" / "sa_1.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"sa_1\.json: invalid JSON"):
        load_vstar(vstar_root)
    (vstar_root / "direct_attributes" / "sa_1.json").write_bytes(b'{"question": "caf\xe9"}')
    with pytest.raises(DatasetError, match=r"sa_1\.json:1: not UTF-8 text \(byte 0xe9"):
        load_vstar(vstar_root)
    shutil.rmtree(vstar_root / "direct_attributes")
    with pytest.raises(DatasetError, match="missing V\\* split folder 'direct_attributes'"):
        load_vstar(vstar_root)
