"""Build a tiny, randomly initialised Qwen2.5-VL (the real architecture) fully offline, for tests and CPU runs
(a tiny Qwen3-VL too: :mod:`lfpc.model.tiny_qwen3_vl` holds what differs).

The folder written by :func:`build_tiny_model` has the same layout as a real Qwen2.5-VL-7B-Instruct checkpoint
(``config.json``, ``generation_config.json``, safetensors weights, ``tokenizer.json``/``tokenizer_config.json``,
``preprocessor_config.json``, ``chat_template.json``), so :mod:`lfpc.model.loading` loads both the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2Tokenizer

from lfpc.files import atomic_folder, entry_lock
from lfpc.model.families import DEFAULT, QWEN3_5, QWEN3_VL, backbone_for
from lfpc.model.tiny_tokenizer import QWEN2_5_VL_CHAT_TEMPLATE, QWEN_ADDED_TOKENS, build_tiny_tokenizer

# Bump when the build changes, so cached folders built by an older version are rebuilt.
BUILD_VERSION = 2
MARKER_FILE = "lfpc_tiny_build.json"


# Image processor settings of the real checkpoint (preprocessor_config.json).
PREPROCESSOR_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}


def tiny_config(tokenizer: Qwen2Tokenizer, text: dict | None = None, vision: dict | None = None) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL config of the real architecture, scaled down (~0.6M parameters), ids matching ``tokenizer``;
    ``text`` / ``vision`` override entries of the text / vision config (the mini model is a larger one)."""
    ids = {text: tokenizer.convert_tokens_to_ids(text) for text, _ in QWEN_ADDED_TOKENS}
    head_dim = 32  # vLLM's CPU attention needs head size >= 32
    text_config = {
        "vocab_size": -(-len(tokenizer) // 64) * 64,  # padded like the real model's embedding table
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": head_dim,
        "max_position_embeddings": 32768,
        "max_window_layers": 2,
        "rms_norm_eps": 1e-6,
        # Real model: head_dim 128, mrope_section [16, 24, 24]; here the same split of head_dim / 2 = 16.
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "num_heads": 2,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(
        text_config={**text_config, **(text or {})},
        vision_config={**vision_config, **(vision or {})},
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def _marker(seed: int, family: str = DEFAULT.name) -> dict:
    marker = {"builder": "lfpc.model.tiny", "version": BUILD_VERSION, "seed": seed}
    return marker if family == DEFAULT.name else {**marker, "family": family}


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_build(folder: Path, seed: int, family: str) -> None:
    if family in (QWEN3_VL.name, QWEN3_5.name):
        from lfpc.model import tiny_qwen3_5, tiny_qwen3_vl
        tokenizer = tiny_qwen3_vl.build_tokenizer()
        config = (tiny_qwen3_vl if family == QWEN3_VL.name else tiny_qwen3_5).tiny_config(tokenizer)
        write_random_checkpoint(folder, tokenizer, config, seed, tiny_qwen3_vl.PREPROCESSOR_CONFIG,
                                tiny_qwen3_vl.CHAT_TEMPLATE)
    else:
        tokenizer = build_tiny_tokenizer()
        write_random_checkpoint(folder, tokenizer, tiny_config(tokenizer), seed)
    # last: marks a complete build
    (folder / MARKER_FILE).write_text(json.dumps(_marker(seed, family), indent=2) + "\n")


def write_random_checkpoint(folder: Path, tokenizer: Qwen2Tokenizer, config, seed: int,
                            preprocessor: dict = PREPROCESSOR_CONFIG,
                            chat_template: str = QWEN2_5_VL_CHAT_TEMPLATE) -> None:
    """Write a checkpoint folder (weights drawn with ``seed``, tokenizer, processor, chat template) to ``folder``;
    the model class is the family's of ``config.model_type``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = backbone_for(config.model_type).model_cls()(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],  # [<|im_end|>, <|endoftext|>]
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}, indent=2))


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False,
                     family: str = DEFAULT.name) -> Path:
    """Build (or reuse) a tiny random checkpoint folder of ``family`` (``qwen2_5_vl``, the default; ``qwen3_vl``:
    :mod:`lfpc.model.tiny_qwen3_vl`; ``qwen3_5``: :mod:`lfpc.model.tiny_qwen3_5`) at ``out_dir``; return its path.

    A folder holding a complete build with the same ``seed`` and build version is returned at once. The build is
    written to a temporary sibling folder and renamed into place, so ``out_dir`` never holds a partial build.
    A build of the same seed by an older builder version is rebuilt. ``overwrite=True`` replaces whatever ``out_dir``
    holds; otherwise any other non-empty folder raises ``FileExistsError``.
    """
    out = Path(out_dir)
    with entry_lock(out, wait=True):  # a second process building the same folder waits, then reuses it
        if out.exists() and not overwrite:
            marker = _read_marker(out)
            if marker == _marker(seed, family):
                return out
            # an older build of this seed and family: rebuild
            stale_version = marker is not None and {**marker, "version": BUILD_VERSION} == _marker(seed, family)
            if not stale_version and any(out.iterdir()):
                raise FileExistsError(
                    f"{out} is not empty and holds no tiny model built with seed={seed} (version {BUILD_VERSION}); "
                    "pass overwrite=True to replace it, or choose another folder"
                )
        with atomic_folder(out) as staging:
            _write_build(staging, seed, family)
    return out
