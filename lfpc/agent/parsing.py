"""Parse one assistant turn into a zoom-in tool call, a final answer, or an invalid turn with the reason."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from lfpc.agent.prompt import TOOL_NAME
from lfpc.boxes import Box

_THINK = re.compile(r"^\s*<think>(.*?)</think>", re.DOTALL)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class ParsedTurn:
    """One assistant turn: ``kind`` is ``tool_call`` (with ``bbox``), ``answer`` (with ``answer``) or
    ``invalid`` (with ``error`` saying what was wrong). ``bbox`` is in the frame of the displayed image."""

    kind: str
    bbox: Box | None = None
    label: str | None = None
    answer: str | None = None
    error: str | None = None


def _invalid(error: str) -> ParsedTurn:
    return ParsedTurn(kind="invalid", error=error)


_JSON_TYPES = ((bool, "boolean"), (dict, "object"), (list, "array"), (str, "string"), (int, "number"),
               (float, "number"), (type(None), "null"))


def _json_type(value: object) -> str:
    """JSON name of a decoded value's type, so an error can describe the value without repeating it."""
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def _loads(text: str, what: str) -> tuple[object, str | None]:
    """Decode JSON ``text``; return ``(value, None)``, or ``(None, error)`` for any input whatsoever."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        return None, f"{what} is not valid JSON ({err.msg} at position {err.pos})"
    except ValueError:  # an integer of more than sys.get_int_max_str_digits() digits
        return None, f"{what} is not valid JSON (a number has too many digits)"
    except RecursionError:
        return None, f"{what} is not valid JSON (nested too deeply)"


def _finite(value: object) -> float | None:
    """``value`` as a finite float; None for a non-number (booleans included), NaN, infinity or an int too large
    for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _parse_tool_call(body: str) -> ParsedTurn:
    """Validate the JSON inside ``<tool_call>``: name, arguments (object or JSON string), bbox_2d.

    Errors describe what is wrong without repeating the model's text (see :func:`parse_turn`).
    """
    call, error = _loads(body, "the <tool_call> body")
    if error:
        return _invalid(error)
    if not isinstance(call, dict):
        return _invalid(f"the <tool_call> body must be a JSON object with 'name' and 'arguments', "
                        f"got a JSON {_json_type(call)}")
    if call.get("name") != TOOL_NAME:
        found = "has no 'name'" if "name" not in call else "names another tool"
        return _invalid(f"the tool call {found}; the only tool is {TOOL_NAME!r}")
    arguments = call.get("arguments")
    if isinstance(arguments, str):
        arguments, error = _loads(arguments, "the tool call 'arguments' string")
        if error:
            return _invalid(error)
    if not isinstance(arguments, dict):
        return _invalid(f"the tool call needs 'arguments' as a JSON object, got a JSON {_json_type(arguments)}")
    if "bbox_2d" not in arguments:
        return _invalid("the tool call 'arguments' has no 'bbox_2d' (expected [x1, y1, x2, y2])")
    bbox = arguments["bbox_2d"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        count = f"{len(bbox)} values" if isinstance(bbox, list) else f"a JSON {_json_type(bbox)}"
        return _invalid(f"bbox_2d must be a list of 4 numbers [x1, y1, x2, y2], got {count}")
    numbers = [_finite(v) for v in bbox]
    if None in numbers:
        bad = numbers.index(None)
        kind = _json_type(bbox[bad])
        found = "NaN, infinite or too large" if kind == "number" else f"a JSON {kind}"
        return _invalid(f"bbox_2d must hold 4 finite numbers; value {bad + 1} is {found}")
    label = arguments.get("label")
    return ParsedTurn(kind="tool_call", bbox=tuple(numbers),  # type: ignore[arg-type]
                      label=label if isinstance(label, str) else None)


def parse_turn(text: str, answer_wins: bool = False) -> ParsedTurn:
    """Parse an assistant turn: an optional leading ``<think>...</think>``, then exactly one
    ``<tool_call>{"name": ..., "arguments": {"bbox_2d": [...]}}</tool_call>`` or one ``<answer>...</answer>``.

    Text outside the tags is tolerated. Any text whatsoever yields a result (never an exception); every problem
    yields ``kind == "invalid"`` with a specific error that never repeats the model's text, so an error
    observation cannot carry special tokens back into the context nor double a bad turn's length. With
    ``answer_wins`` (a compared method's rule, e.g. DeepEyes') a turn holding a non-empty ``<answer>...</answer>``
    is that answer (the first), whatever else it holds.
    """
    first = _ANSWER.search(text) if answer_wins else None
    if first and first.group(1).strip():
        return ParsedTurn(kind="answer", answer=first.group(1).strip())
    think = _THINK.match(text)
    rest = text[think.end():] if think else text
    if "<think>" in rest or "</think>" in rest:
        return _invalid("<think> must appear once, closed by </think>, before the tool call or answer")
    calls = _TOOL_CALL.findall(rest)
    answers = _ANSWER.findall(rest)
    if rest.count("<tool_call>") != len(calls) or rest.count("</tool_call>") != len(calls):
        return _invalid("unbalanced <tool_call> tags: each <tool_call> must be closed by </tool_call>")
    if rest.count("<answer>") != len(answers) or rest.count("</answer>") != len(answers):
        return _invalid("unbalanced <answer> tags: each <answer> must be closed by </answer>")
    if calls and answers:
        return _invalid("the turn has both a <tool_call> and an <answer>; give one of them per turn")
    if len(calls) > 1:
        return _invalid(f"the turn has {len(calls)} tool calls; make one <tool_call> per turn")
    if len(answers) > 1:
        return _invalid(f"the turn has {len(answers)} <answer> blocks; give exactly one")
    if calls:
        return _parse_tool_call(calls[0])
    if answers:
        answer = answers[0].strip()
        if not answer:
            return _invalid("the <answer></answer> block is empty")
        return ParsedTurn(kind="answer", answer=answer)
    return _invalid("the turn has neither a <tool_call> nor an <answer>")
