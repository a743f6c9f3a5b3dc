"""Append-only JSONL logs: a torn last line (a write cut short by a kill) is dropped before appending."""

from __future__ import annotations

import json

import pytest

from lfpc.data.records import Sample
from lfpc.jsonl_log import drop_torn_tail
from lfpc.rewards import EpisodeOutcome
from lfpc.rollout.base import Context
from lfpc.rollout.episodes import Trajectory
from lfpc.training.rollout_log import RolloutLog, ViewerConfig


@pytest.mark.parametrize("content, kept", [
    (b'{"a": 1}\n{"b": 2}\n', b'{"a": 1}\n{"b": 2}\n'),
    (b'{"a": 1}\n{"b": 2}\n{"c": 3', b'{"a": 1}\n{"b": 2}\n'),
    (b'{"a": 1}\n' + b"x" * 50, b'{"a": 1}\n'),         # the tail spans several chunks
    (b'{"torn', b""),
    (b"", b""),
])
def test_drop_torn_tail_keeps_every_complete_line(tmp_path, content, kept):
    path = tmp_path / "log.jsonl"
    path.write_bytes(content)
    drop_torn_tail(path, chunk=4)
    assert path.read_bytes() == kept


def trajectory(sample_id: str) -> Trajectory:
    sample = Sample(id=sample_id, image_path="x.jpg", question="q", options=("a", "b"), answer="A")
    return Trajectory(sample=sample, group=0, context=Context(token_ids=[], policy_mask=[], logprobs=[]),
                      prompt_length=0, display_size=(28, 28), outcome=EpisodeOutcome(answer="A", format_ok=True),
                      events=[], turns=["<answer>A</answer>"])


def test_rollout_log_resumes_on_a_clean_line_after_a_torn_one(tmp_path):
    folder, text_only = tmp_path / "rollouts", ViewerConfig(trajectories_per_step=0)
    path = folder / "rank0.jsonl"
    RolloutLog(folder, viewer=text_only).append(0, [trajectory("s0"), trajectory("s1")], [0.5, -0.5])
    with path.open("a") as handle:
        handle.write('{"step": 1, "sample_id": "s2')             # the run was killed mid-write
    RolloutLog(folder, viewer=text_only).append(1, [trajectory("s2")], [0.0])  # the resumed run
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["sample_id"]) for r in records] == [(0, "s0"), (0, "s1"), (1, "s2")]


def test_a_rerun_after_a_crash_before_the_checkpoint_does_not_log_the_redone_steps_twice(tmp_path):
    folder, text_only = tmp_path / "rollouts", ViewerConfig(trajectories_per_step=0)
    first = RolloutLog(folder, viewer=text_only)
    first.append(0, [trajectory("s0")], [0.5])
    first.append(1, [trajectory("s1")], [0.5])       # logged, then the run died before step 1's checkpoint
    rerun = RolloutLog(folder, viewer=text_only)       # resumed from step 1's start (the step-0 checkpoint)
    rerun.append(1, [trajectory("s1-again")], [0.0])
    rerun.append(2, [trajectory("s2")], [0.0])
    records = [json.loads(line) for line in (folder / "rank0.jsonl").read_text().splitlines()]
    assert [(r["step"], r["sample_id"]) for r in records] == [(0, "s0"), (1, "s1-again"), (2, "s2")]


# ---- the generic file classes (lfpc/files.py) every writer and reader uses ----

def test_read_json_lines_refuses_the_first_bad_line_by_file_and_line_and_drops_a_torn_tail(tmp_path):
    from lfpc.jsonl_log import JsonlError, read_json_lines
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": 2}\r\n{"torn')
    assert read_json_lines(path) == [(1, {"a": 1}), (3, {"b": 2})] and path.read_bytes().endswith(b"\r\n")
    for line, words in ((b"nope", "invalid JSON"), (b"\xff", "not UTF-8"), (b"[1]", "not a JSON object"),
                        (b"[" * 100000, "invalid JSON")):
        path.write_bytes(b'{"a": 1}\n' + line + b"\n\xff\n")
        with pytest.raises(JsonlError, match=rf"^{path}:2: {words}"):
            read_json_lines(path, repair=False)


def test_an_interrupted_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from lfpc.files import atomic_folder, atomic_output, atomic_write
    path = tmp_path / "result.json"
    atomic_write(path, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(path) as tmp:
            tmp.write_text("half of the n")
            raise KeyboardInterrupt
    folder = tmp_path / "model"
    with atomic_folder(folder) as staging:
        (staging / "weights").write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(folder) as staging:
            (staging / "weights").write_text("v2, half")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and (folder / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "result.json"]
    with atomic_folder(folder) as staging:
        (staging / "weights").write_text("v2")
    assert (folder / "weights").read_text() == "v2" and sorted(p.name for p in tmp_path.iterdir()) == ["model",
                                                                                                         "result.json"]


def test_a_second_writer_of_a_folder_is_refused_and_a_second_cache_builder_waits(tmp_path, holding):
    import threading
    import time

    from lfpc.files import entry_lock, single_writer
    with single_writer(tmp_path / "run"):
        with single_writer(tmp_path / "run"):  # re-entrant in one process (train.py holds it around train())
            pass
    other = holding(tmp_path / "run")
    with pytest.raises(RuntimeError, match=rf"run is in use by another process \(pid {other.pid}\)"):
        with single_writer(tmp_path / "run"):
            pass
    other.kill()
    other.wait()
    with single_writer(tmp_path / "run"):  # released when its holder dies
        pass
    order = []
    with entry_lock(tmp_path / "cache", wait=True):
        waiter = threading.Thread(target=lambda: entry_lock(tmp_path / "cache", wait=True).__enter__()
                                  or order.append("second"))
        waiter.start()
        time.sleep(0.5)
        order.append("first done")
    waiter.join(10)
    assert order == ["first done", "second"]


def test_an_output_is_never_an_input_under_any_name(tmp_path):
    from lfpc.files import check_distinct
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(data)
    (tmp_path / "hard.jsonl").hardlink_to(data)
    for name in ("data.jsonl", "link.jsonl", "hard.jsonl", "./sub/../data.jsonl"):
        with pytest.raises(ValueError, match="is the input"):
            check_distinct([data], [tmp_path / name])
    check_distinct([data], [tmp_path / "other.jsonl"])
