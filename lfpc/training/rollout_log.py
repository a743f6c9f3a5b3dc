"""Every training rollout appended to JSONL as it is produced (text, boxes, rewards), for later analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lfpc.jsonl_log import append_json_lines, drop_torn_tail
from lfpc.rollout.episodes import Trajectory


def trajectory_record(trajectory: Trajectory, step: int) -> dict:
    """A JSON-serializable summary of one scored trajectory; ``step`` is the GRPO step (0-based, the ``step`` of
    ``metrics.csv``), not Lightning's optimizer step."""
    return {"step": step, "sample_id": trajectory.sample.id, "group": trajectory.group,
            "display_size": list(trajectory.display_size), "turns": trajectory.turns,
            "answer": trajectory.outcome.answer, "format_ok": trajectory.outcome.format_ok,
            "crop_boxes": [list(b) for b in trajectory.outcome.crop_boxes],
            "gt_boxes": [list(b) for b in trajectory.sample.boxes], "scores": trajectory.scores,
            "response_tokens": trajectory.context.num_policy_tokens}


class RolloutLog:
    """Appends one line per trajectory to ``path`` and flushes after each step; a torn last line left by an
    interrupted run is dropped first, so a resumed run appends on a clean line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            drop_torn_tail(self.path)

    def append(self, step: int, trajectories: Sequence[Trajectory]) -> None:
        append_json_lines(self.path, (trajectory_record(t, step) for t in trajectories))
