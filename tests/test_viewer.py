"""The trajectory viewer end to end on the embedded default: a training run and an evaluation saved with thumbnails,
wandb's table (offline), the collapse alarm of a run, and both reports rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
THUMBNAIL_PX = 192
KEPT = 8            # trajectories per step with images (one mini group of 8)
QUESTIONS = 2       # evaluated questions; the first keeps images in every mode and budget
MODES = ["pred", "gt", "noise", "direct"]

pytestmark = pytest.mark.slow


def run(*args: str, returncode: int = 0) -> str:
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == returncode, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One GRPO step of the embedded default (2 prompts x 8 rollouts, wandb offline, an alarm that must trip)
    and an evaluation of the mini model in the four crop modes, each with its report written."""
    base = tmp_path_factory.mktemp("viewer")
    cache, train_dir, eval_dir = base / "cache", base / "train", base / "eval"
    train_log = run("train.py", "logger=default", "trainer.max_steps=1", "grpo.prompts_per_step=2",
                    f"viewer.trajectories_per_step={KEPT}", f"viewer.thumbnail_px={THUMBNAIL_PX}",
                    "alarms.min_tool_call_rate=1.01", "alarms.patience=1", "alarms.stop=true",
                    f"cache_dir={cache}", f"hydra.run.dir={train_dir}", returncode=1)  # stopped on the alarm
    run("eval.py", f"eval.limit={QUESTIONS}", f"eval.modes=[{','.join(MODES)}]", "viewer.questions=1",
        f"viewer.thumbnail_px={THUMBNAIL_PX}", f"cache_dir={cache}", f"hydra.run.dir={eval_dir}")
    for folder in (train_dir, eval_dir):
        run("-m", "lfpc.viewer", str(folder))
    return {"train": train_dir, "eval": eval_dir, "train_log": train_log}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def image_paths(records: list[dict]) -> list[str]:
    return [p for r in records if "images" in r for p in [r["images"]["global"], *r["images"]["crops"]]]


def test_training_saves_what_the_viewer_needs_and_a_wandb_table(runs):
    folder = runs["train"] / "rollouts"
    records = lines(folder / "rank0.jsonl")
    assert len(records) == 16 and sum("images" in r for r in records) == KEPT
    for r in records:
        assert {"advantage", "scores", "turns", "events", "pred_boxes", "gt_boxes_display", "question"} <= set(r)
        assert len(r["images"]["crops"]) == len(r["crop_boxes"]) if "images" in r else True
        assert len(r["pred_boxes"]) == len(r["crop_boxes"]) and len(r["turns"]) == len(r["events"])
    group0 = [r["advantage"] for r in records if r["group"] == 0]
    assert abs(sum(group0)) < 1e-4  # group-relative advantages are centred
    for path in image_paths(records):
        assert max(Image.open(folder / path).size) <= THUMBNAIL_PX
    tables = list((runs["train"] / "wandb").glob("offline-run-*/files/media/table/rollouts/trajectories_*.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert len(table["data"]) == KEPT and "global_view" in table["columns"]
    assert "collapse alarm at GRPO step 1: rollout/tool_call_rate" in runs["train_log"]
    assert "ALARM=min_tool_call_rate" in runs["train_log"]
    assert (runs["train"] / "checkpoints" / "alarm.ckpt").is_file() and not (runs["train"] / "hf_model").exists()
    summary = json.loads((runs["train"] / "summary.json").read_text())
    assert summary["stopped_on_alarm"].startswith("collapse alarm at GRPO step 1: rollout/tool_call_rate")


def test_eval_records_carry_boxes_in_both_frames_turns_and_thumbnails(runs):
    records = lines(runs["eval"] / "records.jsonl")
    budgets = {r["budget"] for r in records}
    assert len(records) == QUESTIONS * len(MODES) * len(budgets)
    first = records[0]["id"]
    assert {r["id"] for r in records if "images" in r} == {first}
    assert sum("images" in r for r in records) == len(MODES) * len(budgets)
    for r in records:
        assert {"turns", "events", "image_size", "display_size", "gt_boxes", "gt_boxes_display", "crop_boxes",
                "pred_boxes"} <= set(r)
        width, height = r["image_size"]
        (x1, _, _, y2), (dx1, _, _, dy2) = r["gt_boxes"][0], r["gt_boxes_display"][0]
        assert dx1 == pytest.approx(x1 * r["display_size"][0] / width)
        assert dy2 == pytest.approx(y2 * r["display_size"][1] / height)
        assert all(e["crop_size"] for e in r["events"] if e["box"] is not None)


def report_counts(html: str) -> dict[str, int]:
    return {"cards": len(re.findall(r'<div class="traj ', html)), "global": len(re.findall(r'class="global"', html)),
            "crops": len(re.findall(r'class="crop"', html)), "thumbs": len(re.findall(r'class="thumb"', html))}


def expected_counts(records: list[dict]) -> dict[str, int]:
    kept = [r for r in records if "images" in r]
    return {"cards": len(kept), "global": len(kept), "crops": sum(len(r["images"]["crops"]) for r in kept),
            "thumbs": len(kept)}


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_report_shows_every_kept_trajectory_self_contained(runs, kind):
    folder = runs[kind]
    records = lines(folder / "rollouts" / "rank0.jsonl") if kind == "train" else lines(folder / "records.jsonl")
    html = (folder / "trajectories.html").read_text()
    assert report_counts(html) == expected_counts(records)
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from the network
    if kind == "eval":  # the crop modes side by side for the question with images
        modes = re.findall(r"<b>(\w+) @ \d+ tokens</b>", html)
        assert modes[:len(MODES)] == MODES


def chromium(*args: str, user_data_dir: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={user_data_dir}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run installs "
                                             "it): the report is not checked in a real browser")
@pytest.mark.parametrize("kind", ["train", "eval"])
def test_report_loads_in_headless_chromium_without_console_errors(runs, kind, tmp_path):
    folder = runs[kind]
    url = (folder / "trajectories.html").as_uri()
    dom = chromium("--dump-dom", url, user_data_dir=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-3000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    expected = expected_counts(lines(folder / "rollouts" / "rank0.jsonl") if kind == "train"
                               else lines(folder / "records.jsonl"))
    assert report_counts(dom.stdout) == expected
    assert re.search(r'id="shown">(\d+)<', dom.stdout).group(1) == str(expected["cards"])  # the filter script ran
    wrong = chromium("--dump-dom", url + "?outcome=wrong", user_data_dir=tmp_path / "profile").stdout
    visible = re.findall(r'<div class="traj (\w+)"[^>]*?( hidden="")?>', wrong)
    assert len(visible) == expected["cards"] and all((kind == "wrong") != bool(hidden) for kind, hidden in visible)
    screenshot = folder / "trajectories.png"
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1400,1800", "--hide-scrollbars", url,
                    user_data_dir=tmp_path / "profile")
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-3000:]


def test_reading_a_running_training_leaves_its_log_alone(tmp_path):
    from lfpc.viewer.load import load_report

    log = crafted_run(tmp_path) / "rollouts" / "rank0.jsonl"
    with log.open("a") as handle:
        handle.write('{"step": 1, "sam')  # the trainer is writing step 1
    before = log.read_bytes()
    assert [r["step"] for r in load_report(tmp_path).records] == [0]
    assert log.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="neither"):
        load_report(tmp_path / "rollouts")


# ---- crafted and damaged run folders (fast: no run needed) ----

def crafted_run(folder: Path, **changes) -> Path:
    """A training run folder with one rollout record with images (``changes`` replace its fields)."""
    (folder / "rollouts" / "images").mkdir(parents=True)
    Image.new("RGB", (32, 24), "red").save(folder / "rollouts" / "images" / "g.jpg")
    record = {"step": 0, "rank": 0, "sample_id": "s0", "group": 0, "question": "What colour?", "options": ["red", "blue"],
              "answer": "A", "prediction": "A", "format_ok": True, "invalid_calls": 0,
              "scores": {"acc": 1.0, "fmt": 1.0, "tool": 0.0, "iou": 0.0, "l1": 0.0, "total": 2.0}, "advantage": 0.5,
              "response_tokens": 3, "image_size": [320, 240], "display_size": [32, 24], "gt_boxes": [[0, 0, 10, 10]],
              "gt_boxes_display": [[0, 0, 1, 1]], "crop_boxes": [], "pred_boxes": [], "turns": ["<answer>A</answer>"],
              "events": [{"turn": 1, "kind": "answer", "bbox": None, "box": None, "error": None}],
              "images": {"global": "images/g.jpg", "crops": []}, **changes}
    (folder / "rollouts" / "rank0.jsonl").write_text(json.dumps(record) + "\n")
    return folder


def test_a_crafted_record_never_injects_script_or_embeds_a_file_outside_the_run(tmp_path):
    from lfpc.viewer.__main__ import write_report
    from lfpc.viewer.load import data_uri
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"private bytes")
    (tmp_path / "run").mkdir()
    hostile = '1"><script>alert(7)</script>'
    for changes in ({"display_size": [hostile, 10]}, {"rank": "<script>alert(8)</script>"},
                    {"group": 1.5}, {"events": [{"turn": "<script>", "kind": "answer"}]},
                    {"events": [{"turn": 1, "kind": "tool_call", "bbox": [0, 0, 5, 5], "box": [0, 0, 50, 50],
                                 "crop_size": ["<script>", 3]}]}):
        folder = crafted_run(tmp_path / f"run{len(list(tmp_path.iterdir()))}", **changes)
        with pytest.raises(ValueError, match=r"rank0\.jsonl:1: field '\w+' must be"):
            write_report(folder)
    for path in ("../../secret.jpg", str(secret)):
        folder = crafted_run(tmp_path / f"run{len(list(tmp_path.iterdir()))}",
                             images={"global": path, "crops": [path]})
        page = write_report(folder).read_text()
        assert page.count("<script") == 1 and "cHJpdmF0ZSBieXRlcw" not in page  # base64 of b"private bytes"
    link = tmp_path / "run" / "link.jpg"
    link.symlink_to(secret)
    assert data_uri(tmp_path / "run", "link.jpg") is None and data_uri(tmp_path, "secret.jpg") is not None


@pytest.mark.parametrize("line, words", [
    (b"garbage\n", "invalid JSON"), (b"\x00\x00\x00\n", "invalid JSON"), (b'{"step": 0, "q": "\xff"}\n', "not UTF-8"),
    (b'{"step": 0}\n', "no field"), (b"[1, 2]\n", "not a JSON object"),
])
def test_a_damaged_line_is_refused_with_file_and_line(tmp_path, line, words):
    from lfpc.viewer.__main__ import main
    folder = crafted_run(tmp_path / "run")
    with (folder / "rollouts" / "rank0.jsonl").open("ab") as handle:
        handle.write(line)
        handle.write((folder / "rollouts" / "rank0.jsonl").read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(SystemExit, match=rf"rank0\.jsonl:2: .*{words}"):
        main([str(folder)])
    assert not (folder / "trajectories.html").exists()


def test_the_report_never_overwrites_the_records(tmp_path):
    from lfpc.viewer.__main__ import main
    folder = crafted_run(tmp_path / "run")
    before = (folder / "rollouts" / "rank0.jsonl").read_bytes()
    with pytest.raises(SystemExit, match="is the input"):
        main([str(folder), "--out", str(folder / "rollouts" / "rank0.jsonl")])
    assert (folder / "rollouts" / "rank0.jsonl").read_bytes() == before


def test_any_crafted_field_is_refused_by_file_and_line_or_shown_escaped(tmp_path_factory):
    import base64
    import tempfile

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from lfpc.jsonl_log import JsonlError
    from lfpc.viewer.load import load_report
    from lfpc.viewer.page import render

    secret = tmp_path_factory.mktemp("secret") / "secret.jpg"
    secret.write_bytes(b"private bytes")
    hostile = st.sampled_from(['"><script>x</script>', "</svg><script>", "../../../" + str(secret), str(secret),
                               "images/../../../" + secret.name, "javascript:alert(1)"])
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=8),
                       hostile)
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["global", "crops", "turn", "kind", "bbox", "box", "crop_size", "error", "acc"]), inner,
        max_size=4), max_leaves=10)
    fields = ["step", "rank", "group", "sample_id", "question", "options", "answer", "prediction", "scores",
              "advantage", "display_size", "gt_boxes", "gt_boxes_display", "crop_boxes", "turns", "events", "images"]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.dictionaries(st.sampled_from(fields), values, min_size=1, max_size=3))
    def check(changes):
        with tempfile.TemporaryDirectory() as folder:
            run = crafted_run(Path(folder) / "run", **changes)
            try:
                page = render(load_report(run))
            except JsonlError as err:
                assert str(err).startswith(f"{run / 'rollouts' / 'rank0.jsonl'}:1: ")
                return
            assert page.count("<script") == 1 and base64.b64encode(b"private bytes").decode() not in page

    check()
