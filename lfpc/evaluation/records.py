"""Per-question evaluation records and the append-only JSONL log that lets an interrupted run resume.

One record per (question id, crop mode, global-image token budget): the trajectory text, the boxes, the answer,
its correctness and the cost measures. Every batch is appended and flushed as soon as it is scored, so a killed
run loses at most the batch in flight; a torn last line (a write cut short) is dropped when the log is reopened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from lfpc.answers import answer_key, is_correct
from lfpc.boxes import Box, coverage, iou, mean_target_iou
from lfpc.data.records import Sample
from lfpc.evaluation.data import subtask_of
from lfpc.jsonl_log import append_json_lines, complete_lines
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.episodes import Trajectory
from lfpc.viewer.capture import view_fields
from lfpc.vision.images import image_digest


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
            if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                raise ValueError(f"{self.path}:{line_no}: not an evaluation record (no string 'key'); delete or fix "
                                 "the line to resume")
            self.records.setdefault(record["key"], record)

    def check_questions(self, samples: Sequence[Sample]) -> None:
        """Refuse records whose question, options, answer, GT box or image (its content digest) differ from the
        current sample with that id: the benchmark changed since they were computed, and mixing them would give stale
        results (a record made before records kept the image digest counts as changed)."""
        current = {s.id: question_fields(s) for s in samples}
        stale = sorted({r["id"] for r in self.records.values()
                        if r.get("id") in current and current[r["id"]] != {k: r.get(k) for k in current[r["id"]]}})
        if stale:
            raise ValueError(f"{self.path}: the records of {len(stale)} question(s) (e.g. {stale[:3]}) were made on "
                             "other question, option, answer, GT-box or image content than the benchmark now holds "
                             "(or before records kept their image's digest); evaluate into another folder or delete "
                             "the records")

    def append(self, records: Iterable[dict]) -> None:
        """Append records (one JSON line each), flushed and synced to disk before returning."""
        records = list(records)
        append_json_lines(self.path, records, sync=True)
        for record in records:
            self.records.setdefault(record["key"], record)


def question_fields(sample: Sample) -> dict:
    """What a record keeps of its question: text, options (in the order shown), answer letter, GT box B1 and the
    digest of the image file's bytes (an image replaced at the same path is another question)."""
    return {"question": sample.question, "options": list(sample.options), "answer": sample.answer,
            "gt_box": list(sample.boxes[0]) if sample.boxes else None, "image_digest": image_digest(sample.image_path)}


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
    around them are in ``events``), ``gt_box`` is the smallest GT box B1 (None without boxes); the viewer's fields
    (boxes in the displayed frame too, per-turn text, crop sizes) are those of :func:`lfpc.viewer.capture.view_fields`.
    ``visual_tokens`` counts the visual tokens of every image the model saw (global view + crops); ``truncated`` says
    whether a token cap ended the episode before an answer (it scores wrong); ``time_s`` is this question's share of
    its batch's wall time.
    """
    sample, outcome = trajectory.sample, trajectory.outcome
    choice = answer_key(outcome.answer, sample)
    gt_box = sample.boxes[0] if sample.boxes else None
    image_tokens = [codec.image_tokens(grid) for grid in trajectory.context.image_grid_thw]
    return {
        "key": record_key(sample.id, mode, budget), "id": sample.id, "benchmark": benchmark,
        "subtask": subtask_of(sample), "mode": mode, "budget": budget, "cycle": sample.meta.get("cycle_category"),
        **question_fields(sample),
        "prediction": outcome.answer, "choice": choice, "correct": is_correct(outcome.answer, sample),
        "format_ok": outcome.format_ok, "trajectory": response_text(codec, trajectory), **view_fields(trajectory),
        **crop_scores(outcome.crop_boxes, gt_box),
        "target_iou": mean_target_iou(outcome.crop_boxes, [tuple(b) for b in sample.meta.get("object_boxes", ())]),
        "tool_calls": sum(e["kind"] == "tool_call" for e in trajectory.events), "crops": outcome.num_crops,
        "invalid_calls": outcome.num_invalid_calls, "visual_tokens": sum(image_tokens),
        "global_tokens": image_tokens[0], "response_tokens": trajectory.context.num_policy_tokens,
        "truncated": trajectory.truncated, "time_s": seconds,
    }


def load_run_records(folder: str | Path) -> tuple[dict, list[dict]]:
    """The ``metrics.json`` of an eval results folder and the records it summarises (those of its run's plan, in
    plan order), not every record its ``records.jsonl`` holds from earlier runs (other questions, limits, modes)."""
    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    plan = metrics.get("plan")
    if not isinstance(plan, dict):
        raise ValueError(f"{folder / 'metrics.json'} does not name the records it summarises (written by an older "
                         f"eval.py); rerun eval.py into {folder} (its records are reused) to rewrite it")
    log = RecordLog(folder / "records.jsonl")
    keys = [record_key(q, mode, budget) for budget in plan["budgets"] for mode in plan["modes"]
            for q in plan["questions"]]
    missing = [key for key in keys if key not in log.records]
    if missing:
        raise ValueError(f"{folder / 'records.jsonl'} lacks {len(missing)} record(s) {folder / 'metrics.json'} "
                         f"summarises (e.g. {missing[0]!r}); rerun eval.py into {folder} to compute them")
    return metrics, [log.records[key] for key in keys]
