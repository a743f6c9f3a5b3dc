"""The one place that loads Qwen2.5-VL models and processors, from local folders only.

Works the same for a real Qwen2.5-VL-7B-Instruct folder and for a tiny build (:mod:`lfpc.model.tiny`).
The processor is image-only: videos are not used by this project, and without an importable torchvision
transformers has no Qwen2.5-VL video processor, so :class:`ImageOnlyQwen2_5_VLProcessor` drops it everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

# Qwen2.5-VL: one visual token per 28x28 pixels (patch 14, 2x2 patches merged into one token).
SPATIAL_MERGE_SIZE = 2
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without a video processor (images and text only)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # The parent passes (image_processor, tokenizer, video_processor); ProcessorMixin keeps only the
        # attributes named in this signature, so the video processor is neither required nor stored.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """Refuse videos (they would otherwise be ignored silently), then run the usual checks."""
        if videos is not None:
            raise ValueError("this processor is image-only (lfpc.model.loading); videos are not supported")
        super().validate_inputs(images=images, text=text, videos=videos, audio=audio, **kwargs)


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
) -> ImageOnlyQwen2_5_VLProcessor:
    """Load the image-only Qwen2.5-VL processor of a local checkpoint, resizing images into [min_pixels, max_pixels].

    ``processor(text=[...], images=[...], return_tensors="pt")`` returns input_ids, attention_mask, pixel_values,
    image_grid_thw and mm_token_type_ids. A budget of N visual tokens is ``max_pixels = N * 28 * 28``.
    """
    if not 0 < min_pixels <= max_pixels:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got min_pixels={min_pixels}, max_pixels={max_pixels}")
    folder = checkpoint_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    image_processor = AutoImageProcessor.from_pretrained(
        folder, local_files_only=True, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return ImageOnlyQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=_chat_template(folder, tokenizer))


def _chat_template(folder: Path, tokenizer) -> str:
    """The processor's legacy ``chat_template.json`` when present, else the tokenizer's (``chat_template.jinja``)."""
    legacy_file = folder / "chat_template.json"
    if legacy_file.is_file():
        return json.loads(legacy_file.read_text(encoding="utf-8"))["chat_template"]
    if tokenizer.chat_template is None:
        raise FileNotFoundError(f"model folder {folder} has no chat template (chat_template.json or .jinja)")
    return tokenizer.chat_template


def load_model(
    path: str | os.PathLike, dtype: str = "float32", attn_implementation: str = "sdpa"
) -> Qwen2_5_VLForConditionalGeneration:
    """Load a local Qwen2.5-VL checkpoint (``dtype`` "float32", "bfloat16" or "float16"), in eval mode."""
    folder = _qwen2_5_vl_dir(path, dtype)
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(
        folder, dtype=DTYPES[dtype], attn_implementation=attn_implementation, local_files_only=True
    )


def empty_model(
    path: str | os.PathLike, dtype: str = "float32", attn_implementation: str = "sdpa"
) -> Qwen2_5_VLForConditionalGeneration:
    """The architecture of a local Qwen2.5-VL checkpoint on the meta device: shapes and dtypes, no memory, no weights
    read (for ranks that receive their shards from rank 0), in eval mode like :func:`load_model`."""
    from transformers import AutoConfig

    folder = _qwen2_5_vl_dir(path, dtype)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=DTYPES[dtype], attn_implementation=attn_implementation
        )
    return model.eval()


def _qwen2_5_vl_dir(path: str | os.PathLike, dtype: str) -> Path:
    """``path`` checked to be a Qwen2.5-VL checkpoint folder, and ``dtype`` a known one."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    folder = checkpoint_dir(path)
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != "qwen2_5_vl":
        raise ValueError(f"{folder} holds a {model_type!r} model; this project needs a Qwen2.5-VL ('qwen2_5_vl')")
    return folder


def image_token_count(image_grid_thw: torch.Tensor | Sequence[Sequence[int]]) -> list[int]:
    """Visual tokens (``<|image_pad|>``) per image: t * h * w / merge_size**2 for each row of ``image_grid_thw``."""
    return [int(t) * int(h) * int(w) // SPATIAL_MERGE_SIZE**2 for t, h, w in (tuple(row) for row in image_grid_thw)]


def model_fingerprint(path: str | os.PathLike) -> str:
    """Hash of a model folder: the bytes of ``config.json`` plus name, size and mtime of each weight file.

    Cheap even for a 7B checkpoint; rewriting or replacing the weights (or copying the folder, which
    changes mtimes) gives a new fingerprint.
    """
    folder = Path(path)
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; cannot fingerprint the model")
    digest = hashlib.sha256(config.read_bytes())
    weights = sorted(f for pattern in WEIGHT_PATTERNS for f in folder.glob(pattern))
    if not weights:
        raise FileNotFoundError(f"{folder} has no weight files ({', '.join(WEIGHT_PATTERNS)})")
    for weight in weights:
        stat = weight.stat()
        digest.update(f"{weight.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
