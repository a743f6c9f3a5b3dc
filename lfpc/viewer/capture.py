"""What the trajectory viewer needs from one trajectory: its boxes in both frames, per-turn text, and the images
the model saw (global view and crops) saved as bounded-size thumbnails."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from lfpc.agent.env import crop_to_original
from lfpc.boxes import scale_box
from lfpc.files import atomic_output
from lfpc.rollout.episodes import Trajectory

THUMBNAIL_QUALITY = 85  # JPEG quality of saved thumbnails


def view_fields(trajectory: Trajectory) -> dict:
    """Boxes in the ORIGINAL frame (``gt_boxes``, ``crop_boxes``) and in the DISPLAYED frame the model predicted in
    (``gt_boxes_display``, ``pred_boxes``: the ``bbox_2d`` of every successful crop; one drawn on an earlier crop,
    ``source`` k > 0, is mapped through that crop), the image sizes, the decoded assistant ``turns`` and the
    environment ``events`` (each crop's ``crop_size``, each invalid call's ``error``)."""
    sample, display = trajectory.sample, trajectory.display_size
    gt_display = ([list(scale_box(b, sample.image_size, display)) for b in sample.boxes]
                  if sample.image_size else [])
    return {"image_size": list(sample.image_size) if sample.image_size else None, "display_size": list(display),
            "gt_boxes": [list(b) for b in sample.boxes], "gt_boxes_display": gt_display,
            "crop_boxes": [list(b) for b in trajectory.outcome.crop_boxes],
            "pred_boxes": _pred_boxes(trajectory),
            "turns": list(trajectory.turns), "events": list(trajectory.events)}


def _pred_boxes(trajectory: Trajectory) -> list[list[float]]:
    """The predicted box of every successful crop in the DISPLAYED frame (a box drawn on the k-th crop mapped
    through the region that crop shows; left in its own frame when the original's size is unknown)."""
    crops = [e for e in trajectory.events if e.get("box") is not None]
    original = trajectory.sample.image_size
    boxes = []
    for event in crops:
        source = event.get("source") or 0
        if source == 0 or original is None:
            boxes.append(event["bbox"])
            continue
        shown = crops[source - 1]
        box = crop_to_original(tuple(event["bbox"]), tuple(shown["crop_size"]), tuple(shown["region"]))
        boxes.append(list(scale_box(box, original, trajectory.display_size)))
    return boxes


def thumbnail(image: Image.Image, max_px: int) -> Image.Image:
    """A copy of ``image`` whose longest side is at most ``max_px`` (aspect ratio kept)."""
    copy = image.convert("RGB")
    copy.thumbnail((max_px, max_px), Image.Resampling.BICUBIC)
    return copy


def save_thumbnails(trajectory: Trajectory, folder: Path, stem: str, max_px: int) -> dict:
    """Save the global view and every returned crop as JPEG thumbnails ``<folder>/<stem>-<k>.jpg`` (k = 0: the
    global view); returns ``{"global": name, "crops": [names]}`` relative to ``folder``'s parent."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, image in enumerate(trajectory.context.images):
        name = f"{stem}-{k}.jpg"
        with atomic_output(folder / name) as tmp:  # a killed run never leaves half an image for the viewer
            thumbnail(image, max_px).save(tmp, format="JPEG", quality=THUMBNAIL_QUALITY)
        names.append(f"{folder.name}/{name}")
    return {"global": names[0], "crops": names[1:]}
