"""What a tiny random Qwen3.5 (:func:`lfpc.model.tiny.build_tiny_model` with ``family="qwen3_5"``) has of its own: a
scaled-down config of the real architecture, whose text layers alternate gated-DeltaNet linear attention (a recurrent
state) with full attention, and whose vision tower has 16 px patches and no DeepStack. Its tokenizer, chat template
and image processor settings are the tiny Qwen3-VL's (:mod:`lfpc.model.tiny_qwen3_vl`): transformers 5.19.0 serves
``qwen3_5`` with the same ``Qwen3VLProcessor`` and ``Qwen2VLImageProcessor`` (``models/auto/processing_auto.py``,
``models/auto/image_processing_auto.py``). A real Qwen3.5 folder brings its own tokenizer and template.
Architecture: transformers 5.19.0 ``models/qwen3_5/configuration_qwen3_5.py`` (``layer_types`` from
``full_attention_interval``, ``partial_rotary_factor`` 0.25, interleaved M-RoPE).
"""

from __future__ import annotations

from transformers import Qwen2Tokenizer, Qwen3_5Config

from lfpc.model.tiny_qwen3_vl import ADDED_TOKENS


def tiny_config(tokenizer: Qwen2Tokenizer) -> Qwen3_5Config:
    """A Qwen3.5 config of the real architecture scaled down (linear, full, linear, full attention layers), ids
    matching ``tokenizer``."""
    ids = {text: tokenizer.convert_tokens_to_ids(text) for text, _ in ADDED_TOKENS}
    text_config = {
        "vocab_size": -(-len(tokenizer) // 64) * 64,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "full_attention_interval": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 2,
        "linear_key_head_dim": 128,  # as the released models: vLLM's CPU gated delta-net kernel takes no smaller
        "linear_value_head_dim": 128,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        # rotary on a quarter of each head (64 * 0.25 = 16 dims, 8 frequencies), split over t, h, w as in the real model
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                            "mrope_section": [3, 3, 2], "mrope_interleaved": True},
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
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 256,
    }
    return Qwen3_5Config(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
