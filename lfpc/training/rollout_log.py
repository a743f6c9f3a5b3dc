"""Every training rollout appended to JSONL as it is produced (text, boxes, rewards, advantage), with thumbnails of
the images of the first few trajectories of each step for the trajectory viewer (:mod:`lfpc.viewer`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lfpc.files import atomic_write
from lfpc.jsonl_log import append_json_lines, drop_torn_tail, read_json_lines
from lfpc.rollout.episodes import Trajectory
from lfpc.viewer.capture import save_thumbnails, view_fields


@dataclass(frozen=True)
class ViewerConfig:
    """How much of each step the viewer can show: the images of the first ``trajectories_per_step`` trajectories
    of each rank (whole GRPO groups when it is a multiple of the group size), at most ``thumbnail_px`` a side."""

    trajectories_per_step: int = 8
    thumbnail_px: int = 384


def trajectory_record(trajectory: Trajectory, step: int, rank: int, advantage: float) -> dict:
    """A JSON-serializable summary of one scored trajectory and its group advantage (``group`` counts the prompts
    of ``rank``); ``step`` is the GRPO step (0-based, the ``step`` of ``metrics.csv``), not Lightning's optimizer
    step."""
    return {"step": step, "rank": rank, "sample_id": trajectory.sample.id, "group": trajectory.group,
            "question": trajectory.sample.question, "options": list(trajectory.sample.options),
            "answer": trajectory.sample.answer, "prediction": trajectory.outcome.answer,
            "format_ok": trajectory.outcome.format_ok, "invalid_calls": trajectory.outcome.num_invalid_calls,
            "scores": trajectory.scores, "advantage": advantage,
            "response_tokens": trajectory.context.num_policy_tokens, **view_fields(trajectory)}


class RolloutLog:
    """Appends one line per trajectory to ``<folder>/rank<rank>.jsonl`` after each step; the kept trajectories'
    images go to ``<folder>/images/``. A torn last line left by an interrupted run is dropped first, so a resumed
    run appends on a clean line; the records of steps a run redoes (a crash after logging a step and before its
    checkpoint, then a rerun or resume) are dropped at its first step, so no step is logged twice."""

    def __init__(self, folder: str | Path, rank: int = 0, viewer: ViewerConfig = ViewerConfig()) -> None:
        self.folder = Path(folder)
        self.path = self.folder / f"rank{rank}.jsonl"
        self.rank, self.viewer = rank, viewer
        self._first_step = True
        if self.path.exists():
            drop_torn_tail(self.path)

    def append(self, step: int, trajectories: Sequence[Trajectory], advantages: Sequence[float]) -> list[dict]:
        """Log one step; returns the records of the trajectories whose images were kept."""
        if self._first_step:
            self._first_step = False
            self._drop_steps_from(step)
        records = [trajectory_record(t, step, self.rank, float(a)) for t, a in zip(trajectories, advantages)]
        kept = records[:self.viewer.trajectories_per_step]
        for index, (record, trajectory) in enumerate(zip(kept, trajectories)):
            record["images"] = save_thumbnails(trajectory, self.folder / "images",
                                               f"step{step:06d}-rank{self.rank}-{index:03d}", self.viewer.thumbnail_px)
        append_json_lines(self.path, records)
        return kept

    def _drop_steps_from(self, step: int) -> None:
        """Rewrite the log without the records of ``step`` and later (left by a run that did not checkpoint them)."""
        if not self.path.exists():
            return
        rows = [row for _, row in read_json_lines(self.path)]
        kept = [row for row in rows if row.get("step", -1) < step]
        if len(kept) < len(rows):
            atomic_write(self.path, "".join(json.dumps(row) + "\n" for row in kept))
