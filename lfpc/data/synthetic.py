"""Deterministic synthetic high-resolution VQA data: small targets hidden in a cluttered image.

Every image holds a few small coloured shapes and text signs (about 1-3 % of the image side) among distractors on
a low-contrast textured background, so their details vanish when the image is downsampled to ~512 px. Each image
gets one four-option question about one target (``single``: colour, text, shape) or several (``cross``: relative
position, largest of four) and nested ground-truth boxes: B1 = the target(s) padded by 2 px, then B1 grown
2.5x and 6x around its centre (clipped to the image). This is the project's default dataset and its test data.

CLI: ``python -m lfpc.data.synthetic --out DIR --num N --size W H --seed S``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lfpc.boxes import Box
from lfpc.data.records import LETTERS, Sample, write_jsonl
from lfpc.data.scenery import add_grain, background, nested_boxes, pick, place
from lfpc.files import atomic_output, entry_lock, write_json

GENERATOR_VERSION = 1  # bump whenever the output for the same parameters changes (invalidates caches)
JPEG_QUALITY = 92
MIN_SIDE = 256

COLORS: dict[str, tuple[int, int, int]] = {  # saturated, hues about 25-60 degrees apart
    "red": (220, 30, 30),        # hue   0
    "orange": (245, 135, 20),    # hue  31
    "yellow": (235, 215, 25),    # hue  54
    "green": (40, 170, 60),      # hue 129
    "cyan": (20, 185, 205),      # hue 186
    "blue": (35, 75, 225),       # hue 227
    "purple": (140, 55, 200),    # hue 275
    "pink": (235, 70, 170),      # hue 324
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon")
SINGLE_TYPES = ("color", "text", "shape")
CROSS_TYPES = ("relation", "largest")
QUESTION_TYPES = SINGLE_TYPES + CROSS_TYPES
RELATIONS = {"left": "left of it", "right": "right of it", "above": "above it", "below": "below it"}
TEXT_ALPHABET = "ABCDEFHJKMNPRTUVWXY2345789"  # no look-alikes (O/0/Q/D, I/1/L, S/5, G/6, Z/2, B/8)

SHAPE_SIZE = (0.01, 0.03)   # shape side, fraction of the shorter image side
FONT_SIZE = (0.006, 0.011)  # sign font size, fraction of the shorter image side
MIN_SHAPE_PX, MIN_FONT_PX = 12, 10


def _ring(count: int, radii: Sequence[float], start_deg: float) -> list[tuple[float, float]]:
    """Polygon with ``count`` corners at equal angles, radius cycling through ``radii`` (unit-size shape)."""
    return [(radii[k % len(radii)] * math.cos(math.radians(start_deg + 360 * k / count)),
             radii[k % len(radii)] * math.sin(math.radians(start_deg + 360 * k / count))) for k in range(count)]


# Outlines of a shape of size 1 centred on (0, 0); the circle is drawn as an ellipse.
_OUTLINES: dict[str, list[tuple[float, float]]] = {
    "circle": [(-0.5, -0.5), (0.5, 0.5)],
    "square": [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)],
    "triangle": [(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)],
    "star": _ring(10, (0.5, 0.2), -90),
    "diamond": [(0.0, -0.5), (0.4, 0.0), (0.0, 0.5), (-0.4, 0.0)],
    "hexagon": _ring(6, (0.5,), 0),
}


@lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class _Thing:
    """One object of a scene: a coloured shape, or a sign (``shape == "sign"``) with ``text`` on a coloured plate."""

    shape: str
    color: str
    size: int  # side of a shape, font size of a sign
    text: str = ""

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def extent(self) -> Box:
        """Tight box around the drawn object relative to its anchor (a shape's centre, a sign's text origin)."""
        if self.shape == "sign":
            x1, y1, x2, y2 = _font(self.size).getbbox(self.text)
            pad = max(2, self.size // 4)
            return (x1 - pad, y1 - pad, x2 + pad, y2 + pad)
        xs, ys = zip(*_OUTLINES[self.shape])
        return (min(xs) * self.size, min(ys) * self.size, max(xs) * self.size, max(ys) * self.size)

    def footprint(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.extent()
        return (x2 - x1, y2 - y1)

    def draw(self, canvas: ImageDraw.ImageDraw, box: Box) -> None:
        """Draw the object so that its tight box starts at ``box``'s top-left corner."""
        ex1, ey1, _, _ = self.extent()
        ax, ay = box[0] - ex1, box[1] - ey1
        fill = COLORS[self.color]
        if self.shape == "sign":
            canvas.rectangle(box, fill=fill, outline=(40, 40, 40))
            ink = (0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 140 else (255, 255, 255)
            canvas.text((ax, ay), self.text, fill=ink, font=_font(self.size))
            return
        points = [(ax + px * self.size, ay + py * self.size) for px, py in _OUTLINES[self.shape]]
        if self.shape == "circle":
            canvas.ellipse(points, fill=fill)
        else:
            canvas.polygon(points, fill=fill)


@dataclass
class _Question:
    """A question about ``targets`` laid out at ``offsets`` (their top-left corners relative to the group's)."""

    targets: list[_Thing]
    offsets: list[tuple[float, float]]
    text: str
    correct: str
    wrong: list[str]
    allows: Callable[[_Thing], bool]  # may this distractor appear without making the question ambiguous?
    meta: dict


def _others(rng: np.random.Generator, items: Sequence[str], exclude: Sequence[str], count: int) -> list[str]:
    return pick(rng, [item for item in items if item not in exclude], count)


def _shape_size(rng: np.random.Generator, side: int) -> int:
    return max(MIN_SHAPE_PX, round(rng.uniform(*SHAPE_SIZE) * side))


def _random_text(rng: np.random.Generator) -> str:
    return "".join(pick(rng, TEXT_ALPHABET) for _ in range(int(rng.integers(2, 5))))


def _similar_texts(rng: np.random.Generator, text: str, count: int) -> list[str]:
    """``count`` distinct strings that differ from ``text`` in one or two characters."""
    found: list[str] = []
    while len(found) < count:
        chars = list(text)
        for pos in pick(rng, range(len(chars)), int(rng.integers(1, 3))):
            chars[pos] = pick(rng, [c for c in TEXT_ALPHABET if c != text[pos]])
        candidate = "".join(chars)
        if candidate != text and candidate not in found:
            found.append(candidate)
    return found


def _color_question(rng: np.random.Generator, side: int) -> _Question:
    target = _Thing(pick(rng, SHAPES), pick(rng, list(COLORS)), _shape_size(rng, side))
    return _Question([target], [(0.0, 0.0)], f"What is the color of the small {target.shape}?", target.color,
                     _others(rng, list(COLORS), [target.color], 3), lambda t: t.shape != target.shape, {})


def _text_question(rng: np.random.Generator, side: int) -> _Question:
    font_size = max(MIN_FONT_PX, round(rng.uniform(*FONT_SIZE) * side))
    target = _Thing("sign", pick(rng, list(COLORS)), font_size, _random_text(rng))
    return _Question([target], [(0.0, 0.0)], f"What is written on the small {target.color} sign?", target.text,
                     _similar_texts(rng, target.text, 3),
                     lambda t: t.shape != "sign" or (t.color != target.color and t.text != target.text), {})


def _shape_question(rng: np.random.Generator, side: int) -> _Question:
    target = _Thing(pick(rng, SHAPES), pick(rng, list(COLORS)), _shape_size(rng, side))
    return _Question([target], [(0.0, 0.0)], f"What is the shape of the small {target.color} object?",
                     target.shape, _others(rng, SHAPES, [target.shape], 3), lambda t: t.color != target.color, {})


def _beside(rng: np.random.Generator, first: _Thing, second: _Thing, relation: str) -> list[tuple[float, float]]:
    """Top-left offsets putting ``first`` clearly ``relation`` (left/right/above/below) of ``second``.

    Along the relation's axis the two are apart by a gap of 1.5-5 object sizes; across it their centres are
    at most a quarter of the smaller object apart, so their ranges overlap and no other relation holds.
    """
    (w1, h1), (w2, h2) = first.footprint(), second.footprint()
    horizontal = relation in ("left", "right")
    gap = rng.uniform(1.5, 5.0) * max(first.size, second.size)
    along = ((w1 + w2) / 2 if horizontal else (h1 + h2) / 2) + gap
    across = rng.uniform(-0.25, 0.25) * (min(h1, h2) if horizontal else min(w1, w2))
    sign = -1.0 if relation in ("left", "above") else 1.0  # first's centre minus second's, along the axis
    dx, dy = (sign * along, across) if horizontal else (across, sign * along)
    corners = [(dx - w1 / 2, dy - h1 / 2), (-w2 / 2, -h2 / 2)]
    left, top = min(x for x, _ in corners), min(y for _, y in corners)
    return [(x - left, y - top) for x, y in corners]


def _relation_question(rng: np.random.Generator, side: int) -> _Question:
    first = _Thing(pick(rng, SHAPES), pick(rng, list(COLORS)), _shape_size(rng, side))
    second = first
    while second.name == first.name:
        second = _Thing(pick(rng, SHAPES), pick(rng, list(COLORS)), _shape_size(rng, side))
    relation = pick(rng, list(RELATIONS))
    names = {first.name, second.name}
    return _Question([first, second], _beside(rng, first, second, relation),
                     f"Where is the {first.name} relative to the {second.name}?", RELATIONS[relation],
                     [text for key, text in RELATIONS.items() if key != relation],
                     lambda t: t.name not in names, {"relation": relation})


def _largest_question(rng: np.random.Generator, side: int) -> _Question:
    """Four same-shape objects of different colours in a 2x2 cluster; one is 1.8x the side of the others."""
    shape = pick(rng, SHAPES)
    base = max(MIN_SHAPE_PX, rng.uniform(SHAPE_SIZE[0], SHAPE_SIZE[1] / 1.8) * side)
    largest = int(rng.integers(4))
    targets = [_Thing(shape, color, round(base * (1.8 if k == largest else rng.uniform(0.9, 1.1))))
               for k, color in enumerate(pick(rng, list(COLORS), 4))]
    cell = max(max(t.footprint()) for t in targets)
    step = cell + rng.uniform(1.0, 2.5) * targets[largest].size
    offsets = [((k % 2) * step + rng.uniform(0, cell - t.footprint()[0]),
                (k // 2) * step + rng.uniform(0, cell - t.footprint()[1])) for k, t in enumerate(targets)]
    names = [t.name for t in targets]
    return _Question(targets, offsets, f"Which of these {shape}s is the largest?", f"the {names[largest]}",
                     [f"the {name}" for k, name in enumerate(names) if k != largest],
                     lambda t: t.name not in names, {})


_BUILDERS: dict[str, Callable[[np.random.Generator, int], _Question]] = {
    "color": _color_question, "text": _text_question, "shape": _shape_question,
    "relation": _relation_question, "largest": _largest_question,
}


def _distractor(rng: np.random.Generator, side: int, question: _Question, sign: bool) -> _Thing:
    """A random shape or sign that keeps the question's referring expressions unique."""
    while True:
        if sign:
            font_size = max(MIN_FONT_PX, round(rng.uniform(*FONT_SIZE) * side))
            thing = _Thing("sign", pick(rng, list(COLORS)), font_size, _random_text(rng))
        else:
            thing = _Thing(pick(rng, SHAPES), pick(rng, list(COLORS)), _shape_size(rng, side))
        if question.allows(thing):
            return thing


def make_sample(index: int, seed: int = 0, image_size: tuple[int, int] = (2048, 2048),
                size_range: tuple[int, int] | None = None,
                question_types: Sequence[str] = QUESTION_TYPES) -> tuple[Image.Image, Sample]:
    """Render sample ``index`` of the dataset with ``seed``: its image and its record.

    The record's ``image_path`` is ``images/<id>.jpg`` (relative to the dataset folder). The question type
    cycles through ``question_types``; with ``size_range=(lo, hi)`` width and height are drawn from [lo, hi].
    """
    rng = np.random.default_rng([seed, index])
    width, height = rng.integers(size_range[0], size_range[1] + 1, 2) if size_range else image_size
    size = (int(width), int(height))
    side = min(size)
    question_type = question_types[index % len(question_types)]
    question = _BUILDERS[question_type](rng, side)
    image = background(rng, size)
    draw = ImageDraw.Draw(image)
    margin = round(0.02 * side)
    group_w = max(ox + t.footprint()[0] for t, (ox, _) in zip(question.targets, question.offsets))
    group_h = max(oy + t.footprint()[1] for t, (_, oy) in zip(question.targets, question.offsets))
    group = place(rng, size, (group_w, group_h), [], margin, 0.0)
    if group is None:
        raise ValueError(f"image size {size} is too small for a '{question_type}' question")
    target_boxes = [(group[0] + ox, group[1] + oy, group[0] + ox + t.footprint()[0], group[1] + oy + t.footprint()[1])
                    for t, (ox, oy) in zip(question.targets, question.offsets)]
    occupied = [group]
    num_signs = int(rng.integers(1, 3) if question_type == "text" else rng.integers(0, 3))
    for k in range(int(rng.integers(5, 11)) + num_signs):
        thing = _distractor(rng, side, question, sign=k < num_signs)
        box = place(rng, size, thing.footprint(), occupied, margin, max(8.0, 0.01 * side))
        if box is not None:
            thing.draw(draw, box)
            occupied.append(box)
    for thing, box in zip(question.targets, target_boxes):
        thing.draw(draw, box)
    image = add_grain(rng, image)

    options = [question.correct, *question.wrong]
    options = [options[int(i)] for i in rng.permutation(len(options))]
    sample_id = f"synthetic-{seed}-{index:06d}"
    targets = [{"shape": t.shape, "color": t.color, **({"text": t.text} if t.text else {}),
                "box": [round(v, 1) for v in box]} for t, box in zip(question.targets, target_boxes)]
    sample = Sample(id=sample_id, image_path=f"images/{sample_id}.jpg", question=question.text,
                    options=tuple(options), answer=LETTERS[options.index(question.correct)],
                    boxes=nested_boxes(target_boxes, size),
                    category="cross" if question_type in CROSS_TYPES else "single", source="synthetic",
                    image_size=size, meta={"question_type": question_type, "targets": targets,
                                           "num_objects": len(occupied) - 1 + len(targets), **question.meta})
    return image, sample


def _check_params(num_samples: int, image_size: Sequence[int], seed: int, size_range: Sequence[int] | None,
                  question_types: Sequence[str]) -> None:
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    sides = list(size_range) if size_range else list(image_size)
    if len(sides) != 2 or min(sides) < MIN_SIDE:
        raise ValueError(f"image sides must be 2 numbers >= {MIN_SIDE}, got {sides}")
    if size_range and size_range[0] > size_range[1]:
        raise ValueError(f"size_range must be (min_side, max_side), got {list(size_range)}")
    unknown = [t for t in question_types if t not in _BUILDERS]
    if not question_types or unknown:
        raise ValueError(f"question_types must be a non-empty subset of {list(QUESTION_TYPES)}, got {list(question_types)}")


TASKS = ("scenes", "patterns")


def _task_version(task: str) -> int:
    """Generator version of a non-default task (part of the cache key, so a changed generator regenerates)."""
    from lfpc.data.patterns import GENERATOR_VERSION as patterns_version
    return {"patterns": patterns_version}[task]


def generate_synthetic(out_dir: str | Path, num_samples: int, image_size: tuple[int, int] = (2048, 2048),
                       seed: int = 0, size_range: tuple[int, int] | None = None,
                       question_types: Sequence[str] = QUESTION_TYPES, task: str = "scenes") -> Path:
    """Write ``num_samples`` samples to ``out_dir`` (``images/<id>.jpg`` + ``data.jsonl``); return the JSONL path.

    Cached: when ``out_dir/params.json`` (written last) records the same parameters, nothing is rewritten.
    Same parameters give byte-identical files. ``image_size`` is (width, height); ``size_range=(lo, hi)``
    instead draws each image's width and height from [lo, hi]. ``task``: ``scenes`` (:func:`make_sample`, the
    cluttered multi-question scenes) or ``patterns`` (:func:`lfpc.data.patterns.make_pattern_sample`, the
    miniature's information-gap task; ``question_types`` does not apply).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    _check_params(num_samples, image_size, seed, size_range, question_types)
    out = Path(out_dir)
    jsonl, params_path = out / "data.jsonl", out / "params.json"
    params = {"generator_version": GENERATOR_VERSION, "num_samples": num_samples,
              "image_size": None if size_range else list(image_size),
              "seed": seed, "size_range": list(size_range) if size_range else None,
              "question_types": list(question_types), "jpeg_quality": JPEG_QUALITY,
              **({"task": task, "task_version": _task_version(task)} if task != "scenes" else {})}
    with entry_lock(out, wait=True):  # a second process generating the same folder waits, then reuses it
        if jsonl.is_file() and params_path.is_file() and json.loads(params_path.read_text()) == params:
            return jsonl
        params_path.unlink(missing_ok=True)  # the folder is incomplete until params.json is written again
        (out / "images").mkdir(parents=True, exist_ok=True)
        samples = []
        for index in range(num_samples):
            if task == "patterns":
                from lfpc.data.patterns import make_pattern_sample
                image, sample = make_pattern_sample(index, seed, tuple(image_size), size_range)
            else:
                image, sample = make_sample(index, seed, tuple(image_size), size_range, question_types)
            with atomic_output(out / sample.image_path) as tmp:  # a reader never sees half an image
                image.save(tmp, "JPEG", quality=JPEG_QUALITY)
            samples.append(sample)
        write_jsonl(samples, jsonl)
        write_json(params_path, params, indent=2)
    return jsonl


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: generate (or reuse) a synthetic dataset and print the JSONL path."""
    parser = argparse.ArgumentParser(description="Generate the synthetic high-resolution VQA dataset.")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--num", type=int, default=256, help="number of samples")
    parser.add_argument("--size", type=int, nargs=2, default=(2048, 2048), metavar=("W", "H"), help="image size")
    parser.add_argument("--size-range", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                        help="draw each image's width and height from [MIN, MAX] instead of --size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--question-types", nargs="+", default=list(QUESTION_TYPES), choices=QUESTION_TYPES)
    parser.add_argument("--task", default="scenes", choices=TASKS)
    args = parser.parse_args(argv)
    print(generate_synthetic(args.out, args.num, tuple(args.size), args.seed,
                             tuple(args.size_range) if args.size_range else None, args.question_types, args.task))


if __name__ == "__main__":
    main()
