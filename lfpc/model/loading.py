"""The one place that loads models and processors of a supported backbone family, from local folders only.

Works the same for a real checkpoint folder (Qwen2.5-VL-7B-Instruct, Qwen3-VL-8B-Instruct) and for a tiny build
(:mod:`lfpc.model.tiny`); the family comes from the folder's ``config.json`` (:mod:`lfpc.model.families`).
The processor is image-only: videos are not used by this project, and without an importable torchvision
transformers has no Qwen-VL video processor, so :class:`ImageOnlyProcessor` drops it everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLProcessor, Qwen3VLProcessor

from lfpc.model.families import DEFAULT, Backbone, backbone_of

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ImageOnlyProcessor:
    """Mixin: a family's processor without a video processor (images and text only)."""

    backbone: Backbone = DEFAULT

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # The parent passes (image_processor, tokenizer, video_processor); ProcessorMixin keeps only the
        # attributes named in this signature, so the video processor is neither required nor stored.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """Refuse videos (they would otherwise be ignored silently), then run the usual checks."""
        if videos is not None:
            raise ValueError("this processor is image-only (lfpc.model.loading); videos are not supported")
        super().validate_inputs(images=images, text=text, videos=videos, audio=audio, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(ImageOnlyProcessor, Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without a video processor."""


class ImageOnlyQwen3VLProcessor(ImageOnlyProcessor, Qwen3VLProcessor):
    """``Qwen3VLProcessor`` without a video processor."""


IMAGE_ONLY_PROCESSORS = {"Qwen2_5_VLProcessor": ImageOnlyQwen2_5_VLProcessor,
                         "Qwen3VLProcessor": ImageOnlyQwen3VLProcessor}


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path after checking it is a local model folder with a ``config.json``."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model folder {folder} does not exist; download the checkpoint there (e.g. `huggingface-cli download "
            f"Qwen/Qwen2.5-VL-7B-Instruct --local-dir {folder}`) or build a tiny one with "
            f"lfpc.model.tiny.build_tiny_model({str(folder)!r})"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"model folder {folder} has no config.json; it is not a complete Hugging Face checkpoint "
            "(re-download it, or rebuild it with lfpc.model.tiny.build_tiny_model(..., overwrite=True))"
        )
    return folder


def load_processor(
    path: str | os.PathLike, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280
) -> ImageOnlyProcessor:
    """Load the image-only processor of a local checkpoint's family, resizing images into [min_pixels, max_pixels].

    ``processor(text=[...], images=[...], return_tensors="pt")`` returns input_ids, attention_mask, pixel_values,
    image_grid_thw and mm_token_type_ids. A budget of N visual tokens is ``max_pixels = N * side * side`` (side: the
    family's :attr:`~lfpc.model.families.Backbone.token_side`, 28 for Qwen2.5-VL). ``processor.backbone`` is the
    family.
    """
    if not 0 < min_pixels <= max_pixels:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got min_pixels={min_pixels}, max_pixels={max_pixels}")
    folder = checkpoint_dir(path)
    backbone = backbone_of(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    image_processor = AutoImageProcessor.from_pretrained(
        folder, local_files_only=True, min_pixels=min_pixels, max_pixels=max_pixels
    )
    if image_processor.patch_size != backbone.patch_size or image_processor.merge_size != backbone.merge_size:
        raise ValueError(f"{folder}/preprocessor_config.json has patch_size {image_processor.patch_size} and "
                         f"merge_size {image_processor.merge_size}; {backbone.label} needs {backbone.patch_size} "
                         f"and {backbone.merge_size} (lfpc/model/families.py)")
    processor = IMAGE_ONLY_PROCESSORS[backbone.processor_class](
        image_processor, tokenizer, chat_template=_chat_template(folder, tokenizer))
    processor.backbone = backbone
    return processor


def _chat_template(folder: Path, tokenizer) -> str:
    """The processor's legacy ``chat_template.json`` when present, else the tokenizer's (``chat_template.jinja``)."""
    legacy_file = folder / "chat_template.json"
    if legacy_file.is_file():
        return json.loads(legacy_file.read_text(encoding="utf-8"))["chat_template"]
    if tokenizer.chat_template is None:
        raise FileNotFoundError(f"model folder {folder} has no chat template (chat_template.json or .jinja)")
    return tokenizer.chat_template


def load_model(path: str | os.PathLike, dtype: str = "float32", attn_implementation: str = "sdpa"):
    """Load a local checkpoint of a supported family (``dtype`` "float32", "bfloat16" or "float16"), in eval mode."""
    folder = _checked_dir(path, dtype)
    return backbone_of(folder).model_cls().from_pretrained(
        folder, dtype=DTYPES[dtype], attn_implementation=attn_implementation, local_files_only=True
    )


def empty_model(path: str | os.PathLike, dtype: str = "float32", attn_implementation: str = "sdpa"):
    """The architecture of a local checkpoint on the meta device: shapes and dtypes, no memory, no weights read (for
    ranks that receive their shards from rank 0), in eval mode like :func:`load_model`."""
    from transformers import AutoConfig

    folder = _checked_dir(path, dtype)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = backbone_of(folder).model_cls()._from_config(
            config, dtype=DTYPES[dtype], attn_implementation=attn_implementation
        )
    return model.eval()


def _checked_dir(path: str | os.PathLike, dtype: str) -> Path:
    """``path`` checked to be a checkpoint folder, and ``dtype`` a known one."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return checkpoint_dir(path)


def image_token_count(image_grid_thw: torch.Tensor | Sequence[Sequence[int]],
                      merge_size: int = DEFAULT.merge_size) -> list[int]:
    """Visual tokens (``<|image_pad|>``) per image: t * h * w / merge_size**2 for each row of ``image_grid_thw``."""
    return [int(t) * int(h) * int(w) // merge_size**2 for t, h, w in (tuple(row) for row in image_grid_thw)]


_FILE_DIGESTS: dict[tuple, str] = {}


def _file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, computed once per file version in this process: the key holds the inode, size,
    mtime and ctime, so a file rewritten or replaced (even with its size and mtime restored) is hashed again."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def model_fingerprint(path: str | os.PathLike) -> str:
    """Hash of a model folder's content: the name and bytes of every file in it (weights, config, tokenizer, chat
    template), hidden files (a download tool's metadata) left out.

    Two folders holding the same files have the same fingerprint wherever they are; any changed byte gives another
    (a copy that keeps sizes and mtimes included). Measured on CPU: 0.04 s for the 8.9 MB mini model.
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json; cannot fingerprint the model")
    if not any(f for pattern in WEIGHT_PATTERNS for f in folder.glob(pattern)):
        raise FileNotFoundError(f"{folder} has no weight files ({', '.join(WEIGHT_PATTERNS)})")
    digest = hashlib.sha256()
    for file in sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")):
        digest.update(f"{file.name}:{_file_digest(file)}\n".encode())
    return digest.hexdigest()[:16]
