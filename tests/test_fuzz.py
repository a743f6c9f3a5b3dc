"""Property-based fuzzing (hypothesis): no assistant turn, however malformed, makes the parser, the crop environment
or the codec raise; every turn yields a valid action or an invalid-call observation the codec can append."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lfpc.agent.env import CropEnvironment
from lfpc.agent.parsing import parse_turn
from lfpc.agent.presets import preset
from lfpc.agent.prompt import TOOL_NAME, initial_messages
from lfpc.data.records import Sample

DISPLAY = (112, 84)
SPECIAL = ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>", "<|im_start|>", "<|video_pad|>"]
TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>", "<tool_response>"]

numbers = st.one_of(st.integers(), st.integers(min_value=10**300, max_value=10**400), st.floats(),
                    st.floats(min_value=-200, max_value=300))
texts = st.one_of(st.text(max_size=40), st.sampled_from(SPECIAL + TAGS + [TOOL_NAME]))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), numbers, texts),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=4),
                           max_leaves=12)
bboxes = st.one_of(st.lists(numbers, min_size=4, max_size=4), json_values)
arguments = st.one_of(st.fixed_dictionaries({"bbox_2d": bboxes}, optional={"label": json_values}), json_values)
calls = st.fixed_dictionaries({}, optional={"name": st.one_of(st.just(TOOL_NAME), json_values),
                                            "arguments": st.one_of(arguments, arguments.map(json.dumps))})
bodies = st.one_of(calls.map(json.dumps), json_values.map(json.dumps), st.text(max_size=60),
                   st.integers(1, 3000).map(lambda n: "[" * n),
                   st.integers(300, 5000).map(lambda n: '{"name": "%s", "arguments": {"bbox_2d": [1%s, 0, 5, 5]}}'
                                              % (TOOL_NAME, "0" * n)))
tool_turns = st.tuples(st.text(max_size=20), bodies).map(lambda t: f"<think>{t[0]}</think><tool_call>{t[1]}</tool_call>")
pieces = st.one_of(st.text(max_size=30), st.sampled_from(SPECIAL + TAGS), bodies)
turns = st.one_of(st.text(), tool_turns, st.lists(pieces, max_size=8).map("".join),
                  st.text(max_size=10).map(lambda a: f"<answer>{a}</answer>"))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The compared methods' formats: Pixel Reasoner's crop_image_normalized call, Mini-o3's <grounding>, \boxed{} answers
COMPARED = ("cof_sft", "pixel_reasoner", "mini_o3")
targets = st.one_of(st.integers(-4, 4), json_values)
pr_arguments = st.fixed_dictionaries({"bbox_2d": bboxes}, optional={"target_image": targets})
pr_names = st.sampled_from(["crop_image_normalized", "select_frames", TOOL_NAME])
pr_calls = st.fixed_dictionaries({"name": pr_names, "arguments": pr_arguments}).map(
    lambda c: f"<tool_call>\n{json.dumps(c)}\n</tool_call>")
sources = st.one_of(st.sampled_from(["original_image", "observation_0", "observation_1", "observation_99",
                                     "observation_" + "0" * 5000 + "1", "observation_" + "7" * 5000]),
                    st.integers(0, 10**6).map(lambda n: f"observation_{n}"), st.text(max_size=12))
groundings = st.tuples(st.one_of(bboxes.map(json.dumps), st.text(max_size=30)), sources).map(
    lambda t: '<grounding>{"bbox_2d": %s, "source": "%s"}</grounding>' % t)
method_pieces = st.one_of(pieces, pr_calls, groundings, st.sampled_from(
    ["<grounding>", "</grounding>", "\\boxed{", "}", "{", "<answer>", "</answer>", "\n"]))
method_turns = st.one_of(turns, pr_calls, groundings, st.lists(method_pieces, max_size=8).map("".join))
frame_sizes = st.lists(st.tuples(st.integers(1, 600), st.integers(1, 600)), min_size=1, max_size=3)


@FUZZ
@given(turns)
def test_parser_never_raises_and_returns_one_of_three_kinds(text):
    turn = parse_turn(text)
    if turn.kind == "tool_call":
        assert len(turn.bbox) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in turn.bbox)
    elif turn.kind == "answer":
        assert turn.answer and turn.error is None
    else:
        assert turn.kind == "invalid" and turn.error and turn.bbox is None
        assert "<|" not in turn.error  # the error never carries the model's special tokens back


@FUZZ
@given(method_turns, st.sampled_from(COMPARED), frame_sizes)
def test_compared_readers_never_raise_and_name_an_image_shown(text, name, frames):
    turn = preset(name).read(text, frames)
    if turn.kind == "tool_call":
        assert 0 <= turn.source < len(frames)
        assert len(turn.bbox) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in turn.bbox)
    elif turn.kind == "answer":
        assert turn.answer and turn.answer == turn.answer.strip() and turn.error is None
    else:
        assert turn.kind in ("invalid", "unanswered") and turn.error and turn.bbox is None
        assert "<|" not in turn.error


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Sample:
    path = tmp_path_factory.mktemp("fuzz") / "image.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (300, 400, 3), dtype=np.uint8)).save(path)
    return Sample(id="fuzz", image_path=str(path), question="What is shown?", options=("a", "b"), answer="A",
                  boxes=((10.0, 10.0, 60.0, 60.0),), image_size=(400, 300))


@settings(FUZZ, max_examples=150)
@given(st.lists(turns, min_size=1, max_size=4), st.sampled_from(["pred", "gt", "noise", "direct"]))
def test_environment_and_codec_accept_any_turns(codec, sample, texts, mode):
    env = CropEnvironment(sample, DISPLAY, crop_max_tokens=16, max_turns=2, mode=mode)
    context = codec.start(initial_messages(sample, DISPLAY, tools=mode != "direct"), [env.global_image()])
    for text in texts:
        result = env.step(text)
        if result.done:
            break
        images = [result.image] if result.image is not None else []
        assert result.image is not None or result.text.startswith("Error: ")
        pads = context.token_ids.count(codec.image_pad_id)
        codec.append_user_turn(context, result.content(), images)
        expected = sum(codec.image_tokens(g) for g in context.image_grid_thw[-len(images):]) if images else 0
        assert context.token_ids.count(codec.image_pad_id) == pads + expected
    outcome = env.outcome()
    assert outcome.num_invalid_calls == sum(e["error"] is not None for e in env.events)


@settings(FUZZ, max_examples=60)
@given(st.lists(method_turns, min_size=1, max_size=4), st.sampled_from(COMPARED), st.sampled_from(["pred", "direct"]))
def test_environment_and_codec_accept_any_turns_with_a_compared_preset(codec, sample, texts, name, mode):
    chosen = preset(name)
    env = CropEnvironment(sample, DISPLAY, crop_max_tokens=16, max_turns=2, mode=mode, preset=chosen)
    context = codec.start(chosen.messages(sample, DISPLAY, mode != "direct"), [env.global_image()])
    shown = 1
    for text in texts:
        result = env.step(text)
        if result.done:
            break
        if chosen.failed_call_shows_view and mode != "direct":
            assert result.image is not None  # CoF answers every call with an image: the crop or the whole view
        images = [result.image] if result.image is not None else []
        codec.append_user_turn(context, result.content(), images)
        shown += len(images)
    assert len(context.images) == shown
    unanswered = sum(e["kind"] == "unanswered" for e in env.events)
    assert env.outcome().num_invalid_calls == sum(e["error"] is not None for e in env.events) - unanswered


# ---- JSONL files damaged any way: every reader refuses the first bad line by file and line, or reads it ----

GOOD_LINE = b'{"key": "k0", "correct": true, "id": "x", "reason": "r", "source": "s"}\n'
raw_lines = st.one_of(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n"),
                      json_values.map(lambda v: json.dumps(v).encode() + b"\n"),
                      st.sampled_from([b"\x00\x00\n", b"\xff\xfe{}\n", b"[" * 3000 + b"\n", b'{"a": NaN}\n', b"\n"]))


def _bad_line_numbers(lines: list[bytes]) -> set[int]:
    bad = set()
    for number, line in enumerate(lines, start=1):
        try:
            if line.strip(b" \t\r\n") and not isinstance(json.loads(line.decode("utf-8")), dict):
                bad.add(number)
        except (UnicodeDecodeError, ValueError, RecursionError):
            bad.add(number)
    return bad


@settings(FUZZ, max_examples=150)
@given(st.lists(raw_lines, max_size=5), st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")))
def test_jsonl_readers_refuse_a_damaged_line_by_file_and_line(lines, torn):
    import tempfile
    from pathlib import Path

    from lfpc.jsonl_log import JsonlError, read_json_lines
    from lfpc.judge import CachedJudge

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.jsonl"
        content = GOOD_LINE + b"".join(lines)
        bad = {n + 1 for n in _bad_line_numbers(lines)}
        for strict, read in ((True, lambda: read_json_lines(path)), (False, lambda: CachedJudge(lambda *a: 1, path))):
            path.write_bytes(content + torn)  # the torn tail (no newline) is never a line
            try:
                read()
            except JsonlError as err:
                number = int(str(err).removeprefix(f"{path}:").split(":")[0])
                assert number == min(bad) if strict else 1 < number <= len(lines) + 1  # the judge checks fields too
            else:
                assert not bad
            assert path.read_bytes() == content  # the torn tail is dropped, nothing else
