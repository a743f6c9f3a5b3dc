"""The judge's verdict cache (lfpc/judge.py CachedJudge): torn and garbage lines, and verdicts kept per judge."""

from __future__ import annotations

import json

import pytest

from lfpc.judge import CachedJudge


def always(verdict: bool, calls: list):
    def judge(question, truth, answer):
        calls.append(answer)
        return verdict
    return judge


def test_a_torn_last_line_is_dropped_and_the_next_verdict_starts_a_clean_line(tmp_path):
    path, calls = tmp_path / "verdicts.jsonl", []
    CachedJudge(always(True, calls), path)("q", "red", "crimson")
    with path.open("a") as handle:
        handle.write('{"key": "abc", "corr')  # a process killed mid-write
    cached = CachedJudge(always(False, calls), path)
    assert cached("q", "red", "crimson") is True and calls == ["crimson"]  # the complete verdict is kept
    assert cached("q", "red", "blue") is False
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row["answer"] for row in rows] == ["crimson", "blue"]


@pytest.mark.parametrize("line", ["garbage", "\x00\x00", "[1]", '{"key": "k"}', '{"key": 1, "correct": true}'])
def test_a_garbage_line_is_refused_with_file_and_line(tmp_path, line):
    path = tmp_path / "verdicts.jsonl"
    CachedJudge(always(True, []), path)("q", "red", "crimson")
    with path.open("a") as handle:
        handle.write(line + "\n")
    with pytest.raises(ValueError, match=r"verdicts\.jsonl:2: "):
        CachedJudge(always(True, []), path)


def test_a_line_that_is_not_utf8_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "verdicts.jsonl"
    path.write_bytes(b'{"key": "k", "correct": true}\n{"key": "\xff", "correct": true}\n')
    with pytest.raises(ValueError, match=r"verdicts\.jsonl:2: not UTF-8"):
        CachedJudge(always(True, []), path)


def test_a_verdict_of_one_judge_is_never_returned_for_another(tmp_path):
    path, calls = tmp_path / "verdicts.jsonl", []
    assert CachedJudge(always(False, calls), path, identity="mini judge")("q", "dog", "a dog") is False
    assert CachedJudge(always(True, calls), path, identity="large judge")("q", "dog", "a dog") is True
    assert CachedJudge(always(True, calls), path, identity="mini judge")("q", "dog", "a dog") is False
    assert calls == ["a dog", "a dog"]
