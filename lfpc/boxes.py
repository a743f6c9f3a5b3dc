"""Axis-aligned box geometry in pixel coordinates: ``(x1, y1, x2, y2)`` with x1 < x2, y1 < y2."""

from __future__ import annotations

import math
from typing import Sequence

Box = tuple[float, float, float, float]
Size = tuple[int, int]  # (width, height)


def as_box(values: Sequence[float]) -> Box:
    """Return ``values`` as a 4-tuple of floats; raise ``ValueError`` unless there are exactly 4 finite numbers."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"a box needs 4 numbers [x1, y1, x2, y2], got the string {values!r}")
    try:
        items = list(values)
    except TypeError:
        raise ValueError(f"a box needs 4 numbers [x1, y1, x2, y2], got {values!r}") from None
    if len(items) != 4:
        raise ValueError(f"a box needs 4 numbers [x1, y1, x2, y2], got {len(items)}")
    if any(isinstance(v, (bool, str, bytes)) for v in items):
        raise ValueError(f"box coordinates must be numbers, got {items!r}")
    try:
        x1, y1, x2, y2 = (float(v) for v in items)
    except (TypeError, ValueError) as err:
        raise ValueError(f"box coordinates must be numbers, got {items!r}") from err
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"box coordinates must be finite, got {items!r}")
    return (x1, y1, x2, y2)


def box_problem(box: Box, size: Size | None = None) -> str | None:
    """Describe what is wrong with ``box`` (ordering, inside ``size``), or None when it is valid."""
    x1, y1, x2, y2 = box
    if not (x1 < x2 and y1 < y2):
        return f"box {list(box)} is not ordered as x1<x2, y1<y2"
    if size is not None:
        width, height = size
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            return f"box {list(box)} lies outside the {width}x{height} image"
    return None


def area(box: Box) -> float:
    """Area of ``box``; 0 for a degenerate box."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def intersection(a: Box, b: Box) -> float:
    """Area of the overlap of ``a`` and ``b``."""
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when both are empty)."""
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def best_iou(preds: Sequence[Box], targets: Sequence[Box]) -> float:
    """The largest IoU of any box of ``preds`` with any box of ``targets`` (0 when either is empty)."""
    return max((iou(p, t) for p in preds for t in targets), default=0.0)


def mean_target_iou(crops: Sequence[Box], targets: Sequence[Box]) -> float | None:
    """Per target box, the best IoU of any crop with it, averaged over the targets (V*'s per-target scoring of
    two-target questions); None without crops or targets."""
    if not crops or not targets:
        return None
    return sum(max(iou(crop, target) for crop in crops) for target in targets) / len(targets)


def coverage(pred: Box, target: Box) -> float:
    """Fraction of ``target`` covered by ``pred``: area(pred ∩ target) / area(target)."""
    target_area = area(target)
    return intersection(pred, target) / target_area if target_area > 0 else 0.0


def contains(outer: Box, inner: Box) -> bool:
    """True when ``inner`` lies inside ``outer`` (borders may touch)."""
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def scale_box(box: Box, from_size: Size, to_size: Size) -> Box:
    """Map ``box`` from an image of ``from_size`` to the same region of an image of ``to_size``."""
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def clip_box(box: Box, size: Size) -> Box:
    """Clip ``box`` to the image rectangle ``[0, width] x [0, height]``."""
    width, height = size
    return (min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width), min(max(box[3], 0.0), height))


def normalized_l1(pred: Box, target: Box, size: Size) -> float:
    """Mean absolute corner difference, x normalized by width and y by height (0 = identical)."""
    width, height = size
    return (abs(pred[0] - target[0]) / width + abs(pred[1] - target[1]) / height
            + abs(pred[2] - target[2]) / width + abs(pred[3] - target[3]) / height) / 4.0
