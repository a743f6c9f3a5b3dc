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
