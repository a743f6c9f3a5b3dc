"""Pixel Reasoner as its own evaluation (``curiosity_driven_rl``, ``sys=vcot``) prompts and reads it.

Source: github.com/TIGER-AI-Lab/Pixel-Reasoner at commit a3a6c3a557a87d89ffaec825bd8c8d09b719fb97,
``curiosity_driven_rl/openrlhf/datasets/prompts_dataset.py`` (the ``vcot`` and ``notool`` triggers appended to the
question), ``curiosity_driven_rl/openrlhf/trainer/ppo_utils/experience_maker.py`` (the ``crop_image_normalized``
and ``select_frames`` tools, ``get_required_messages``, ``parse_last_tool``, ``execute_tool``,
``crop_image_normalized``, ``_generate_vllm``: greedy at evaluation, the multi-turn loop and its tool-response
texts, ``handle_boxed``) and ``README.md`` / ``curiosity_driven_rl/scripts/example_eval.sh`` (``sys=vcot``). The
tools reach the system prompt through Qwen-Agent's ``NousFnCallPrompt`` (github.com/QwenLM/Qwen-Agent,
``qwen_agent/llm/fncall_prompts/nous_fncall_prompt.py``, ``FN_CALL_TEMPLATE``, the same text at commits
11ee6aa73177b66b8f38e5d9381df4f72cc027fb and 31a4d36d123688581a9e9744427272b33ce940e0): :data:`SYSTEM`. Its
issue #23 confirms normalized coordinates and the 0.1 padding. What that code does, and so this preset:

* system :data:`SYSTEM`; the user turn is the image, then the question + ``"\\n\\n"`` + :data:`GUIDELINES` (which
  itself starts with two line breaks). The question text of its V* evaluation data is not in the repository; the
  multiple-choice layout of its own queries (``experience_maker.py``'s sample query: ``choices:`` then ``A: ...``
  lines) is used.
* A turn ending with ``</tool_call>`` is a tool call: the last ``<tool_call>`` holds ``{"name":
  "crop_image_normalized", "arguments": {"bbox_2d": [x1, y1, x2, y2], "target_image": k}}``. ``target_image`` 1 is
  the displayed image, k the (k-1)-th crop returned (Python indexing: 0 is the last image). The box is normalized
  to [0, 1] when all four values are below 1, else in pixels of that image; it is padded by 0.1 of the image's
  width and height on each side and clipped. A failed call answers ``\\nExecution error:\\n<error>\\n``; a crop
  answers ``\\nHere is the cropped image (Image Size: WxH):`` then the crop.
* Any other turn ends the episode; the answer is the last ``\\boxed{...}`` of that turn; none is scored wrong.
* A 5th tool call ends the episode (``num_toolcalls > 3`` before it): the project's ``max_turns: 4``
  (``conf/model/pixel_reasoner.yaml``).

Not reproduced: its check that a crop is over 28 px on each side (crops here are taken from the original image and
grown to 28 px, :func:`lfpc.agent.env.pixel_region`); its score reads the last ``\\boxed`` anywhere in the
trajectory, here the final turn's.
"""

from __future__ import annotations

from typing import Sequence

from lfpc.agent.compared.common import (
    IMAGE_ITEM,
    answered,
    from_relative,
    last_boxed,
    padded,
    system_turn,
    text_item,
    user_turn,
)
from lfpc.agent.parsing import ParsedTurn, box_values, call_arguments, invalid
from lfpc.boxes import Box, Size
from lfpc.data.records import LETTERS, Sample

TOOL_NAME = "crop_image_normalized"
SYSTEM = (
    'You are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n'
    'You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n'
    '{"type": "function", "function": {"name": "crop_image_normalized", "description": "Zoom in on the image based '
    'on the bounding box coordinates. It is useful when the object or text in the image is too small to be seen.", '
    '"parameters": {"type": "object", "properties": {"bbox_2d": {"type": "array", "description": "coordinates for '
    'bounding box of the area you want to zoom in. Values should be within [0.0,1.0].", "items": {"type": "number"}}, '
    '"target_image": {"type": "number", "description": "The index of the image to crop. Index from 1 to the number '
    'of images. Choose 1 to operate on original image."}}, "required": ["bbox_2d", "target_image"]}}}\n'
    '{"type": "function", "function": {"name": "select_frames", "description": "Select frames from a video.", '
    '"parameters": {"type": "object", "properties": {"target_frames": {"type": "array", "description": "List of '
    'frame indices to select from the video (no more than 8 frames in total).", "items": {"type": "integer", '
    '"description": "Frame index from 1 to 16."}}}, "required": ["target_frames"]}}}\n</tools>\n\n'
    'For each function call, return a json object with function name and arguments within <tool_call></tool_call> '
    'XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
GUIDELINES = ("\n\nGuidelines: Understand the given visual information and the user query. Determine if it is "
              "beneficial to employ the given visual operations (tools). For a video, we can look closer by "
              "`select_frames`. For an image, we can look closer by `crop_image`. Reason with the visual information "
              "step by step, and put your final answer within \\boxed{}.")
NO_TOOL = "Please think step by step, and put your final answer within \\boxed{}."  # its ``sys=notool``
PADDING = 0.1  # crop_image_normalized's padding, a fraction of the image's width / height per side


def question(sample: Sample) -> str:
    """The question, then ``choices:`` and one ``A: ...`` line per option (Pixel Reasoner's query layout)."""
    if not sample.options:
        return sample.question
    return sample.question + "\nchoices:" + "".join(f"\n{LETTERS[i]}: {o}" for i, o in enumerate(sample.options))


def messages(sample: Sample, display_size: Size, tools: bool = True) -> list[dict]:
    """Pixel Reasoner's opening chat: the system prompt with its tools, then the image and the question with the
    ``vcot`` trigger (without tools: its ``notool`` trigger and no tools)."""
    system = SYSTEM if tools else "You are a helpful assistant."
    trigger = "\n\n" + (GUIDELINES if tools else NO_TOOL)
    return [system_turn(system), user_turn(IMAGE_ITEM, text_item(question(sample) + trigger))]


def observation(error: str | None = None, calls_left: int = 1, tools: bool = True, free_form: bool = False) -> str:
    """The text of a failed call (none after a crop: :func:`layout` writes it)."""
    return f"\nExecution error:\n{error}\n" if error else ""


def layout(text: str, image_size: Size | None, turn: int) -> list[dict]:
    """A tool-response turn: ``Here is the cropped image (Image Size: WxH):`` then the crop, or the error text."""
    if image_size is None:
        return [text_item(text)]
    return [text_item(f"\nHere is the cropped image (Image Size: {image_size[0]}x{image_size[1]}):"), IMAGE_ITEM]


def widen(box: Box, size: Size) -> Box:
    """The crop region: the box padded by :data:`PADDING` of the image per side, clipped to the image."""
    return padded(box, size, PADDING)


def read(text: str, frames: Sequence[Size]) -> ParsedTurn:
    """Read one turn by Pixel Reasoner's rules (module docstring); ``frames``: the sizes of the images shown so far
    (the displayed image, then each crop)."""
    if not text.endswith("</tool_call>"):
        return answered(last_boxed(text), "the final turn has no \\boxed{...} (Pixel Reasoner's rule): no answer")
    arguments, error = call_arguments(text.split("<tool_call>")[-1].split("</tool_call>")[0], tool=TOOL_NAME,
                                      string_arguments=False)
    if arguments is None:
        return invalid(error)  # type: ignore[arg-type]
    source, error = _target(arguments.get("target_image"), len(frames))
    if source is None:
        return invalid(error)  # type: ignore[arg-type]
    box, error = box_values(arguments)
    if box is None:
        return invalid(error)  # type: ignore[arg-type]
    if all(value < 1 for value in box):
        box = from_relative(box, frames[source])
    return ParsedTurn(kind="tool_call", bbox=box, source=source)


def _target(value: object, count: int) -> tuple[int | None, str | None]:
    """The frame index of ``target_image`` (1-based, Python indexing below 1) among ``count`` images, or the error."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None, "the tool call needs 'target_image' as an integer (1: the original image)"
    if not -count <= value - 1 < count:
        return None, f"Incorrect `target_image` argument: you can only pick an image within [1,{count}]"
    return (value - 1) % count, None
