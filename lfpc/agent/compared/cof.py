"""CoF-sft (Chain-of-Focus, supervised stage) as its own V* evaluation prompts and reads it.

Source: github.com/xtong-zhang/Chain-of-Focus at commit 431ff0dd703f83d8a624ec1ba1d2ef6a834b78bc,
``eval/vstar/vllm_inference.py`` (``SYSTEM_PROMPT``, ``USER_PROMPT``, ``run_inference_loop``,
``find_absolute_bboxes``, ``check_absolute_bbox_format``, ``do_crop``), ``eval/vstar/judge_result.py``
(``extract_answer`` and the ``\\boxed`` rule) and ``slurm_jobs/eval/inference_vstar.sh`` (``--enlarge_factor 1.5``).
What that code does, and so this preset:

* system prompt :data:`SYSTEM` (the ``image_zoom_in_tool`` declared in Qwen style); the user turn is the image, then
  ``Question: `` + V*'s question text (``test_questions.jsonl``'s ``text``: options as ``(A) ...`` lines) +
  :data:`INSTRUCTION`; every tool response is the crop, then :data:`INSTRUCTION` again; greedy decoding.
* A turn holding ``<tool_call>`` anywhere is a tool call (an ``<answer>`` beside it is ignored): the first
  ``<tool_call>...</tool_call>`` holds ``{"name": ..., "arguments": {"bbox_2d": [x1, y1, x2, y2]}}`` in absolute
  pixels of the image shown (the name is not checked). The box must lie inside the image (``0 <= x1 < x2 <= W``,
  ``0 <= y1 < y2 <= H``), nothing is clipped; it is then enlarged 1.5 times about its centre (clipped to the image).
  Any failure (no closing tag, bad JSON, a box outside the image) shows the whole displayed image again, with no
  error text.
* Any other turn ends the episode; the answer is the first ``<answer>...</answer>`` on one line (its regex has no
  DOTALL), read inside the first ``\\boxed{...}`` when the turn has one; none is scored wrong.
* At most 6 generations, each may call the tool (``max_iterations = 6``): a 6th call leaves the episode without an
  answer, which is the project's ``max_turns: 5`` (``conf/model/cof_sft.yaml``).

Not reproduced: CoF crops the displayed image and doubles the crop's size; here crops come from the original image
under the project's crop token budget. Answers are graded by :mod:`lfpc.answers` (CoF's judge adds an LLM for
answers its rules do not settle; ``judge.model`` does the same here).
"""

from __future__ import annotations

import re
from typing import Sequence

from lfpc.agent.compared.common import (
    IMAGE_ITEM,
    answered,
    scaled_about_centre,
    system_turn,
    text_item,
    user_turn,
    vstar_text,
)
from lfpc.agent.parsing import ParsedTurn, box_values, call_arguments, invalid
from lfpc.boxes import Box, Size
from lfpc.data.records import Sample

SYSTEM = (
    'You are a helpful assistant.\n\n# Tools\nYou may call one or more functions to assist with the user query.\n'
    'You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n'
    '{"type": "function", "function": {"name":"image_zoom_in_tool","description":"Zoom in on a specific region of '
    'an image by cropping it based on a bounding box (bbox_2d) and an optional object label.","parameters":'
    '{"properties":{"bbox_2d":{"type":"array","items":{"type":"number"},"minItems":4,"maxItems":4,"description":'
    '"The bounding box of the region to zoom in, as [x1, y1, x2, y2], where (x1, y1) is the top-left corner and '
    '(x2, y2) is the bottom-right corner."},"label":{"type":"string","description":"The name or label of the object '
    'in the specified bounding box (optional)."}},"required":["bbox_2d"], "type":"object"},"args_format": "Format '
    'the arguments as a JSON object."}}\n</tools>\n\nFor the function call, return a json object with function name '
    'and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    '<args-json-object>}\n</tool_call>')
INSTRUCTION = ("\nThink in the mind first, and then decide whether to call tools one or more times OR provide final "
               "answer. Format strictly as: <think>...</think> <tool_call>...</tool_call> <tool_call>...</tool_call> "
               "(if any tools needed) OR <answer>...</answer> (if no tools needed).")
# Without the tool (crop mode direct, which CoF's evaluation lacks): its instruction with the tool parts left out
DIRECT_INSTRUCTION = ("\nThink in the mind first, and then provide final answer. Format strictly as: "
                      "<think>...</think> <answer>...</answer>.")
ENLARGE = 1.5  # the evaluation script's --enlarge_factor

_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>")  # CoF's extract_answer: no DOTALL, one line


def messages(sample: Sample, display_size: Size, tools: bool = True) -> list[dict]:
    """CoF's opening chat: its system prompt, then the image and ``Question: <V* text><instruction>``."""
    instruction = INSTRUCTION if tools else DIRECT_INSTRUCTION
    system = SYSTEM if tools else "You are a helpful assistant."
    return [system_turn(system), user_turn(IMAGE_ITEM, text_item(f"Question: {vstar_text(sample)}{instruction}"))]


def observation(error: str | None = None, calls_left: int = 1, tools: bool = True, free_form: bool = False) -> str:
    """CoF's tool-response text: its instruction, whatever happened (it shows no error)."""
    return INSTRUCTION if tools else DIRECT_INSTRUCTION


def layout(text: str, image_size: Size | None, turn: int) -> list[dict]:
    """CoF's tool-response turn: the image (the crop, or the whole view after a failed call), then ``text``."""
    return [IMAGE_ITEM, text_item(text)] if image_size else [text_item(text)]


def widen(box: Box, size: Size) -> Box:
    """CoF's crop region: the box enlarged :data:`ENLARGE` times about its centre, clipped to the image."""
    return scaled_about_centre(box, size, ENLARGE)


def read(text: str, frames: Sequence[Size]) -> ParsedTurn:
    """Read one turn by CoF's rules (module docstring); ``frames[0]`` is the displayed image's size."""
    if "<tool_call>" in text:
        return _tool_call(text, frames[0])
    if "\\boxed{" in text:  # judge_result.py reads the answer inside the box first
        text = text.split("\\boxed{")[1].split("}")[0]
    found = _ANSWER.search(text)
    return answered(found.group(1) if found else None,
                    "the final turn has no one-line <answer>...</answer> (CoF's rule): no answer")


def _tool_call(text: str, size: Size) -> ParsedTurn:
    """The box of CoF's first ``<tool_call>``, checked to lie inside the displayed image of ``size``."""
    found = _TOOL_CALL.search(text)
    if found is None:
        return invalid("the <tool_call> is not closed by </tool_call>")
    arguments, error = call_arguments(found.group(1).strip(), tool=None, string_arguments=False)
    if arguments is None:
        return invalid(error)  # type: ignore[arg-type]
    box, error = box_values(arguments)
    if box is None:
        return invalid(error)  # type: ignore[arg-type]
    (x1, y1, x2, y2), (width, height) = box, size
    if not (0 <= x1 < width and 0 <= y1 < height and 0 < x2 <= width and 0 < y2 <= height):
        return invalid(f"bbox_2d must lie inside the {width} x {height} image (CoF's rule)")
    if x2 <= x1 or y2 <= y1:
        return invalid("bbox_2d needs x1 < x2 and y1 < y2 (CoF's rule)")
    return ParsedTurn(kind="tool_call", bbox=box)
