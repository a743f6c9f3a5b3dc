"""The crop ("zoom in") environment of one episode: parse each assistant turn, crop the ORIGINAL image.

The model sees the global image resized to ``display_size`` and gives boxes in that frame; the box is
mapped to the original image, checked, cropped there and resized under the crop token budget.
Modes (attention-to-crop tests, paper Sec. 3 and Table 1): ``pred`` crops the predicted box; ``gt`` crops the
smallest GT box B1 whatever the prediction; ``noise`` returns seeded uniform noise of the crop's size;
``direct`` forbids the tool (a tool call ends the episode without an answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lfpc.agent.parsing import ParsedTurn
from lfpc.agent.presets import PRESETS, Layout, Preset, tool_response_layout
from lfpc.boxes import Box, Size, clip_box, intersection, scale_box
from lfpc.data.records import Sample
from lfpc.rewards import EpisodeOutcome
from lfpc.vision.budget import (
    ASPECT_RULE,
    MAX_ASPECT_RATIO,
    PATCH,
    global_view,
    resize_to_budget,
    visual_tokens,
)
from lfpc.vision.images import load_image

MODES = ("pred", "gt", "noise", "direct")
Region = tuple[int, int, int, int]  # an integer pixel region of the original image


@dataclass(frozen=True)
class StepResult:
    """What the environment returns for one assistant turn.

    ``image`` is the crop to show (None for an error or when done); ``text`` the tool-response text; ``event`` this
    turn's log record; ``layout`` the preset's layout of the answering user turn (ours:
    :func:`lfpc.agent.prompt.tool_response_content`).
    """

    done: bool
    image: Image.Image | None
    text: str
    event: dict
    layout: Layout = tool_response_layout

    def content(self) -> list[dict]:
        """Chat content of the user turn answering this step (ours: ``<tool_response>`` ... ``</tool_response>``)."""
        return self.layout(self.text, self.image.size if self.image is not None else None, self.event["turn"])


class CropError(ValueError):
    """A tool call the environment refuses; the message says what was wrong."""


def _fmt_box(box: Box) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def _enlarge_side(lo: int, hi: int, limit: int, axis: str, side: int) -> tuple[int, int]:
    """Grow ``[lo, hi)`` to at least ``side`` pixels around its centre, inside ``[0, limit]``."""
    if hi - lo >= side:
        return lo, hi
    if limit < side:
        raise CropError(f"the image is only {limit} px {axis}, smaller than the {side} px a crop needs")
    start = round((lo + hi) / 2 - side / 2)
    start = min(max(start, 0), limit - side)
    return start, start + side


def pixel_region(box: Box, size: Size, side: int = PATCH) -> Region:
    """Integer crop region covering ``box`` (clipped to ``size``), each side enlarged to >= ``side`` px (one visual
    token of the backbone: 28 for Qwen2.5-VL) around its centre; raises :class:`CropError` when that is impossible
    or the aspect ratio exceeds 100 (DeepEyes' rule)."""
    width, height = size
    x1, y1, x2, y2 = clip_box(box, size)
    # Round away float noise (e.g. 400.0000001) before taking the covering integer region.
    left, top = math.floor(round(x1, 6)), math.floor(round(y1, 6))
    right, bottom = math.ceil(round(x2, 6)), math.ceil(round(y2, 6))
    left, right = _enlarge_side(left, right, width, "wide", side)
    top, bottom = _enlarge_side(top, bottom, height, "high", side)
    ratio = max(right - left, bottom - top) / min(right - left, bottom - top)
    if ratio > MAX_ASPECT_RATIO:
        raise CropError(f"the crop {_fmt_box((left, top, right, bottom))} ({right - left} x {bottom - top} px "
                        f"in the original image) has aspect ratio {ratio:.1f} > {MAX_ASPECT_RATIO:g} ({ASPECT_RULE})")
    return left, top, right, bottom


def _checked(bbox: Box, size: Size) -> Box:
    """``bbox`` clipped to an image of ``size``; raises :class:`CropError` for zero or negative extent and for a box
    entirely outside the image."""
    x1, y1, x2, y2 = bbox
    if x1 == x2 or y1 == y2:
        raise CropError(f"bbox_2d {_fmt_box(bbox)} has zero area")
    if x2 < x1 or y2 < y1:
        raise CropError(f"bbox_2d {_fmt_box(bbox)} has x2 < x1 or y2 < y1; give [x1, y1, x2, y2] with the "
                        "top-left corner first")
    width, height = size
    if intersection(bbox, (0.0, 0.0, float(width), float(height))) == 0.0:
        raise CropError(f"bbox_2d {_fmt_box(bbox)} lies entirely outside the {width} x {height} image")
    return clip_box(bbox, size)


def display_to_original(bbox: Box, display_size: Size, original_size: Size) -> Box:
    """Check a predicted ``bbox`` in the displayed frame and map it to ORIGINAL pixels (clipped to the image).

    Raises :class:`CropError` for zero or negative extent and for a box entirely outside the displayed image.
    """
    return scale_box(_checked(bbox, display_size), display_size, original_size)


def crop_to_original(bbox: Box, crop_size: Size, region: Region) -> Box:
    """Check a ``bbox`` given in pixels of a crop shown at ``crop_size`` and map it to ORIGINAL pixels: the crop
    shows ``region`` of the original. Raises :class:`CropError` like :func:`display_to_original`."""
    left, top, right, bottom = region
    x1, y1, x2, y2 = scale_box(_checked(bbox, crop_size), crop_size, (right - left, bottom - top))
    return (left + x1, top + y1, left + x2, top + y2)


class CropEnvironment:
    """One episode of the zoom-in tool for ``sample`` shown at ``display_size``.

    Up to ``max_turns`` assistant turns may call the tool; turn ``max_turns + 1`` must answer, else the episode ends
    without an answer (a preset whose cap counts the answer's turn, DeepEyes' training one, allows ``max_turns - 1``
    calls: :attr:`max_turns` holds the tool turns). Unparseable turns and refused calls get an error observation,
    use up a turn and count in ``num_invalid_calls``. The ``preset`` decides how a turn is read, what a tool
    response says, the margin the tool adds around a box and whether a turn without a tool call or an answer ends
    the episode (``unanswered``); the preset's reader gives boxes in pixels of their image whatever the backbone's
    convention (:func:`lfpc.agent.presets.preset`). ``token_side``: the backbone's pixels per visual token
    (:attr:`lfpc.model.families.Backbone.token_side`), for the crop's budget and smallest side. A box names the image it is drawn on (``source``): 0 the displayed image, k the
    k-th crop returned (a compared method may zoom into a crop; the crop is still taken from the original).
    ``events`` logs every turn: ``turn``, ``kind``, ``bbox`` (raw, in pixels of its ``source``), ``source``,
    ``label``, ``box`` (the box in original pixels: the prediction mapped from its frame after the preset's margin,
    B1 in ``gt`` mode), ``region`` (the integer region cropped around it), ``crop_size`` and ``visual_tokens`` of
    the returned crop, ``error``. ``original`` is the decoded original image when the caller already holds it
    (shared, read-only); otherwise it is loaded on first use and kept for the episode, so the original is never
    decoded once per turn.
    """

    def __init__(self, sample: Sample, display_size: Size, crop_max_tokens: int, max_turns: int = 5,
                 mode: str = "pred", seed: int = 0, crop_min_tokens: int = 4,
                 original: Image.Image | None = None, preset: Preset = PRESETS["lfpc"],
                 token_side: int = PATCH) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if mode == "gt" and not sample.boxes:
            raise ValueError(f"mode 'gt' needs GT boxes, but sample {sample.id!r} has none")
        if len(display_size) != 2 or min(display_size) < 1:
            raise ValueError(f"display_size must be (width, height) > 0, got {display_size!r}")
        if max_turns < int(preset.answer_turn_counted):
            raise ValueError(f"max_turns must be >= {int(preset.answer_turn_counted)} with prompt preset "
                             f"{preset.name!r}, got {max_turns}")
        if not 1 <= crop_min_tokens <= crop_max_tokens:
            raise ValueError(f"crop token budget must satisfy 1 <= crop_min_tokens <= crop_max_tokens, "
                             f"got {crop_min_tokens} and {crop_max_tokens}")
        self.sample = sample
        self.display_size = (int(display_size[0]), int(display_size[1]))
        self.crop_max_tokens = crop_max_tokens
        self.crop_min_tokens = crop_min_tokens
        self.max_turns = max_turns - 1 if preset.answer_turn_counted else max_turns  # tool turns
        self.mode = mode
        self.events: list[dict] = []
        self._rng = np.random.default_rng(seed)
        self._answer: str | None = None
        self._format_ok = True
        self._crop_boxes: list[Box] = []
        self._num_invalid = 0
        self._done = False
        self._original = original
        self._crops: list[tuple[Size, Region]] = []  # each returned crop: its shown size, the region it shows
        self.preset = preset
        self.token_side = token_side

    @property
    def original(self) -> Image.Image:
        """The original image (decoded at most once per episode, read-only)."""
        if self._original is None:
            self._original = load_image(self.sample.image_path)
        return self._original

    @property
    def done(self) -> bool:
        """True once the episode has ended."""
        return self._done

    def global_image(self) -> Image.Image:
        """The global view of the original at ``display_size`` (:func:`lfpc.vision.budget.global_view`)."""
        return global_view(self.original, self.display_size)

    def step(self, assistant_text: str) -> StepResult:
        """Consume one assistant turn and return the observation (or the end of the episode)."""
        if self._done:
            raise RuntimeError("the episode is over; no more assistant turns are accepted")
        turn = len(self.events) + 1
        parsed = self.preset.read(assistant_text, [self.display_size, *(size for size, _ in self._crops)])
        event = {"turn": turn, "kind": parsed.kind, "bbox": list(parsed.bbox) if parsed.bbox else None,
                 "source": parsed.source, "label": parsed.label, "box": None, "region": None, "crop_size": None,
                 "visual_tokens": None, "error": parsed.error}
        self.events.append(event)
        if parsed.kind in ("answer", "unanswered"):
            self._answer = parsed.answer
            return self._finish(event)
        if parsed.kind == "invalid":
            self._format_ok = False
        elif self.mode == "direct":
            event["error"] = "tool calls are not allowed when answering directly"
        elif turn > self.max_turns:
            event["error"] = (f"the limit of {self.max_turns} tool turns is reached; the episode needed the "
                              "final answer in this turn")
        else:
            try:
                return self._crop(parsed, event, calls_left=self.max_turns - turn)
            except CropError as err:
                event["error"] = str(err)
        self._num_invalid += 1
        if (self.mode == "direct" and parsed.kind == "tool_call") or turn > self.max_turns:
            return self._finish(event)
        tools = self.mode != "direct"
        text = self.preset.observation(event["error"], self.max_turns - turn, tools, not self.sample.options)
        view = self.global_image() if tools and self.preset.failed_call_shows_view else None
        return self._result(False, view, text, event)

    def _result(self, done: bool, image: Image.Image | None, text: str, event: dict) -> StepResult:
        """A step result laid out by the preset."""
        return StepResult(done, image, text, event, self.preset.layout)

    def _predicted_box(self, parsed: ParsedTurn) -> Box:
        """The parsed box, widened by the preset's margin in its own frame, in ORIGINAL pixels."""
        if parsed.source == 0:
            return display_to_original(self.preset.widen(parsed.bbox, self.display_size),  # type: ignore[arg-type]
                                       self.display_size, self.original.size)
        size, region = self._crops[parsed.source - 1]
        return crop_to_original(self.preset.widen(parsed.bbox, size), size, region)  # type: ignore[arg-type]

    def _crop(self, parsed: ParsedTurn, event: dict, calls_left: int) -> StepResult:
        original = self.original
        box = self.sample.boxes[0] if self.mode == "gt" else self._predicted_box(parsed)
        region = pixel_region(box, original.size, self.token_side)
        crop = resize_to_budget(original.crop(region), self.crop_max_tokens, self.crop_min_tokens, self.token_side)
        if self.mode == "noise":
            noise = self._rng.integers(0, 256, size=(crop.height, crop.width, 3), dtype=np.uint8)
            crop = Image.fromarray(noise)
        self._crop_boxes.append(box)
        self._crops.append((crop.size, region))
        event.update(box=list(box), region=list(region), crop_size=list(crop.size),
                     visual_tokens=visual_tokens(*crop.size, self.token_side))
        return self._result(False, crop, self.preset.observation(None, calls_left, True, not self.sample.options),
                            event)

    def _finish(self, event: dict) -> StepResult:
        self._done = True
        return self._result(True, None, event["error"] or "", event)

    def outcome(self) -> EpisodeOutcome:
        """Summary for the reward: answer, format, the boxes of the crops (original pixels), invalid-call count."""
        return EpisodeOutcome(answer=self._answer, format_ok=self._format_ok and self._answer is not None,
                              crop_boxes=tuple(self._crop_boxes), num_invalid_calls=self._num_invalid)
