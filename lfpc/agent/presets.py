"""Prompt presets: how a model is prompted and how its turns are read, ours or a compared method's own.

The paper evaluates each compared method with its own prompt and answer format (Sec. 5.1, Tables 1, 2, 6), not
ours. A preset gives the opening chat, the text and layout of a tool response, how a turn is read (tool-call format,
coordinate convention, answer format, which turn ends the episode) and the margin its tool adds around a box.
``lfpc`` is this project's prompt (:mod:`lfpc.agent.prompt`) with its strict rule (a turn holding both a tool call
and an ``<answer>`` is invalid). ``deepeyes`` is DeepEyes' evaluation prompt (its ``eval/eval_hrbench.py`` and
``eval/eval_vstar.py``: system prompt, ``Question: ... Options: ...`` user turn, the same instruction inside every
tool response) with its rule (the episode ends at the first ``<answer>``). ``deepeyes_training`` is the protocol of
DeepEyes' RL framework, which the paper trains in (Table 12's keys are its agent keys): the same prompt, its training
environment's rules (:func:`lfpc.agent.parsing.parse_deepeyes_training_turn`) and its turn cap counting the answer's
generation; ``conf/protocol/deepeyes.yaml`` trains with it. ``cof_sft``, ``pixel_reasoner`` and
``mini_o3``: :mod:`lfpc.agent.compared` (sources cited there). A model preset (``conf/model/<name>.yaml``) picks
one with ``prompt:`` and sets the method's turn cap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

from lfpc.agent import prompt
from lfpc.agent.compared import cof, mini_o3, pixel_reasoner
from lfpc.agent.parsing import ParsedTurn, parse_deepeyes_training_turn, parse_turn
from lfpc.boxes import Box, Size
from lfpc.data.records import LETTERS, Sample
from lfpc.model.families import DEFAULT, PIXELS, Backbone, Coordinates

Messages = Callable[[Sample, Size, bool], list[dict]]  # (sample, display size, tools) -> opening chat
Observation = Callable[["str | None", int, bool, bool], str]  # (error, calls left, tools, free form) -> text
Reader = Callable[[str, Sequence[Size]], ParsedTurn]  # (turn text, sizes of the images shown so far) -> parsed turn
Layout = Callable[[str, "Size | None", int], list[dict]]  # (observation text, shown image size, turn) -> content
Widen = Callable[[Box, Size], Box]  # (box, size of its image) -> the region the tool crops


def read_strict(text: str, frames: Sequence[Size]) -> ParsedTurn:
    """Our rule (:func:`lfpc.agent.parsing.parse_turn`): one tool call or one answer per turn, pixel boxes."""
    return parse_turn(text)


def read_answer_wins(text: str, frames: Sequence[Size]) -> ParsedTurn:
    """DeepEyes' rule: a turn holding a non-empty ``<answer>`` is that answer, whatever else it holds."""
    return parse_turn(text, answer_wins=True)


def read_deepeyes_training(text: str, frames: Sequence[Size]) -> ParsedTurn:
    """DeepEyes' training rule (:func:`lfpc.agent.parsing.parse_deepeyes_training_turn`): the last answer wins, a
    turn with neither a call nor an answer ends the episode."""
    return parse_deepeyes_training_turn(text)


def tool_response_layout(text: str, image_size: Size | None, turn: int) -> list[dict]:
    """``<tool_response>`` [the crop] ``text</tool_response>`` (:func:`lfpc.agent.prompt.tool_response_content`)."""
    return prompt.tool_response_content(image_size is not None, text)


def exact_box(box: Box, size: Size) -> Box:
    """The tool crops the box as given."""
    return box


@dataclass(frozen=True)
class Preset:
    """A prompt preset: the opening ``messages``; the tool-response ``observation`` text and its ``layout`` (the
    user turn's content); ``read``, how a turn is read; ``widen``, the region the tool crops around a box (in the
    frame of the image the box names); ``failed_call_shows_view``: a failed tool call is answered with the whole
    displayed image again (CoF's rule) instead of an error alone; ``answer_turn_counted``: the turn cap counts every
    generation, the answer's included (DeepEyes' ``agent.max_turns``), so ``max_turns`` allows one tool call less."""

    name: str
    messages: Messages
    observation: Observation
    read: Reader = read_strict
    layout: Layout = tool_response_layout
    widen: Widen = exact_box
    failed_call_shows_view: bool = False
    answer_turn_counted: bool = False


DEEPEYES_SYSTEM = """You are a helpful assistant.

# Tools
You may call one or more functions to assist with the user query.
You are provided with function signatures within <tools></tools> XML tags:
<tools>
{"type":"function","function":{"name":"image_zoom_in_tool","description":"Zoom in on a specific region of an image by cropping it based on a bounding box (bbox) and an optional object label.","parameters":{"type":"object","properties":{"bbox_2d":{"type":"array","items":{"type":"number"},"minItems":4,"maxItems":4,"description":"The bounding box of the region to zoom in, as [x1, y1, x2, y2], where (x1, y1) is the top-left corner and (x2, y2) is the bottom-right corner."},"label":{"type":"string","description":"The name or label of the object in the specified bounding box (optional)."}},"required":["bbox"]}}}
</tools>

# How to call a tool
Return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>

**Example**:  
<tool_call>  
{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 20, 100, 200], "label": "the apple on the desk"}}  
</tool_call>"""  # noqa: E501 (DeepEyes' text, verbatim, trailing spaces included)
DEEPEYES_INSTRUCTION = ("\nThink first, call **image_zoom_in_tool** if needed, then answer. Format strictly as:  "
                        "<think>...</think>  <tool_call>...</tool_call> (if tools needed)  <answer>...</answer> ")
# Without the tool (crop mode direct, which DeepEyes' evaluation lacks): its instruction with the tool left out
DEEPEYES_DIRECT = "\nThink first, then answer. Format strictly as:  <think>...</think>  <answer>...</answer> "


def deepeyes_messages(sample: Sample, display_size: Size, tools: bool = True) -> list[dict]:
    """DeepEyes' opening chat: its system prompt, the image, then ``Question: ...`` with the lettered options."""
    options = "\n" + "".join(f"{LETTERS[i]}. {option}\n" for i, option in enumerate(sample.options))
    text = f"Question: {sample.question}\nOptions: {options}\n" + (DEEPEYES_INSTRUCTION if tools else DEEPEYES_DIRECT)
    system = DEEPEYES_SYSTEM if tools else "You are a helpful assistant."
    return [{"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def deepeyes_observation(error: str | None = None, calls_left: int = 1, tools: bool = True,
                         free_form: bool = False) -> str:
    """DeepEyes' tool-response text: its instruction again (after the error, when the call failed); it asks for
    no particular answer form, so ``free_form`` changes nothing."""
    instruction = DEEPEYES_INSTRUCTION if tools else DEEPEYES_DIRECT
    return f"Error: {error}{instruction}" if error else instruction


def deepeyes_training_observation(error: str | None = None, calls_left: int = 1, tools: bool = True,
                                  free_form: bool = False) -> str:
    """DeepEyes' training tool response (``VisualToolBoxV2``): its instruction (``USER_PROMPT_V2``, the text of
    :data:`DEEPEYES_INSTRUCTION`) after a crop, ``Error: ...`` alone after a failed call."""
    if error:
        return f"Error: {error}"
    return DEEPEYES_INSTRUCTION if tools else DEEPEYES_DIRECT


PRESETS: dict[str, Preset] = {
    "lfpc": Preset("lfpc", prompt.initial_messages, prompt.observation_text),
    "deepeyes": Preset("deepeyes", deepeyes_messages, deepeyes_observation, read=read_answer_wins),
    "deepeyes_training": Preset("deepeyes_training", deepeyes_messages, deepeyes_training_observation,
                                read=read_deepeyes_training, answer_turn_counted=True),
    "cof_sft": Preset("cof_sft", cof.messages, cof.observation, read=cof.read, layout=cof.layout, widen=cof.widen,
                      failed_call_shows_view=True),
    "pixel_reasoner": Preset("pixel_reasoner", pixel_reasoner.messages, pixel_reasoner.observation,
                             read=pixel_reasoner.read, layout=pixel_reasoner.layout, widen=pixel_reasoner.widen),
    "mini_o3": Preset("mini_o3", mini_o3.messages, mini_o3.observation, read=mini_o3.read, layout=mini_o3.layout),
}


def lfpc_preset(coordinates: Coordinates) -> Preset:
    """Our preset for a backbone whose boxes are in ``coordinates``: the prompt states the convention, and each box
    read is mapped to pixels of the image it names, so the crop tool maps it to the original like a pixel box."""

    def messages(sample: Sample, display_size: Size, tools: bool = True) -> list[dict]:
        return prompt.initial_messages(sample, display_size, tools, coordinates)

    def read(text: str, frames: Sequence[Size]) -> ParsedTurn:
        parsed = parse_turn(text)
        if parsed.bbox is None:
            return parsed
        return replace(parsed, bbox=coordinates.to_pixels(parsed.bbox, frames[parsed.source]))

    return Preset("lfpc", messages, prompt.observation_text, read=read)


def preset(name: str, backbone: Backbone = DEFAULT) -> Preset:
    """The preset called ``name`` (a clear error naming the known ones otherwise). Ours (``lfpc``) follows the
    ``backbone``'s box convention; a compared method's keeps its own."""
    if name not in PRESETS:
        raise ValueError(f"unknown prompt preset {name!r}; choose from {sorted(PRESETS)}")
    if name == "lfpc" and backbone.coordinates != PIXELS:
        return lfpc_preset(backbone.coordinates)
    return PRESETS[name]
