"""The kept trajectories of a training step as a wandb table: the global view with predicted (and GT) boxes, the
returned crops side by side, the decoded turns, the reward terms and the group advantage."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

REWARD_TERMS = ("total", "acc", "fmt", "tool", "iou", "l1")
COLUMNS = ("step", "sample_id", "group", "question", "answer", "prediction", "advantage", *REWARD_TERMS,
           "crops", "invalid_calls", "turns", "global_view", "crop_images")
BOX_CLASSES = {0: "pred", 1: "gt"}


def box_data(boxes: Sequence[Sequence[float]], class_id: int, scale: tuple[float, float]) -> list[dict]:
    """wandb box entries (pixel domain of the thumbnail) for ``boxes`` given in the displayed frame."""
    sx, sy = scale
    return [{"position": {"minX": b[0] * sx, "minY": b[1] * sy, "maxX": b[2] * sx, "maxY": b[3] * sy},
             "domain": "pixel", "class_id": class_id, "box_caption": BOX_CLASSES[class_id]} for b in boxes]


def crop_strip(paths: Sequence[Path]) -> Image.Image | None:
    """The crop thumbnails pasted left to right (None without crops)."""
    if not paths:
        return None
    images = [Image.open(p).convert("RGB") for p in paths]
    strip = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    x = 0
    for image in images:
        strip.paste(image, (x, 0))
        x += image.width
    return strip


def table_row(record: dict, folder: Path) -> list:
    """One table row of a rollout record with images (paths relative to ``folder``)."""
    import wandb

    view = Image.open(folder / record["images"]["global"]).convert("RGB")
    scale = (view.width / record["display_size"][0], view.height / record["display_size"][1])
    boxes = {"predictions": {"box_data": box_data(record["pred_boxes"], 0, scale), "class_labels": BOX_CLASSES},
             "ground_truth": {"box_data": box_data(record["gt_boxes_display"], 1, scale),
                              "class_labels": BOX_CLASSES}}
    strip = crop_strip([folder / p for p in record["images"]["crops"]])
    scores = record["scores"]
    return [record["step"], record["sample_id"], record["group"], record["question"], record["answer"],
            record["prediction"], record["advantage"], *(scores[k] for k in REWARD_TERMS), len(record["crop_boxes"]),
            record["invalid_calls"], "\n---\n".join(record["turns"]), wandb.Image(view, boxes=boxes),
            wandb.Image(strip) if strip is not None else None]


def log_trajectory_table(loggers: Sequence, folder: str | Path, records: Sequence[dict]) -> None:
    """Log ``records`` (kept rollout records) as the ``rollouts/trajectories`` table to every wandb logger."""
    from lightning.pytorch.loggers import WandbLogger

    wandb_loggers = [logger for logger in loggers if isinstance(logger, WandbLogger)]
    if not wandb_loggers or not records:
        return
    rows = [table_row(record, Path(folder)) for record in records]
    for logger in wandb_loggers:
        logger.log_table("rollouts/trajectories", columns=list(COLUMNS), data=rows)
