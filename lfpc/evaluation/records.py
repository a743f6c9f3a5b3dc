"""Per-question evaluation records and the append-only JSONL log that lets an interrupted run resume.

One record per (question id, crop mode, global-image token budget): the trajectory text, the boxes, the answer,
its correctness and the cost measures. Every batch is appended and flushed as soon as it is scored, so a killed
run loses at most the batch in flight; a torn last line (a write cut short) is dropped when the log is reopened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from lfpc.boxes import Box, coverage, iou, mean_target_iou
from lfpc.evaluation.data import subtask_of
from lfpc.jsonl_log import append_json_lines, complete_lines
from lfpc.rewards import extract_choice
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.episodes import Trajectory


def record_key(sample_id: str, mode: str, budget: int) -> str:
    """The key of one evaluated question: ``"<sample id>|<mode>|<budget>"``."""
    return f"{sample_id}|{mode}|{budget}"


class RecordLog:
    """The ``records.jsonl`` of a results folder: records already computed (by key) and appending new ones."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._load()

    @property
    def done(self) -> set[str]:
        """Keys of the questions already evaluated."""
        return set(self.records)

    def _load(self) -> None:
        for line_no, line in complete_lines(self.path):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}:{line_no}: not a JSON record ({err.msg}); delete or fix the line "
                                 "to resume") from None
            self.records.setdefault(record["key"], record)

    def append(self, records: Iterable[dict]) -> None:
        """Append records (one JSON line each), flushed and synced to disk before returning."""
        records = list(records)
        append_json_lines(self.path, records, sync=True)
        for record in records:
            self.records.setdefault(record["key"], record)


def crop_scores(crops: tuple[Box, ...], gt_box: Box | None) -> dict[str, float | None]:
    """IoU with ``gt_box`` and coverage of ``gt_box`` (area(crop ∩ gt) / area(gt)) of the first and the last crop;
    None without crops or without a GT box."""
    if not crops or gt_box is None:
        return {"first_iou": None, "last_iou": None, "first_coverage": None, "last_coverage": None}
    return {"first_iou": iou(crops[0], gt_box), "last_iou": iou(crops[-1], gt_box),
            "first_coverage": coverage(crops[0], gt_box), "last_coverage": coverage(crops[-1], gt_box)}


def response_text(codec: ChatCodec, trajectory: Trajectory) -> str:
    """Everything after the prompt (assistant turns and tool responses), each image's pad tokens shown once."""
    ids = trajectory.context.token_ids[trajectory.prompt_length:]
    kept = [t for i, t in enumerate(ids) if t != codec.image_pad_id or i == 0 or ids[i - 1] != codec.image_pad_id]
    return codec.tokenizer.decode(kept, skip_special_tokens=False)


def question_record(trajectory: Trajectory, codec: ChatCodec, benchmark: str, mode: str, budget: int,
                    seconds: float) -> dict:
    """The JSON record of one evaluated question.

    Boxes are in ORIGINAL image pixels: ``crop_boxes`` are the predicted boxes of the crops (the regions cropped
    around them are in ``events``), ``gt_box`` is the
    smallest GT box B1 (None without boxes). ``visual_tokens`` counts the visual tokens of every image the model
    saw (global view + crops); ``time_s`` is this question's share of its batch's wall time.
    """
    sample, outcome = trajectory.sample, trajectory.outcome
    choice = extract_choice(outcome.answer, sample.options)
    gt_box = sample.boxes[0] if sample.boxes else None
    image_tokens = [codec.image_tokens(grid) for grid in trajectory.context.image_grid_thw]
    return {
        "key": record_key(sample.id, mode, budget), "id": sample.id, "benchmark": benchmark,
        "subtask": subtask_of(sample), "mode": mode, "budget": budget, "display_size": list(trajectory.display_size),
        "cycle": sample.meta.get("cycle_category"),
        "question": sample.question, "options": list(sample.options), "answer": sample.answer,
        "prediction": outcome.answer, "choice": choice, "correct": choice == sample.answer,
        "format_ok": outcome.format_ok, "trajectory": response_text(codec, trajectory), "events": trajectory.events,
        "crop_boxes": [list(b) for b in outcome.crop_boxes], "gt_box": list(gt_box) if gt_box else None,
        **crop_scores(outcome.crop_boxes, gt_box),
        "target_iou": mean_target_iou(outcome.crop_boxes, [tuple(b) for b in sample.meta.get("object_boxes", ())]),
        "tool_calls": sum(e["kind"] == "tool_call" for e in trajectory.events), "crops": outcome.num_crops,
        "invalid_calls": outcome.num_invalid_calls, "visual_tokens": sum(image_tokens),
        "global_tokens": image_tokens[0], "response_tokens": trajectory.context.num_policy_tokens, "time_s": seconds,
    }
