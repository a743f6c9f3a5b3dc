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
    """One assistant turn: ``kind`` is ``tool_call`` (with ``bbox``), ``answer`` (with ``answer``), ``invalid``
    (with ``error`` saying what was wrong) or ``unanswered`` (a final turn without a readable answer: a compared
    method's loop ends at any turn without a tool call; ``error`` says why). ``bbox`` is in pixels of the image the
    call names: ``source`` 0 is the displayed image, ``k`` the k-th crop returned so far."""

    kind: str
    bbox: Box | None = None
    label: str | None = None
    answer: str | None = None
    error: str | None = None
    source: int = 0


def invalid(error: str) -> ParsedTurn:
    """An invalid turn with ``error``."""
    return ParsedTurn(kind="invalid", error=error)


_JSON_TYPES = ((bool, "boolean"), (dict, "object"), (list, "array"), (str, "string"), (int, "number"),
               (float, "number"), (type(None), "null"))


def json_type(value: object) -> str:
    """JSON name of a decoded value's type, so an error can describe the value without repeating it."""
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def load_json(text: str, what: str) -> tuple[object, str | None]:
    """Decode JSON ``text``; return ``(value, None)``, or ``(None, error)`` for any input whatsoever."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        return None, f"{what} is not valid JSON ({err.msg} at position {err.pos})"
    except ValueError:  # an integer of more than sys.get_int_max_str_digits() digits
        return None, f"{what} is not valid JSON (a number has too many digits)"
    except RecursionError:
        return None, f"{what} is not valid JSON (nested too deeply)"


def finite_number(value: object) -> float | None:
    """``value`` as a finite float; None for a non-number (booleans included), NaN, infinity or an int too large
    for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def call_arguments(body: str, tool: str | None = TOOL_NAME,
                   string_arguments: bool = True) -> tuple[dict | None, str | None]:
    """The ``arguments`` object of the JSON tool call ``body`` (``{"name": ..., "arguments": {...}}``), or the
    error. ``tool``: the only name accepted (None: any name, unchecked); ``string_arguments``: ``arguments`` may
    also be a JSON string holding the object. Errors never repeat the model's text (see :func:`parse_turn`)."""
    call, error = load_json(body, "the <tool_call> body")
    if error:
        return None, error
    if not isinstance(call, dict):
        return None, ("the <tool_call> body must be a JSON object with 'name' and 'arguments', "
                      f"got a JSON {json_type(call)}")
    if tool is not None and call.get("name") != tool:
        found = "has no 'name'" if "name" not in call else "names another tool"
        return None, f"the tool call {found}; the only tool is {tool!r}"
    arguments = call.get("arguments")
    if isinstance(arguments, str) and string_arguments:
        arguments, error = load_json(arguments, "the tool call 'arguments' string")
        if error:
            return None, error
    if not isinstance(arguments, dict):
        return None, f"the tool call needs 'arguments' as a JSON object, got a JSON {json_type(arguments)}"
    return arguments, None


def box_values(arguments: dict, key: str = "bbox_2d") -> tuple[Box | None, str | None]:
    """``arguments[key]`` as 4 finite floats ``(x1, y1, x2, y2)``, or the error."""
    if key not in arguments:
        return None, f"the tool call 'arguments' has no {key!r} (expected [x1, y1, x2, y2])"
    bbox = arguments[key]
    if not isinstance(bbox, list) or len(bbox) != 4:
        count = f"{len(bbox)} values" if isinstance(bbox, list) else f"a JSON {json_type(bbox)}"
        return None, f"{key} must be a list of 4 numbers [x1, y1, x2, y2], got {count}"
    numbers = [finite_number(v) for v in bbox]
    if None in numbers:
        bad = numbers.index(None)
        kind = json_type(bbox[bad])
        found = "NaN, infinite or too large" if kind == "number" else f"a JSON {kind}"
        return None, f"{key} must hold 4 finite numbers; value {bad + 1} is {found}"
    return tuple(numbers), None  # type: ignore[return-value]


def _parse_tool_call(body: str) -> ParsedTurn:
    """Validate the JSON inside ``<tool_call>``: name, arguments (object or JSON string), bbox_2d."""
    arguments, error = call_arguments(body)
    if arguments is None:
        return invalid(error)  # type: ignore[arg-type]
    bbox, error = box_values(arguments)
    if bbox is None:
        return invalid(error)  # type: ignore[arg-type]
    label = arguments.get("label")
    return ParsedTurn(kind="tool_call", bbox=bbox, label=label if isinstance(label, str) else None)


def parse_deepeyes_training_turn(text: str) -> ParsedTurn:
    """A turn read as DeepEyes' training environment reads it (``VisualToolBoxV2.execute``, Visual-Agent/DeepEyes
    ``verl/workers/agent/envs/mm_process_engine/visual_toolbox_v2.py``): a non-empty last ``<answer>...</answer>``
    is the answer, whatever else the turn holds; else the last ``<tool_call>...</tool_call>`` is the call; a turn
    with neither ends the episode unanswered."""
    answers = [a.strip() for a in _ANSWER.findall(text)]
    if answers and answers[-1]:
        return ParsedTurn(kind="answer", answer=answers[-1])
    calls = _TOOL_CALL.findall(text)
    if calls:
        return _parse_tool_call(calls[-1])
    return ParsedTurn(kind="unanswered", error="the turn has neither a <tool_call> nor an <answer>")


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
        return invalid("<think> must appear once, closed by </think>, before the tool call or answer")
    calls = _TOOL_CALL.findall(rest)
    answers = _ANSWER.findall(rest)
    if rest.count("<tool_call>") != len(calls) or rest.count("</tool_call>") != len(calls):
        return invalid("unbalanced <tool_call> tags: each <tool_call> must be closed by </tool_call>")
    if rest.count("<answer>") != len(answers) or rest.count("</answer>") != len(answers):
        return invalid("unbalanced <answer> tags: each <answer> must be closed by </answer>")
    if calls and answers:
        return invalid("the turn has both a <tool_call> and an <answer>; give one of them per turn")
    if len(calls) > 1:
        return invalid(f"the turn has {len(calls)} tool calls; make one <tool_call> per turn")
    if len(answers) > 1:
        return invalid(f"the turn has {len(answers)} <answer> blocks; give exactly one")
    if calls:
        return _parse_tool_call(calls[0])
    if answers:
        answer = answers[0].strip()
        if not answer:
            return invalid("the <answer></answer> block is empty")
        return ParsedTurn(kind="answer", answer=answer)
    return invalid("the turn has neither a <tool_call> nor an <answer>")
