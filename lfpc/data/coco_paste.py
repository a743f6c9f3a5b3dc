"""Synthetic high-resolution grounding data from real detection annotations (the paper's future work, Sec. 14).

The paper suggests synthesising a large high-resolution VQA set with box annotations "by cropping objects from
general-purpose" detection data. Here one object of a COCO-format dataset is cut out (by its polygon when it has
one, else its box) and pasted, small, onto a high-resolution background; the question asks which object the image
shows (four options: the object's category and three others, or ``free_form``: the category name), and the nested
boxes are B1 = the pasted object, then B1 grown around its centre (as :mod:`lfpc.data.synthetic` does).

Backgrounds: by default the synthetic low-contrast clutter of :mod:`lfpc.data.scenery`, which shows no real
object, so the question has one answer; with a folder of photos (``backgrounds``) a photo may itself show one of
the distractor categories, so review such data or prefer the free-form question.

Input: a COCO annotation file (``images``: ``id, file_name``; ``annotations``: ``image_id, bbox [x, y, w, h],
category_id, iscrowd`` and optional polygon ``segmentation``; ``categories``: ``id, name``) and its image folder.
CLI: ``python -m lfpc.data.coco_paste ANNOTATIONS IMAGES OUT --num N [--size W H] [--backgrounds DIR]``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lfpc.data.records import LETTERS, DatasetError, Sample, write_jsonl
from lfpc.data.scenery import add_grain, background, nested_boxes, place
from lfpc.files import atomic_output, check_distinct

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
JPEG_QUALITY = 92


@dataclass(frozen=True)
class CocoObject:
    """One annotated object: its image file, its box ``(x1, y1, x2, y2)``, its category and polygon(s)."""

    image: Path
    box: tuple[float, float, float, float]
    category: str
    polygons: tuple[tuple[float, ...], ...] = ()


def load_coco_objects(annotations: str | Path, images: str | Path, min_side: int = 32) -> list[CocoObject]:
    """The non-crowd objects of a COCO annotation file whose box sides are at least ``min_side`` px."""
    path = Path(annotations)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {img["id"]: Path(images) / img["file_name"] for img in data["images"]}
        names = {cat["id"]: cat["name"] for cat in data["categories"]}
        objects = []
        for ann in data["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("iscrowd") or min(w, h) < min_side:
                continue
            segmentation = ann.get("segmentation")
            polygons = tuple(tuple(map(float, p)) for p in segmentation) if isinstance(segmentation, list) else ()
            objects.append(CocoObject(files[ann["image_id"]], (x, y, x + w, y + h), names[ann["category_id"]],
                                      polygons))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: not a COCO annotation file ({type(err).__name__}: {err})") from None
    if len({o.category for o in objects}) < len(LETTERS[:4]):
        raise DatasetError(f"{path}: needs objects of at least 4 categories (of side >= {min_side} px) "
                           "for four-option questions")
    return objects


def _cutout(obj: CocoObject) -> Image.Image:
    """The object as an RGBA image of its box: opaque inside its polygons (the whole box without any)."""
    with Image.open(obj.image) as source:
        crop = source.convert("RGB").crop(tuple(round(v) for v in obj.box))
    mask = Image.new("L", crop.size, 0 if obj.polygons else 255)
    draw = ImageDraw.Draw(mask)
    for polygon in obj.polygons:
        points = [(polygon[i] - obj.box[0], polygon[i + 1] - obj.box[1]) for i in range(0, len(polygon) - 1, 2)]
        if len(points) >= 3:
            draw.polygon(points, fill=255)
    crop.putalpha(mask)
    return crop


def _backdrop(rng: np.random.Generator, size: tuple[int, int], backgrounds: Sequence[Path]) -> Image.Image:
    if not backgrounds:
        return background(rng, size)
    with Image.open(backgrounds[int(rng.integers(len(backgrounds)))]) as photo:
        return photo.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def make_paste_sample(index: int, objects: Sequence[CocoObject], out_dir: Path, seed: int = 0,
                      image_size: tuple[int, int] = (3840, 2160), object_side: tuple[float, float] = (0.02, 0.05),
                      backgrounds: Sequence[Path] = (), free_form: bool = False) -> Sample:
    """Compose sample ``index`` (deterministic in ``seed`` and ``index``), write its image to ``out_dir/images``.

    The object's longer side becomes a fraction ``object_side`` of the image's shorter side.
    """
    rng = np.random.default_rng([seed, index])
    obj = objects[int(rng.integers(len(objects)))]
    cutout = _cutout(obj)
    scale = rng.uniform(*object_side) * min(image_size) / max(cutout.size)
    cutout = cutout.resize((max(1, round(cutout.width * scale)), max(1, round(cutout.height * scale))),
                           Image.Resampling.LANCZOS)
    image = _backdrop(rng, image_size, backgrounds)
    box = place(rng, image_size, cutout.size, [], margin=max(cutout.size), gap=0)
    if box is None:
        raise ValueError(f"a {cutout.width}x{cutout.height} object does not fit a {image_size} image")
    x, y = round(box[0]), round(box[1])
    image.paste(cutout, (x, y), cutout)
    if not backgrounds:
        image = add_grain(rng, image)
    sample_id = f"coco-paste-s{seed}-{index}"
    path = out_dir / "images" / f"{sample_id}.jpg"
    with atomic_output(path) as tmp:  # a reader never sees half an image
        image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
    categories = sorted({o.category for o in objects} - {obj.category})
    options = [obj.category, *(categories[i] for i in rng.choice(len(categories), 3, replace=False))]
    rng.shuffle(options)
    pasted = (x, y, x + cutout.width, y + cutout.height)
    if free_form:
        question = "What object can be seen in the image? Answer with its name."
    else:
        question = "Which object can be seen in the image?"
    return Sample(id=sample_id, image_path=str(path), question=question,
                  options=() if free_form else tuple(options),
                  answer=obj.category if free_form else LETTERS[options.index(obj.category)],
                  boxes=nested_boxes([pasted], image_size), category="single", source="coco-paste",
                  image_size=image_size, meta={"question_type": "object", "object": obj.category,
                                               "source_image": str(obj.image), "source_box": list(obj.box)})


def generate_coco_paste(annotations: str | Path, images: str | Path, out: str | Path, num_samples: int,
                        seed: int = 0, image_size: tuple[int, int] = (3840, 2160),
                        object_side: tuple[float, float] = (0.02, 0.05), backgrounds: str | Path | None = None,
                        free_form: bool = False, min_side: int = 32) -> list[Sample]:
    """Write ``num_samples`` pasted-object samples to the JSONL ``out`` (images in ``out``'s folder/images)."""
    check_distinct([annotations], [out])
    objects = load_coco_objects(annotations, images, min_side)
    photos = []
    if backgrounds is not None:
        photos = sorted(p for p in Path(backgrounds).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    out = Path(out)
    samples = [make_paste_sample(i, objects, out.parent, seed, image_size, object_side, photos, free_form)
               for i in range(num_samples)]
    write_jsonl(samples, out)
    return samples


def main(argv: Sequence[str] | None = None) -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m lfpc.data.coco_paste", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", help="COCO-format annotation JSON")
    parser.add_argument("images", help="the annotation file's image folder")
    parser.add_argument("out", help="the JSONL to write (images go to its folder/images)")
    parser.add_argument("--num", type=int, required=True, help="samples to generate")
    parser.add_argument("--size", type=int, nargs=2, default=(3840, 2160), metavar=("W", "H"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--object-side", type=float, nargs=2, default=(0.02, 0.05), metavar=("MIN", "MAX"),
                        help="the object's longer side as a fraction of the image's shorter side")
    parser.add_argument("--backgrounds", default=None, help="folder of background photos (default: synthetic)")
    parser.add_argument("--free-form", action="store_true", help="ask for the object's name, without options")
    args = parser.parse_args(argv)
    samples = generate_coco_paste(args.annotations, args.images, args.out, args.num, args.seed, tuple(args.size),
                                  tuple(args.object_side), args.backgrounds, args.free_form)
    print(f"wrote {len(samples)} samples to {args.out}")


if __name__ == "__main__":
    main()
