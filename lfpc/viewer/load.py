"""Read what the viewer shows from a training run folder (``rollouts/rank*.jsonl``) or an evaluation results folder
(``records.jsonl``), and the per-step (or per-pass) statistics of its overview."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lfpc.boxes import best_iou
from lfpc.jsonl_log import complete_lines


@dataclass
class Report:
    """Everything one report shows: ``kind`` is ``training`` or ``evaluation``; ``records`` are the JSON records
    (those with ``images`` get a card); ``folder`` is where their image paths are relative to."""

    kind: str
    folder: Path
    records: list[dict]


def read_jsonl(paths: Iterable[Path]) -> list[dict]:
    """The records of every complete line of ``paths``, read only (a run may still be appending to them)."""
    return [json.loads(line) for path in paths for _, line in complete_lines(path, repair=False)]


def load_report(folder: str | Path) -> Report:
    """The report of a training run folder or an evaluation results folder; raises ``FileNotFoundError`` for
    a folder that is neither."""
    folder = Path(folder)
    if (folder / "records.jsonl").is_file():
        return Report("evaluation", folder, read_jsonl([folder / "records.jsonl"]))
    ranks = sorted((folder / "rollouts").glob("rank*.jsonl"))
    if ranks:
        records = sorted(read_jsonl(ranks), key=lambda r: r["step"])
        return Report("training", folder / "rollouts", records)
    raise FileNotFoundError(f"{folder} holds neither rollouts/rank*.jsonl (a training run) nor records.jsonl "
                            "(an evaluation results folder)")


def data_uri(path: Path) -> str | None:
    """``path`` as a ``data:image/jpeg;base64,...`` URI (None when the file is missing)."""
    if not path.is_file():
        return None
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def is_correct(record: dict) -> bool:
    """Whether the answer was right (evaluation: ``correct``; training: accuracy reward 1)."""
    return bool(record["correct"]) if "correct" in record else record["scores"]["acc"] == 1.0


def crop_iou(record: dict) -> float | None:
    """Largest IoU of any crop with any GT box (ORIGINAL pixels); None without crops or GT boxes."""
    crops, gts = record["crop_boxes"], record["gt_boxes"]
    return best_iou([tuple(c) for c in crops], [tuple(g) for g in gts]) if crops and gts else None


def stats(records: list[dict]) -> dict[str, float | None]:
    """Overview numbers of a step (or evaluation pass): trajectories, accuracy, mean total reward (training only),
    tool-call rate (share with >= 1 crop), invalid-call rate (share with >= 1 invalid call), mean best IoU over
    trajectories with crops."""
    n = len(records)
    ious = [v for v in map(crop_iou, records) if v is not None]
    rewards = [r["scores"]["total"] for r in records if "scores" in r]
    return {"n": n, "acc": sum(map(is_correct, records)) / n,
            "reward": sum(rewards) / len(rewards) if rewards else None,
            "tool_call_rate": sum(bool(r["crop_boxes"]) for r in records) / n,
            "invalid_call_rate": sum(r["invalid_calls"] > 0 for r in records) / n,
            "iou": sum(ious) / len(ious) if ious else None}
