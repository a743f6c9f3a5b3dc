"""Read what the viewer shows from a training run folder (``rollouts/rank*.jsonl``) or an evaluation results folder
(``records.jsonl``), and the per-step (or per-pass) statistics of its overview."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lfpc.boxes import best_iou
from lfpc.jsonl_log import JsonlError, read_json_lines


@dataclass
class Report:
    """Everything one report shows: ``kind`` is ``training`` or ``evaluation``; ``records`` are the JSON records
    (those with ``images`` get a card); ``folder`` is where their image paths are relative to; ``sources`` are the
    JSONL files read."""

    kind: str
    folder: Path
    records: list[dict]
    sources: list[Path]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(count: int):
    return lambda value: isinstance(value, list) and len(value) == count and all(map(_number, value))


def _boxes(value) -> bool:
    return isinstance(value, list) and all(map(_numbers(4), value))


def _texts(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _optional(test):
    return lambda value: value is None or test(value)


def _event(value) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("kind"), str) and _integer(value.get("turn"))
            and _optional(_numbers(4))(value.get("bbox")) and _optional(_numbers(4))(value.get("box"))
            and _optional(lambda v: isinstance(v, str))(value.get("error"))
            and (value.get("box") is None or _numbers(2)(value.get("crop_size"))))


def _images(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("global"), str) and _texts(value.get("crops"))


SCORES = ("acc", "fmt", "tool", "iou", "l1", "total")
FIELDS = {  # name -> (test, what it must be): every field the page shows, so a crafted record cannot reach it
    "common": {"question": (lambda v: isinstance(v, str), "a string"), "options": (_texts, "a list of strings"),
               "answer": (lambda v: isinstance(v, str), "a string"),
               "prediction": (_optional(lambda v: isinstance(v, str)), "a string or null"),
               "crop_boxes": (_boxes, "a list of 4-number boxes"), "gt_boxes": (_boxes, "a list of 4-number boxes"),
               "invalid_calls": (_integer, "an integer")},
    "training": {"step": (_integer, "an integer"), "rank": (_integer, "an integer"),
                 "group": (_integer, "an integer"), "sample_id": (lambda v: isinstance(v, str), "a string"),
                 "advantage": (_number, "a number"),
                 "scores": (lambda v: isinstance(v, dict) and all(_number(v.get(k)) for k in SCORES),
                            f"an object with the numbers {list(SCORES)}")},
    "evaluation": {"id": (lambda v: isinstance(v, str), "a string"), "budget": (_integer, "an integer"),
                   "mode": (lambda v: isinstance(v, str), "a string"),
                   "correct": (_optional(lambda v: isinstance(v, bool)), "a boolean or null"),
                   "format_ok": (lambda v: isinstance(v, bool), "a boolean"),
                   "visual_tokens": (_integer, "an integer")},
    "images": {"images": (_images, "an object with a string 'global' and a list of strings 'crops'"),
               "display_size": (_numbers(2), "2 numbers"), "gt_boxes_display": (_boxes, "a list of 4-number boxes"),
               "events": (lambda v: isinstance(v, list) and all(map(_event, v)),
                          "a list of tool events (kind, turn, bbox, box, crop_size, error)"),
               "turns": (_texts, "a list of strings")},
}
def check_record(record: dict, kind: str, where: str) -> dict:
    """``record`` when it holds every field the page shows of a ``kind`` record, with the right types; else a
    :class:`JsonlError` naming ``where`` (file and line) and the field."""
    groups = [FIELDS["common"], FIELDS[kind]] + ([FIELDS["images"]] if "images" in record else [])
    for name, (test, wanted) in (item for group in groups for item in group.items()):
        if name not in record:
            raise JsonlError(f"{where}: not a {kind} record (no field {name!r})")
        if not test(record[name]):
            raise JsonlError(f"{where}: field {name!r} must be {wanted}, got {str(record[name])[:80]!r}")
    return record


def read_jsonl(paths: Iterable[Path], kind: str) -> list[dict]:
    """The ``kind`` records of every complete line of ``paths``, read only (a run may still be appending to them);
    a line that is not such a record is refused with its file and line."""
    return [check_record(record, kind, f"{path}:{number}")
            for path in paths for number, record in read_json_lines(path, repair=False)]


def load_report(folder: str | Path) -> Report:
    """The report of a training run folder or an evaluation results folder; raises ``FileNotFoundError`` for
    a folder that is neither."""
    folder = Path(folder)
    if (folder / "records.jsonl").is_file():
        return Report("evaluation", folder, read_jsonl([folder / "records.jsonl"], "evaluation"),
                      [folder / "records.jsonl"])
    ranks = sorted((folder / "rollouts").glob("rank*.jsonl"))
    if ranks:
        records = sorted(read_jsonl(ranks, "training"), key=lambda r: r["step"])
        return Report("training", folder / "rollouts", records, ranks)
    raise FileNotFoundError(f"{folder} holds neither rollouts/rank*.jsonl (a training run) nor records.jsonl "
                            "(an evaluation results folder)")


def data_uri(folder: Path, name: str) -> str | None:
    """The image ``folder/name`` as a ``data:image/jpeg;base64,...`` URI; None when it is missing or lies outside
    ``folder`` (a crafted path or link never embeds another file)."""
    root = folder.resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
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
