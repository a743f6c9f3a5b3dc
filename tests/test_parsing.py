"""Parsing of assistant turns into tool calls, answers and specific errors."""

import json

import pytest

from lfpc.agent.parsing import parse_turn
from lfpc.agent.prompt import TOOL_NAME


def call(arguments, name=TOOL_NAME) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def test_tool_call_with_think():
    turn = parse_turn("<think>the sign is small</think>\n" + call({"bbox_2d": [10, 20.5, 30, 40], "label": "sign"}))
    assert turn.kind == "tool_call"
    assert turn.bbox == (10.0, 20.5, 30.0, 40.0)
    assert turn.label == "sign"
    assert turn.error is None and turn.answer is None


def test_tool_call_with_arguments_as_json_string():
    text = '<tool_call>{"name": "image_zoom_in_tool", "arguments": "{\\"bbox_2d\\": [1, 2, 3, 4]}"}</tool_call>'
    turn = parse_turn(text)
    assert turn.kind == "tool_call" and turn.bbox == (1.0, 2.0, 3.0, 4.0)


def test_answer_with_and_without_think():
    assert parse_turn("<think>red</think><answer> B </answer>").answer == "B"
    turn = parse_turn("<answer>A. the red car</answer>")
    assert turn.kind == "answer" and turn.answer == "A. the red car" and turn.bbox is None


def test_text_outside_tags_is_tolerated():
    assert parse_turn("Let me look closer.\n" + call({"bbox_2d": [0, 0, 5, 5]})).kind == "tool_call"


@pytest.mark.parametrize("text, message", [
    ("<tool_call>{name: 1}</tool_call>", "not valid JSON"),
    ("<tool_call>[1, 2]</tool_call>", "must be a JSON object with 'name' and 'arguments', got a JSON array"),
    (call({"bbox_2d": [1, 2, 3, 4]}, name="crop"), "names another tool; the only tool is 'image_zoom_in_tool'"),
    ('<tool_call>{"name": "image_zoom_in_tool", "arguments": "{bad"}</tool_call>',
     "'arguments' string is not valid JSON"),
    ('<tool_call>{"name": "image_zoom_in_tool"}</tool_call>', "needs 'arguments' as a JSON object, got a JSON null"),
    ('<tool_call>{"arguments": {}}</tool_call>', "has no 'name'"),
    (call({"box": [1, 2, 3, 4]}), "has no 'bbox_2d'"),
    (call({"bbox_2d": [1, 2, 3]}), "list of 4 numbers [x1, y1, x2, y2], got 3 values"),
    (call({"bbox_2d": [1, 2, 3, 4, 5]}), "got 5 values"),
    (call({"bbox_2d": "1, 2, 3, 4"}), "got a JSON string"),
    (call({"bbox_2d": [1, "2", 3, 4]}), "4 finite numbers; value 2 is a JSON string"),
    (call({"bbox_2d": [1, True, 3, 4]}), "value 2 is a JSON boolean"),
    ('<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, NaN, 3, 4]}}</tool_call>',
     "value 2 is NaN, infinite or too large"),
    (call({"bbox_2d": [1, 2, 3, 4]}) + "<answer>A</answer>", "both a <tool_call> and an <answer>"),
    ("I think it is red.", "neither a <tool_call> nor an <answer>"),
    (call({"bbox_2d": [1, 2, 3, 4]}) * 2, "has 2 tool calls"),
    ("<answer>A</answer><answer>B</answer>", "2 <answer> blocks"),
    ("<answer>  </answer>", "block is empty"),
    ('<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 3, 4]}}', "unbalanced <tool_call>"),
    ("<answer>A", "unbalanced <answer>"),
    ("<think>hmm <answer>A</answer>", "<think> must appear once"),
])
def test_each_error_is_specific(text, message):
    turn = parse_turn(text)
    assert turn.kind == "invalid"
    assert message in turn.error
    assert turn.bbox is None and turn.answer is None


def test_tags_inside_think_are_ignored():
    turn = parse_turn("<think>maybe <answer>A</answer> or zoom</think>" + call({"bbox_2d": [0, 0, 9, 9]}))
    assert turn.kind == "tool_call"


@pytest.mark.parametrize("text, message", [
    (call({"bbox_2d": [0, 0, int("1" + "0" * 309), 5]}), "value 3 is NaN, infinite or too large"),  # OverflowError
    ('<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 1' + "0" * 4300 + ', 5]}}'
     '</tool_call>', "not valid JSON (a number has too many digits)"),  # ValueError: int max str digits
    ("<tool_call>" + "[" * 100_000 + "]" * 100_000 + "</tool_call>", "not valid JSON (nested too deeply)"),
    ('<tool_call>{"name": "image_zoom_in_tool", "arguments": "' + "[" * 100_000 + '"}</tool_call>',
     "'arguments' string is not valid JSON (nested too deeply)"),
])
def test_pathological_json_is_an_invalid_turn_not_an_exception(text, message):
    turn = parse_turn(text)
    assert turn.kind == "invalid" and message in turn.error


@pytest.mark.parametrize("text", [
    '<tool_call>{"name": "<|image_pad|>"}</tool_call>',
    '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": "<|vision_start|>"}}</tool_call>',
    '<tool_call>{"name": "image_zoom_in_tool", "arguments": "<|im_end|>"}</tool_call>',
    "<tool_call><|image_pad|>" + "x" * 10_000 + "</tool_call>",
])
def test_errors_never_repeat_the_model_text(text):
    error = parse_turn(text).error
    assert "<|" not in error and "x" * 20 not in error and len(error) < 200


def test_answer_wins_reads_a_turn_with_an_answer_as_that_answer():
    # DeepEyes' rule (its evaluation stops at the first </answer>), ours: one of them per turn
    text = "<think>t</think><answer> C </answer>" + call({"bbox_2d": [1, 2, 3, 4]}) + "<answer>D</answer>"
    assert parse_turn(text).kind == "invalid"
    assert parse_turn(text, answer_wins=True).answer == "C"
    assert parse_turn("<answer> </answer>", answer_wins=True).kind == "invalid"    # empty: the strict rules apply
    assert parse_turn(call({"bbox_2d": [1, 2, 3, 4]}), answer_wins=True).kind == "tool_call"
