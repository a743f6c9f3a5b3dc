"""Source converters (lfpc/data/convert) on small fixtures that follow each source's published schema."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lfpc.data.convert import SOURCES, convert_file
from lfpc.data.convert.__main__ import main
from lfpc.data.convert.core import split_choices
from lfpc.data.records import load_jsonl

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def png(width: int = 64, height: int = 48, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def save_image(path: Path, width: int = 64, height: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (20, 120, 30)).save(path)


def deepeyes_row(index: int, question: str, truth: str, images: list[bytes]) -> dict:
    return {"data_source": "vstar", "ability": "vqa", "env_name": "visual_toolbox_v2",
            "prompt": [{"role": "system", "content": "You are a helpful assistant."},
                       {"role": "user", "content": f"<image>\n{question}\nThink first, then answer."}],
            "images": [{"bytes": data, "path": None} for data in images],
            "reward_model": {"ground_truth": truth, "style": "model"},
            "extra_info": {"answer": truth, "index": index, "question": question, "split": "train"}}


@pytest.fixture()
def deepeyes(tmp_path) -> Path:
    rows = [deepeyes_row(0, "What is written on the sign?", "Harbinger School", [png()]),
            deepeyes_row(1, "How many cars are there?", "3", [png(80, 60)]),
            deepeyes_row(2, "Which is larger?", "A", [png(), png()]),  # two images: dropped
            deepeyes_row(3, "What colour is the car?\n(A) red\n(B) blue", "A", [png()]),
            deepeyes_row(4, "Is it open?", "yes", [b"not an image"])]  # unreadable: dropped
    path = tmp_path / "src" / "data_v0.8_visual_toolbox_v2.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_deepeyes_parquet(deepeyes, tmp_path):
    out = tmp_path / "out" / "deepeyes.jsonl"
    report = convert_file(SOURCES["deepeyes"], deepeyes, out)
    assert report.kept == 3 and dict(report.dropped) == {"not exactly one image": 1, "unreadable image": 1}
    first, second, third = load_jsonl(out)
    assert (first.question, first.options, first.answer) == ("What is written on the sign?", (), "Harbinger School")
    assert first.id == "deepeyes-vstar-0" and first.source == "deepeyes" and first.image_size == (64, 48)
    assert Path(first.image_path).parent == tmp_path / "out" / "deepeyes_images"
    assert second.answer == "3" and second.image_size == (80, 60)
    assert (third.question, third.options, third.answer) == ("What colour is the car?", ("red", "blue"), "A")
    assert json.loads((tmp_path / "out" / "deepeyes.jsonl.report.json").read_text())["dropped"] == 2


def test_deepeyes_falls_back_to_the_user_turn(tmp_path):
    row = deepeyes_row(0, "What is on the sign?", "stop", [png()])
    row["extra_info"] = {"index": 0, "split": "train"}
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([row]), path)
    convert_file(SOURCES["deepeyes"], path, tmp_path / "o.jsonl")
    assert load_jsonl(tmp_path / "o.jsonl")[0].question == "What is on the sign?\nThink first, then answer."


def test_thinklite_parquet(tmp_path):
    rows = [{"problem": "<image>What is the value of x?", "answer": "12", "image": png()},
            {"problem": "<image>Which shape is red?\nChoices:\n(A) circle\n(B) square", "answer": "B",
             "image": png(32, 32)},
            {"problem": "<image>Empty answer", "answer": "", "image": png()}]
    path = tmp_path / "ThinkLite-VL-hard-11k.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    report = convert_file(SOURCES["thinklite"], path, tmp_path / "t.jsonl")
    assert report.kept == 2 and dict(report.dropped) == {"missing answer": 1}
    first, second = load_jsonl(tmp_path / "t.jsonl")
    assert (first.id, first.question, first.answer) == ("thinklite-0", "What is the value of x?", "12")
    assert (second.question, second.options, second.answer) == ("Which shape is red?", ("circle", "square"), "B")


def test_pixel_reasoner_parquet(tmp_path):
    save_image(tmp_path / "images" / "sa1b" / "1.jpg")
    rows = [{"qid": "q1", "question": "<image>\nWhat animal is on the sign?\nchoices:\nA: Lion  \nB: Sheep",
             "answer": "B", "image": ["images/sa1b/1.jpg"], "is_video": False},
            {"qid": "q2", "question": "<image>\nWhat is the street name?", "answer": "Woolshops",
             "image": ["images/sa1b/1.jpg"], "is_video": False},
            {"qid": "q3", "question": "What happens?", "answer": "a goal", "image": ["v/1.jpg", "v/2.jpg"],
             "is_video": True},
            {"qid": "q4", "question": "<image>\nWhat is missing?", "answer": "x", "image": ["images/none.jpg"],
             "is_video": False}]
    path = tmp_path / "release.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    report = convert_file(SOURCES["pixel_reasoner"], path, tmp_path / "out" / "pr.jsonl")
    assert report.kept == 2 and dict(report.dropped) == {"video": 1, "image file missing": 1}
    first, second = load_jsonl(tmp_path / "out" / "pr.jsonl")
    assert (first.id, first.question, first.options, first.answer) == (
        "pixelreasoner-q1", "What animal is on the sign?", ("Lion", "Sheep"), "B")
    assert first.image_path == str(tmp_path / "images" / "sa1b" / "1.jpg")
    assert (second.question, second.options, second.answer) == ("What is the street name?", (), "Woolshops")


def test_cof_json_with_image_root(tmp_path):
    save_image(tmp_path / "imgs" / "a.jpg")
    rows = [{"question": "What number is on the jersey?", "groundtruth": "23", "image_name": "a.jpg",
             "data_source": "vstar"},
            {"question": "What colour?", "groundtruth": "red", "image_name": "missing.jpg", "data_source": "x"}]
    path = tmp_path / "cof_rl.json"
    path.write_text(json.dumps(rows))
    report = convert_file(SOURCES["cof"], path, tmp_path / "cof.jsonl", image_root=tmp_path / "imgs")
    assert report.kept == 1 and dict(report.dropped) == {"image file missing": 1}
    (sample,) = load_jsonl(tmp_path / "cof.jsonl")
    assert (sample.id, sample.answer, sample.meta) == ("cof-0", "23", {"data_source": "vstar"})


def test_visualprobe_json(tmp_path):
    save_image(tmp_path / "VisualProbe_train" / "data" / "0001.jpg", 300, 200)
    rows = [{"images": ["data/0001.jpg"], "problem": "<image>\nWhat is written on the small flag?",
             "solution": "Harbinger", "doc_id": 17},
            {"images": ["data/0001.jpg"], "question": "What colour is the door?", "answer": "green"},
            {"images": [], "problem": "No image?", "solution": "none"}]
    path = tmp_path / "VisualProbe_train" / "train.json"
    path.write_text(json.dumps(rows))
    report = convert_file(SOURCES["visualprobe"], path, tmp_path / "vp.jsonl")
    assert report.kept == 2 and dict(report.dropped) == {"not exactly one image": 1}
    first, second = load_jsonl(tmp_path / "vp.jsonl")
    assert (first.id, first.question, first.answer, first.image_size) == (
        "visualprobe-17", "What is written on the small flag?", "Harbinger", (300, 200))
    assert (second.id, second.answer) == ("visualprobe-1", "green")


def test_resume_skips_done_rows_and_redoes_a_cut_off_one(deepeyes, tmp_path):
    out = tmp_path / "o" / "d.jsonl"
    first = convert_file(SOURCES["deepeyes"], deepeyes, out, limit=2)
    assert first.kept == 2 and sum(first.dropped.values()) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:20])  # interrupted in the middle of the second row
    again = convert_file(SOURCES["deepeyes"], deepeyes, out)
    assert again.kept == 3 and dict(again.dropped) == {"not exactly one image": 1, "unreadable image": 1}
    assert [s.id for s in load_jsonl(out)] == ["deepeyes-vstar-0", "deepeyes-vstar-1", "deepeyes-vstar-3"]
    third = convert_file(SOURCES["deepeyes"], deepeyes, out)  # nothing left to do
    assert third.to_json() == again.to_json()
    assert len(out.read_text().splitlines()) == 3
    assert len((tmp_path / "o" / "d.jsonl.dropped.jsonl").read_text().splitlines()) == 2


def test_duplicate_ids_are_dropped(tmp_path):
    save_image(tmp_path / "a.jpg")
    rows = [{"images": ["a.jpg"], "problem": "Q1?", "solution": "x", "doc_id": 1},
            {"images": ["a.jpg"], "problem": "Q2?", "solution": "y", "doc_id": 1}]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    report = convert_file(SOURCES["visualprobe"], tmp_path / "train.json", tmp_path / "vp.jsonl")
    assert report.kept == 1 and dict(report.dropped) == {"duplicate id": 1}


def test_command_line(tmp_path, capsys):
    save_image(tmp_path / "imgs" / "a.jpg")
    (tmp_path / "cof.json").write_text(json.dumps([{"question": "Q?", "groundtruth": "yes", "image_name": "a.jpg",
                                                     "data_source": "s"}]))
    main(["cof", str(tmp_path / "cof.json"), str(tmp_path / "cof.jsonl"), "--image-root", str(tmp_path / "imgs")])
    assert json.loads(capsys.readouterr().out)["kept"] == 1


@pytest.mark.parametrize(("question", "answer", "expected"), [
    ("Q?\nA. red\nB. blue", "B", ("Q?", ("red", "blue"), "B")),
    ("Q?\nOptions:\n(A) red\n(B) blue", "(a)", ("Q?", ("red", "blue"), "A")),
    ("Q?\nchoices:\nA: red\nB: blue", "blue", ("Q?", ("red", "blue"), "B")),
    ("Q?\nA. red\nB. blue", "purple", ("Q?\nA. red\nB. blue", (), "purple")),  # answer is no option: free-form
    ("Q?\nB. red\nC. blue", "B", ("Q?\nB. red\nC. blue", (), "B")),  # letters must start at A
    ("How many?", "3", ("How many?", (), "3")),
])
def test_split_choices(question, answer, expected):
    assert split_choices(question, answer) == expected


def one_row_per_source(folder: Path) -> dict[str, tuple[Path, Path]]:
    """A free-form question in each source's schema: source -> (input file, image root)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_image(folder / "imgs" / "a.jpg", 512, 384)
    parquet = {"deepeyes": [deepeyes_row(0, "How many red squares are there?", "3", [png(512, 384)])],
               "thinklite": [{"problem": "<image>Is the image red?", "answer": "yes", "image": png(512, 384)}],
               "pixel_reasoner": [{"qid": "q1", "question": "<image>\nWhat is the colour?", "answer": "green",
                                   "image": ["imgs/a.jpg"], "is_video": False}]}
    json_rows = {"cof": [{"question": "What colour is it?", "groundtruth": "green", "image_name": "a.jpg",
                          "data_source": "vstar"}],
                 "visualprobe": [{"images": ["imgs/a.jpg"], "problem": "<image>\nWhat is shown?",
                                  "solution": "a green square", "doc_id": 1}]}
    inputs = {}
    for source, rows in parquet.items():
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{source}.parquet")
        inputs[source] = (folder / f"{source}.parquet", folder)
    for source, rows in json_rows.items():
        (folder / f"{source}.json").write_text(json.dumps(rows))
        inputs[source] = (folder / f"{source}.json", folder / "imgs" if source == "cof" else folder)
    return inputs


@pytest.mark.slow
def test_train_py_trains_on_converted_free_form_rows_of_every_source(tmp_path):
    """The paper's Stage I command on converted data: every source's row is rolled out and scored."""
    lines = []
    for source, (path, root) in one_row_per_source(tmp_path / "src").items():
        out = tmp_path / "converted" / f"{source}.jsonl"
        assert convert_file(SOURCES[source], path, out, image_root=root).kept == 1
        lines += out.read_text().splitlines()
    data = tmp_path / "converted" / "stage1.jsonl"  # image paths are relative to the same folder
    data.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    args = [sys.executable, "train.py", "+stage=infogap", "data=jsonl", f"data.path={data}", "logger=csv",
            "model=tiny", "grpo=tiny", "vision.global_max_tokens=64", "model.warmup.steps=20", "trainer.max_steps=1",
            "grpo.group_size=2", "grpo.prompts_per_step=5", "grpo.mini_batch_size=2", "episode.max_turns=2",
            f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"]
    proc = subprocess.run(args, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rollouts = [json.loads(line) for line in (run / "rollouts" / "rank0.jsonl").read_text().splitlines()]
    assert {r["sample_id"].split("-")[0] for r in rollouts} == {"deepeyes", "thinklite", "pixelreasoner", "cof",
                                                               "visualprobe"}


# ---- inputs and outputs that would lose data, garbage inputs (the file is always named) ----

def visualprobe_input(tmp_path: Path, rows: list | None = None) -> Path:
    save_image(tmp_path / "a.jpg")
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows if rows is not None else
                               [{"images": ["a.jpg"], "problem": f"Q{i}?", "solution": "x", "doc_id": i}
                                for i in range(3)]))  # no trailing newline, as the released files
    return path


def test_output_equal_to_the_input_is_refused_and_the_input_kept(tmp_path):
    path = visualprobe_input(tmp_path)
    before = path.read_bytes()
    (tmp_path / "link.json").symlink_to(path)
    for out in (path, tmp_path / "link.json", tmp_path / "." / "train.json"):
        with pytest.raises(ValueError, match="is the input"):
            convert_file(SOURCES["visualprobe"], path, out)
    (tmp_path / "train.json.dropped.jsonl").write_bytes(before)
    with pytest.raises(ValueError, match="is the input"):  # the dropped log beside the output is the input
        convert_file(SOURCES["visualprobe"], tmp_path / "train.json.dropped.jsonl", tmp_path / "train.json")
    assert path.read_bytes() == before


def test_ids_that_differ_only_in_replaced_characters_get_their_own_images(tmp_path):
    rows = [deepeyes_row(1, "What colour?", "red", [png(colour=(255, 0, 0))]),
            deepeyes_row(1, "What colour?", "blue", [png(colour=(0, 0, 255))])]
    rows[0]["data_source"], rows[1]["data_source"] = "a/b", "a_b"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    convert_file(SOURCES["deepeyes"], tmp_path / "d.parquet", tmp_path / "out.jsonl")
    first, second = load_jsonl(tmp_path / "out.jsonl")
    assert (first.answer, second.answer) == ("red", "blue") and first.image_path != second.image_path
    assert Image.open(first.image_path).getpixel((0, 0)) == (255, 0, 0)
    assert Image.open(second.image_path).getpixel((0, 0)) == (0, 0, 255)
    assert len(list((tmp_path / "out_images").iterdir())) == 2


def test_another_source_or_input_into_an_existing_output_is_refused(deepeyes, tmp_path):
    out = tmp_path / "o.jsonl"
    convert_file(SOURCES["deepeyes"], deepeyes, out, limit=2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    other = visualprobe_input(tmp_path / "vp")
    with pytest.raises(ValueError, match="deepeyes"):
        convert_file(SOURCES["visualprobe"], other, out)
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(deepeyes.read_bytes())
    with pytest.raises(ValueError, match="resumes the same conversion"):  # same source, another file
        convert_file(SOURCES["deepeyes"], copy, out)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name in before} == before
    (tmp_path / "o.jsonl.report.json").unlink()  # the rows themselves name their source
    with pytest.raises(ValueError, match="deepeyes"):
        convert_file(SOURCES["visualprobe"], other, out)
    assert convert_file(SOURCES["deepeyes"], deepeyes, out).kept == 3  # the same conversion resumes


@pytest.mark.parametrize("line", [b"garbage\n", b"\x00\x00\n", b"[1, 2]\n", b'{"no_id": 1}\n', b"\xff\xfe{}\n"])
def test_a_garbage_line_in_the_output_is_refused_with_file_and_line(deepeyes, tmp_path, line):
    out = tmp_path / "o.jsonl"
    convert_file(SOURCES["deepeyes"], deepeyes, out, limit=2)
    with out.open("ab") as handle:
        handle.write(line)
    with pytest.raises(ValueError, match=rf"o\.jsonl:3: "):
        convert_file(SOURCES["deepeyes"], deepeyes, out)
    assert len(out.read_bytes().splitlines()) == 3  # nothing written, nothing cut


@pytest.mark.parametrize("name, content", [
    ("garbage.parquet", b"PAR1 not really"), ("empty.parquet", b""), ("bad.json", b'[{"a": 1}, oops]'),
    ("latin1.json", '[{"problem": "caf\u00e9"}]'.encode("latin-1")), ("deep.json", b"[" * 100000),
])
def test_unreadable_inputs_are_refused_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    source = "deepeyes" if name.endswith(".parquet") else "visualprobe"
    with pytest.raises(ValueError, match=rf"{name}"):
        convert_file(SOURCES[source], path, tmp_path / "o.jsonl")


def test_a_truncated_parquet_is_refused_naming_the_file(deepeyes, tmp_path):
    path = tmp_path / "half.parquet"
    path.write_bytes(deepeyes.read_bytes()[: deepeyes.stat().st_size // 2])
    with pytest.raises(ValueError, match="half.parquet: not a readable parquet file"):
        convert_file(SOURCES["deepeyes"], path, tmp_path / "o.jsonl")


def test_a_row_that_is_not_an_object_is_dropped_with_its_number(tmp_path):
    path = visualprobe_input(tmp_path, [{"images": ["a.jpg"], "problem": "Q?", "solution": "x", "doc_id": 1},
                                        "just a string", 5])
    report = convert_file(SOURCES["visualprobe"], path, tmp_path / "o.jsonl")
    assert report.kept == 1 and dict(report.dropped) == {"not an object": 2}
    dropped = [json.loads(line) for line in (tmp_path / "o.jsonl.dropped.jsonl").read_text().splitlines()]
    assert [row["row"] for row in dropped] == [1, 2]


def test_two_conversions_into_one_output_are_refused(deepeyes, tmp_path):
    from lfpc.files import entry_lock
    out = tmp_path / "o.jsonl"
    with entry_lock(out, wait=False):  # another process converting into it (flock: per open file, as a process)
        with pytest.raises(RuntimeError, match="being written by another process"):
            convert_file(SOURCES["deepeyes"], deepeyes, out)
    assert not out.exists()


def test_a_negative_limit_is_refused(deepeyes, tmp_path):
    with pytest.raises(ValueError, match="limit must be >= 0"):
        convert_file(SOURCES["deepeyes"], deepeyes, tmp_path / "o.jsonl", limit=-1)


def test_a_failed_start_does_not_claim_the_output(tmp_path):
    (tmp_path / "bad.json").write_text("[oops")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        convert_file(SOURCES["visualprobe"], tmp_path / "bad.json", tmp_path / "o.jsonl")
    assert convert_file(SOURCES["visualprobe"], visualprobe_input(tmp_path), tmp_path / "o.jsonl").kept == 3
