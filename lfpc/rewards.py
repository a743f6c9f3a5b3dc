"""Pure reward functions of LFPC: answer accuracy, format, tool use and the Stage II grounding rewards.

All boxes are in ORIGINAL image pixels. ``score_episode`` combines the components of one finished
trajectory into the scalar GRPO reward (paper Sec. 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from lfpc.answers import Judge, is_correct
from lfpc.boxes import Box, Size, best_iou, coverage, iou, normalized_l1
from lfpc.data.records import Sample

IOU_MODES = ("none", "thresh", "nothresh")
GROUNDING_BOXES = ("first", "last", "best")


def accuracy_reward(answer: str | None, sample: Sample, judge: Judge | None = None) -> float:
    """1.0 when ``answer`` answers ``sample`` correctly (:func:`lfpc.answers.is_correct`), else 0.0."""
    return 1.0 if is_correct(answer, sample, judge) else 0.0


@dataclass(frozen=True)
class EpisodeOutcome:
    """Summary of one finished trajectory, produced by the agent environment.

    ``answer`` is the text inside ``<answer>`` (None when missing); ``crop_boxes`` are the boxes of the
    successful crops in ORIGINAL image pixels, in call order: the predicted box mapped from the displayed frame
    (B1 in ``gt`` mode), not the region cropped around it (rounded out, grown to >= 28 px a side), so IoU,
    coverage and the grounding reward score the prediction.
    """

    answer: str | None
    format_ok: bool
    crop_boxes: tuple[Box, ...] = ()
    num_invalid_calls: int = 0

    @property
    def num_crops(self) -> int:
        """Number of successful crops."""
        return len(self.crop_boxes)


def format_reward(outcome: EpisodeOutcome) -> float:
    """1.0 when the trajectory followed the output format, else 0.0."""
    return 1.0 if outcome.format_ok else 0.0


def tool_reward(correct: bool, num_crops: int) -> float:
    """1.0 only for a correct answer reached after at least one crop."""
    return 1.0 if correct and num_crops >= 1 else 0.0


def conditional_iou_reward(pred: Box, gt_boxes: Sequence[Box], tau: float = 0.9,
                           require_coverage: bool = True) -> float:
    """Max IoU of ``pred`` with any nested GT box (smallest first), granted only if ``pred`` covers >= ``tau`` of B1.

    With ``require_coverage=False`` the max IoU is always granted. Empty ``gt_boxes`` give 0.0.
    """
    if not gt_boxes:
        return 0.0
    if require_coverage and coverage(pred, gt_boxes[0]) < tau:
        return 0.0
    return max(iou(pred, gt) for gt in gt_boxes)


def l1_reward(pred: Box, gt_boxes: Sequence[Box], image_size: Size) -> float:
    """1 - normalized L1 distance to the closest GT box, clamped to [0, 1]; 0.0 without GT boxes."""
    if not gt_boxes:
        return 0.0
    distance = min(normalized_l1(pred, gt, image_size) for gt in gt_boxes)
    return min(1.0, max(0.0, 1.0 - distance))


@dataclass(frozen=True)
class RewardConfig:
    """Weights and switches of the composite reward.

    ``iou_mode``: ``none`` (no IoU reward), ``thresh`` (IoU granted only if B1 coverage >= ``tau``) or
    ``nothresh``. ``grounding_box``: which crop the grounding terms score: ``first``, ``last`` or ``best``
    (highest IoU reward, the earliest on ties; ranked with the threshold when ``iou_mode`` is ``none``).
    """

    w_acc: float = 0.8
    w_fmt: float = 0.2
    w_tool: float = 1.2
    iou_mode: str = "none"
    w_iou: float = 1.0
    use_l1: bool = False
    w_l1: float = 1.0
    tau: float = 0.9
    grounding_box: str = "last"

    def __post_init__(self) -> None:
        for name in ("w_acc", "w_fmt", "w_tool", "w_iou", "w_l1"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"RewardConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.iou_mode not in IOU_MODES:
            raise ValueError(f"RewardConfig.iou_mode must be one of {list(IOU_MODES)}, got {self.iou_mode!r}")
        if self.grounding_box not in GROUNDING_BOXES:
            raise ValueError(f"RewardConfig.grounding_box must be one of {list(GROUNDING_BOXES)}, "
                             f"got {self.grounding_box!r}")
        if not isinstance(self.use_l1, bool):
            raise ValueError(f"RewardConfig.use_l1 must be true or false, got {self.use_l1!r}")
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"RewardConfig.tau must be a number in (0, 1], got {self.tau!r}")


def _scored_box(crops: Sequence[Box], gt_boxes: Sequence[Box], cfg: RewardConfig) -> Box:
    """The crop the grounding terms score, chosen by ``cfg.grounding_box``."""
    if cfg.grounding_box == "first":
        return crops[0]
    if cfg.grounding_box == "last":
        return crops[-1]
    require = cfg.iou_mode != "nothresh"
    return max(crops, key=lambda box: conditional_iou_reward(box, gt_boxes, cfg.tau, require))


def score_episode(outcome: EpisodeOutcome, sample: Sample, cfg: RewardConfig,
                  judge: Judge | None = None) -> dict[str, float]:
    """Reward components ``acc, fmt, tool, iou, l1``, their weighted ``total`` and diagnostics.

    ``judge`` settles free-form answers no rule can grade (none: they score 0).

    Diagnostics: ``num_crops``; ``best_iou`` (max plain IoU of any crop with any GT box); ``b1_coverage``
    (coverage of B1 by the scored crop). Grounding terms are 0 without crops or without GT boxes.
    """
    acc = accuracy_reward(outcome.answer, sample, judge)
    fmt = format_reward(outcome)
    tool = tool_reward(acc == 1.0, outcome.num_crops)
    iou_term = l1_term = best = b1_coverage = 0.0
    crops, gt_boxes = outcome.crop_boxes, sample.boxes
    if crops and gt_boxes:
        box = _scored_box(crops, gt_boxes, cfg)
        if cfg.iou_mode != "none":
            iou_term = conditional_iou_reward(box, gt_boxes, cfg.tau, cfg.iou_mode == "thresh")
        if cfg.use_l1:
            if sample.image_size is None:
                raise ValueError(f"sample {sample.id!r} has no image_size, which the L1 reward needs")
            l1_term = l1_reward(box, gt_boxes, sample.image_size)
        best = best_iou(crops, gt_boxes)
        b1_coverage = coverage(box, gt_boxes[0])
    total = (cfg.w_acc * acc + cfg.w_fmt * fmt + cfg.w_tool * tool + cfg.w_iou * iou_term
             + cfg.w_l1 * l1_term)
    return {"acc": acc, "fmt": fmt, "tool": tool, "iou": iou_term, "l1": l1_term, "total": total,
            "num_crops": float(outcome.num_crops), "best_iou": best, "b1_coverage": b1_coverage}
