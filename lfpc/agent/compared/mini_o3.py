"""Mini-o3 as its own evaluation (verl ``vllm_multi_turn_tool_call``, ``mode=async``) prompts and reads it.

Source: github.com/Mini-o3/Mini-o3 at commit 8654dbf42d2ea98b9d81b6cc7179026dd0598fdf, ``verl/trainer/constants.py``
(``TOOL_CROP_SYSTEM_PROMPT``, ``TOOL_CALL_CROP_MULTI_TRUN_PROMPT``, ``ERROR_INFO_MULTI_TURN_PROMPT``),
``verl/workers/rollout/vllm_rollout/vllm_async_engine.py`` (``_async_rollout_a_request``, ``process_tool_call``),
``verl/workers/rollout/vllm_rollout/function_tools.py`` (``prepare_grounding_inputs_multi_turn``),
``verl/utils/reward_score/general_qa_tool_mc.py`` (``inner_acc_reward``), ``verl/trainer/config/ppo_trainer.yaml``
(``stop: ['</grounding>']``, ``val_do_sample: False``), ``README.md`` (``data.system_prompt="tool_crop"``,
``val_max_generation_round=12``, ``use_relative_coordinates=True``, greedy with ``val_n=1`` and
``val_do_sample=False``) and ``docs/mini_o3_demo.md`` (the question starts with ``<image>\\n``). What that code
does, and so this preset:

* system :data:`SYSTEM`; the user turn is the image, then ``\\n`` + the question. The question text of its V* data
  (a converted file on Hugging Face) is not in the repository: V*'s own text is used (options as ``(A) ...`` lines,
  :func:`lfpc.agent.compared.common.vstar_text`), which its ``(A) xxx`` / ``A. xxx`` answer rules fit.
* Generation stops at the first ``</grounding>``, so nothing after it is read. A turn holding
  ``<grounding>...</grounding>`` is a tool call, written exactly ``<grounding>{"bbox_2d": [x1, y1, x2, y2],
  "source": "original_image"}</grounding>`` (or ``"observation_k"``: the k-th crop returned), the box as fractions of
  that image's width and height (clipped to it). A crop answers :data:`OBSERVATION` around the crop, numbered by turn
  (``Action t-1``, ``Observation t``, as its code does even after failed calls); a failed call answers ``ERROR occurs
  during grounding. Error Information: <error>.`` and :data:`ERROR_PROMPT`.
* Any other turn ends the episode; the answer is its last ``<answer>...</answer>``; none is scored wrong
  (unanswered = wrong).
* 12 turns at most (``val_max_generation_round=12``): a tool call in the 12th ends the episode without an answer,
  the project's ``max_turns: 11`` (``conf/model/mini_o3.yaml``).

Not reproduced: its aspect-ratio limit (200, here the project's 100, :func:`lfpc.agent.env.pixel_region`) and its
integer rounding of boxes in original pixels.
"""

from __future__ import annotations

import ast
import re
from typing import Sequence

from lfpc.agent.compared.common import (
    IMAGE_ITEM,
    answered,
    from_relative,
    last_tag,
    system_turn,
    text_item,
    user_turn,
    vstar_text,
)
from lfpc.agent.parsing import ParsedTurn, box_values, invalid
from lfpc.boxes import Size
from lfpc.data.records import Sample

SYSTEM = ("You are a helpful assistant. Answer the user's question based on the image provided. Output your thinking "
          "process within the <think> and </think> tags. Whenever you find anything unclear, you can zoom in a "
          "specific region in the given image to see more clearly by outputing <grounding>{\"bbox_2d\": [x0, y0, x1, "
          "y1], \"source\": \"original_image\"}</grounding>, where (x0, y0) and (x1, y1) are the top-left and "
          "bottom-right coordinates of the region that you want to zoom in, respectively (suppose the width and "
          "height of the image are 1.0), and 'source' refers to the image that you zoom in and could be either "
          "'original_image' or 'observation_i'. Once the final answer is confirmed, put it within <answer> and "
          "</answer>.")
# Without the tool (crop mode direct, which Mini-o3's evaluation lacks): its system prompt without the zoom sentence
DIRECT_SYSTEM = ("You are a helpful assistant. Answer the user's question based on the image provided. Output your "
                 "thinking process within the <think> and </think> tags. Once the final answer is confirmed, put it "
                 "within <answer> and </answer>.")
OBSERVATION = ("After the above Action {action_turn}, here is the the zoom-in image (Observation {observation_turn}):\n"
               "<|vision_start|><|image_pad|><|vision_end|>.\nContinue your reasoning process inside <think> and "
               "</think>. If needed, you can continue to zoom in on the original image or any of the observations, "
               "by outputting <grounding> and </grounding> as before. If the final answer is confirmed, put your "
               "final answer inside <answer> and </answer>.")
ERROR_PROMPT = ("Please analyze the error information obtained from the function tool and adjust your response. "
                "Countinue your reasoning process inside <think> and </think>.")
STOP = "</grounding>"
_IMAGE_SLOT = "<|vision_start|><|image_pad|><|vision_end|>"
# process_tool_call's pattern: the last <grounding>, keys in this order and spacing, the box a Python literal
_GROUNDING = re.compile(r".*<grounding>{\"bbox_2d\": (.*),.*\"source\": [',\"](.*)[',\"]}</grounding>", re.DOTALL)


def messages(sample: Sample, display_size: Size, tools: bool = True) -> list[dict]:
    """Mini-o3's opening chat: its system prompt, then the image and ``\\n`` + the question."""
    question = text_item("\n" + vstar_text(sample))
    return [system_turn(SYSTEM if tools else DIRECT_SYSTEM), user_turn(IMAGE_ITEM, question)]


def observation(error: str | None = None, calls_left: int = 1, tools: bool = True, free_form: bool = False) -> str:
    """The text of a failed call (none after a crop: :func:`layout` writes it)."""
    return f"ERROR occurs during grounding. Error Information: {error}.\n{ERROR_PROMPT}" if error else ""


def layout(text: str, image_size: Size | None, turn: int) -> list[dict]:
    """A tool-response turn: :data:`OBSERVATION` numbered by ``turn`` with the crop in its image slot, or ``text``."""
    if image_size is None:
        return [text_item(text)]
    before, after = OBSERVATION.format(action_turn=turn - 1, observation_turn=turn).split(_IMAGE_SLOT)
    return [text_item(before), IMAGE_ITEM, text_item(after)]


def read(text: str, frames: Sequence[Size]) -> ParsedTurn:
    """Read one turn by Mini-o3's rules (module docstring); ``frames``: the sizes of the images shown so far (the
    displayed image, then each crop)."""
    if STOP in text:
        text = text[: text.index(STOP) + len(STOP)]
    if not re.search(r"<grounding>.*?</grounding>", text, re.DOTALL):
        return answered(last_tag(text, "answer"), "the final turn has no <answer>...</answer> (Mini-o3's rule): "
                                                   "no answer")
    found = _GROUNDING.match(text)
    if found is None:
        return invalid('the grounding must read {"bbox_2d": [x0, y0, x1, y1], "source": "original_image"}')
    source, error = _source(found.group(2), len(frames))
    if source is None:
        return invalid(error)  # type: ignore[arg-type]
    box, error = box_values({"bbox_2d": _literal(found.group(1))})
    if box is None:
        return invalid(error)  # type: ignore[arg-type]
    return ParsedTurn(kind="tool_call", bbox=from_relative(box, frames[source]), source=source)


def _literal(text: str) -> object:
    """``text`` read as a Python literal (Mini-o3 evaluates it), None when it is not one."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None


def _source(name: str, count: int) -> tuple[int | None, str | None]:
    """The frame index named by ``source`` (``original_image`` or ``observation_k``) among ``count``, or the error."""
    if name == "original_image":
        return 0, None
    found = re.match(r"observation_([0-9]+)", name)
    if found is None:
        return None, "'source' must be 'original_image' or 'observation_<number>'"
    digits = found.group(1).lstrip("0") or "0"  # any length: compared before int() (which refuses > 4300 digits)
    if len(digits) > len(str(count)) or int(digits) >= count:
        return None, f"there is no observation {digits if len(digits) <= 12 else 'that large'} yet ({count - 1} so far)"
    return int(digits), None
