"""Every piece of text the agent shows the model: system prompt, question, tool responses (DeepEyes style).

Chat content items follow the transformers multimodal chat format: ``{"type": "text", "text": ...}`` and
``{"type": "image"}`` (the image itself travels separately, in order).
"""

from __future__ import annotations

import json
from typing import Sequence

from lfpc.boxes import Size
from lfpc.data.records import LETTERS, Sample
from lfpc.model.families import PIXELS, Coordinates

TOOL_NAME = "image_zoom_in_tool"

def tool_schema(coordinates: Coordinates = PIXELS) -> dict:
    """The zoom-in tool's function signature; ``coordinates``: the backbone's box convention
    (:mod:`lfpc.model.families`), which the ``bbox_2d`` description states."""
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": ("Zoom in on a region of the image: the region is cropped from the full-resolution "
                            "image and returned as a new, more detailed image."),
            "parameters": {
                "type": "object",
                "properties": {
                    "bbox_2d": {
                        "type": "array",
                        "items": {"type": "number"},
                        "minItems": 4,
                        "maxItems": 4,
                        "description": ("The region to zoom in on as [x1, y1, x2, y2]: its top-left (x1, y1) and "
                                        f"bottom-right (x2, y2) corners {coordinates.description}, "
                                        "x to the right, y downwards."),
                    },
                    "label": {"type": "string", "description": "The name of the object in the region (optional)."},
                },
                "required": ["bbox_2d"],
            },
        },
    }


TOOL_SCHEMA: dict = tool_schema()

_ANSWER_RULE = ("When you know the answer, reply with the letter of the correct option inside "
                "<answer></answer>, for example <answer>B</answer>.")

REMINDER = ("Think first, then either call image_zoom_in_tool again or give the final answer as "
            "<answer>LETTER</answer>.")
FINAL_REMINDER = "You have used all your zoom-ins. Give the final answer now as <answer>LETTER</answer>."
DIRECT_REMINDER = "Answer without zooming in: give the final answer as <answer>LETTER</answer>."

# Free-form questions (no options): the same texts, asking for a short answer instead of a letter.
_FREE_ANSWER_RULE = ("When you know the answer, reply with a short final answer (a word, a phrase or a number) "
                     "inside <answer></answer>, for example <answer>red</answer>.")
_FREE = {_ANSWER_RULE: _FREE_ANSWER_RULE,
         REMINDER: REMINDER.replace("<answer>LETTER</answer>", "<answer>ANSWER</answer>"),
         FINAL_REMINDER: FINAL_REMINDER.replace("<answer>LETTER</answer>", "<answer>ANSWER</answer>"),
         DIRECT_REMINDER: DIRECT_REMINDER.replace("<answer>LETTER</answer>", "<answer>ANSWER</answer>")}


def _for(free_form: bool, text: str) -> str:
    """``text``, or its free-form counterpart."""
    return _FREE[text] if free_form else text


def system_prompt(tools: bool = True, free_form: bool = False, coordinates: Coordinates = PIXELS) -> str:
    """System prompt; with ``tools`` it declares the zoom-in tool in Qwen function-calling style, its boxes in
    ``coordinates``. ``free_form`` asks for a short answer instead of an option letter."""
    rule = _for(free_form, _ANSWER_RULE)
    if not tools:
        return f"You are a helpful assistant.\n\n{rule}"
    signature = json.dumps(tool_schema(coordinates))
    example = '{"name": "%s", "arguments": {"bbox_2d": [x1, y1, x2, y2]}}' % TOOL_NAME
    return (
        "You are a helpful assistant.\n\n"
        "# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{signature}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\n'
        f"Call at most one function per turn, for example:\n<tool_call>{example}</tool_call>\n"
        "The zoomed-in region comes back as a new image. "
        f"{rule}"
    )


def question_text(sample: Sample, display_size: Size, tools: bool = True) -> str:
    """User text: the question, the lettered options (if any), the displayed image size and the instruction."""
    what = "the letter of the correct option" if sample.options else "a short final answer"
    if tools:
        instruction = ("Think first inside <think></think>, call image_zoom_in_tool if you need a closer look, "
                       f"then give {what} inside <answer></answer>.")
    else:
        instruction = (f"Answer directly without zooming in: think inside <think></think>, then give {what} "
                       "inside <answer></answer>.")
    options = "".join(f"\n{LETTERS[i]}. {option}" for i, option in enumerate(sample.options))
    width, height = display_size
    return (f"{sample.question}\n" + (f"Options:{options}\n" if sample.options else "")
            + f"The image is {width} x {height} pixels.\n{instruction}")


def initial_messages(sample: Sample, display_size: Size, tools: bool = True,
                     coordinates: Coordinates = PIXELS) -> list[dict]:
    """Opening chat: system prompt (boxes in ``coordinates``), then the user turn with the global image and the
    question."""
    system = system_prompt(tools, free_form=not sample.options, coordinates=coordinates)
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": [{"type": "image"},
                                     {"type": "text", "text": question_text(sample, display_size, tools)}]},
    ]


def observation_text(error: str | None = None, calls_left: int = 1, tools: bool = True,
                     free_form: bool = False) -> str:
    """Text of a tool response: the error (if any), then a reminder to go on (to answer now when no calls
    are left, or when ``tools`` is off); ``free_form`` asks for a short answer instead of a letter."""
    reminder = _for(free_form, DIRECT_REMINDER if not tools else REMINDER if calls_left > 0 else FINAL_REMINDER)
    return f"Error: {error}\n{reminder}" if error else reminder


def tool_response_content(image_present: bool, text: str) -> list[dict]:
    """Content of the user turn answering a tool call: ``<tool_response>`` [image] text ``</tool_response>``.

    Without an image (an error observation) ``text`` carries the error message.
    """
    content: list[dict] = [{"type": "text", "text": "<tool_response>"}]
    if image_present:
        content.append({"type": "image"})
    content.append({"type": "text", "text": f"{text}</tool_response>"})
    return content


def tool_call_text(bbox: Sequence[float]) -> str:
    """The assistant text of one well-formed zoom-in call on ``bbox`` (in the backbone's coordinates of the displayed
    image: pixels for Qwen2.5-VL)."""
    return f"<tool_call>{json.dumps({'name': TOOL_NAME, 'arguments': {'bbox_2d': list(bbox)}})}</tool_call>"
