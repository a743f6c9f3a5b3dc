"""Random-weight Qwen2.5-VL checkpoints for benchmarking, and the FLOP arithmetic behind MFU.

``tiny`` is :func:`lfpc.model.tiny.build_tiny_model`. ``3b`` and ``7b`` have the layer dimensions of the released
Qwen2.5-VL-3B/7B-Instruct ``config.json`` files, written here in code (nothing is downloaded); they reuse the tiny
build's tokenizer, processor and chat template, so only the weights and ``config.json`` differ. With random weights
the token ids the model emits are meaningless, which the scripted benchmark policy does not need.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from lfpc.model.loading import DTYPES
from lfpc.model.tiny import MARKER_FILE, build_tiny_model

# Layer dimensions of the released checkpoints (Qwen/Qwen2.5-VL-{3B,7B}-Instruct config.json).
_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "patch_size": 14,
           "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "hidden_act": "silu",
           "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2}
_ROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}
ARCHS: dict[str, dict] = {
    "3b": {"text": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                    "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 128, "max_window_layers": 70,
                    "max_position_embeddings": 128000, "rope_parameters": _ROPE},
           "vision": {**_VISION, "out_hidden_size": 2048}, "tie_word_embeddings": True},
    "7b": {"text": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "head_dim": 128, "max_window_layers": 28,
                    "max_position_embeddings": 128000, "rope_parameters": _ROPE},
           "vision": {**_VISION, "out_hidden_size": 3584}, "tie_word_embeddings": False},
}
ARCH_CHOICES = ("tiny", *ARCHS)
# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by a substring of the device name.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}
ARCH_MARKER = "lfpc_bench_arch.json"
_WEIGHT_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", MARKER_FILE)


def arch_config(arch: str, tiny_dir: str | Path) -> Qwen2_5_VLConfig:
    """Config of ``arch`` (3b/7b) with the special-token ids of the tiny build at ``tiny_dir``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {list(ARCHS)}")
    spec = ARCHS[arch]
    base = Qwen2_5_VLConfig.from_pretrained(tiny_dir)
    ids = {key: getattr(base, key) for key in
           ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    text_ids = {key: getattr(base.text_config, key) for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return Qwen2_5_VLConfig(text_config={**spec["text"], **text_ids, "rms_norm_eps": 1e-6},
                            vision_config=spec["vision"], tie_word_embeddings=spec["tie_word_embeddings"], **ids)


def build_model_dir(arch: str, out_dir: str | Path, device: str = "cpu", dtype: str = "bfloat16") -> Path:
    """A checkpoint folder for ``arch``: the tiny build itself, or a random-init 3B/7B saved in ``dtype``.

    The 3B/7B folder is built once (initialised on ``device``) and reused while it was built from the same arch,
    dtype and tiny build (recorded last, in ``ARCH_MARKER``, so an interrupted build is redone).
    """
    out = Path(out_dir)
    tiny = build_tiny_model(out / "tiny")
    if arch == "tiny":
        return tiny
    folder = out / f"qwen2_5_vl_{arch}_random"
    marker = {"arch": arch, "dtype": dtype, "tiny": json.loads((tiny / MARKER_FILE).read_text())}
    if (folder / ARCH_MARKER).is_file() and json.loads((folder / ARCH_MARKER).read_text()) == marker:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(tiny, folder, ignore=shutil.ignore_patterns(*_WEIGHT_FILES, "model-*.safetensors"))
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(arch_config(arch, tiny), dtype=DTYPES[dtype])
    model.save_pretrained(folder)
    (folder / ARCH_MARKER).write_text(json.dumps(marker))
    return folder


@dataclass(frozen=True)
class FlopModel:
    """The sizes the forward FLOPs of a Qwen2.5-VL depend on, counted PaLM-style for MFU.

    Weights: 2 FLOPs per parameter per token they multiply (decoder layers and LM head per text token, not the
    embedding lookup; ViT blocks and patch embedding per 14x14 patch; the merger per merged token = 4 patches).
    Attention: QK^T and AV are 4 x width x (keys seen) FLOPs per query and layer, without a causal discount; ViT
    window blocks see the ``window_patches`` of their window, full-attention blocks the whole image.
    """

    total_params: int
    text_params: int
    vision_params: int
    merger_params: int
    text_layers: int
    text_width: int            # attention heads x head_dim
    vision_full_blocks: int
    vision_window_blocks: int
    vision_width: int
    window_patches: int
    merge: int = 4             # patches per merged (LLM) token

    @classmethod
    def of(cls, model: torch.nn.Module) -> "FlopModel":
        """Read the sizes off a Qwen2.5-VL model (works on the meta device)."""
        text, vision = model.config.text_config, model.config.vision_config
        visual = model.model.visual
        merger = sum(p.numel() for p in visual.merger.parameters())
        full = len(vision.fullatt_block_indexes)
        return cls(total_params=sum(p.numel() for p in model.parameters()),
                   text_params=sum(p.numel() for p in model.model.language_model.layers.parameters())
                   + model.lm_head.weight.numel(),
                   vision_params=sum(p.numel() for p in visual.parameters()) - merger, merger_params=merger,
                   text_layers=text.num_hidden_layers, text_width=text.num_attention_heads * text.head_dim,
                   vision_full_blocks=full, vision_window_blocks=vision.depth - full,
                   vision_width=vision.hidden_size, window_patches=(vision.window_size // vision.patch_size) ** 2,
                   merge=vision.spatial_merge_size ** 2)

    def forward(self, sequence_lengths: Sequence[int], image_patches: Sequence[int]) -> float:
        """FLOPs of one forward pass over sequences of these lengths holding images of these patch counts."""
        text = sum(2.0 * self.text_params * n + 4.0 * self.text_layers * self.text_width * n * n
                   for n in sequence_lengths)
        vision = sum(2.0 * self.vision_params * p + 2.0 * self.merger_params * p / self.merge
                     + 4.0 * self.vision_width * p * (self.vision_full_blocks * p
                                                      + self.vision_window_blocks * min(p, self.window_patches))
                     for p in image_patches)
        return text + vision


def peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float | None = None) -> tuple[float, str]:
    """Peak FLOP/s to divide by for MFU, and where it comes from.

    ``override_tflops`` wins; a known GPU uses its data-sheet bf16 peak; otherwise (CPU, unknown GPU) the peak is
    measured: the best of a few large matmuls in ``dtype``.
    """
    if override_tflops:
        return override_tflops * 1e12, "given with --peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name:
                return flops, f"{name} data-sheet dense bf16 peak"
    return _measured_matmul_flops(device, dtype), f"measured {dtype} matmul peak on {device.type}"


def _measured_matmul_flops(device: torch.device, dtype: torch.dtype, size: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of the fastest of ``repeats`` square matmuls (the fastest is the least disturbed by other load)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
