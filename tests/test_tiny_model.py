"""Tiny Qwen2.5-VL build (lfpc/model/tiny.py) and local loading (lfpc/model/loading.py)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lfpc.model.loading import image_token_count, load_model, load_processor
from lfpc.model.tiny import MARKER_FILE, build_tiny_model

# 56*56 <= every test image's pixel count; 28*28*256 = 200,704 >= 280*196 = 54,880, so no test image is resized.
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 256


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen-tiny", seed=0)


@pytest.fixture(scope="module")
def processor(tiny_dir):
    return load_processor(tiny_dir, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


@pytest.fixture(scope="module")
def model(tiny_dir):
    return load_model(tiny_dir, dtype="float32")


def noise_image(width, height, seed=0):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


def two_image_prompt(processor):
    messages = [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What is the color of the car?"}, {"type": "image"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # 280x196 -> 20x14 patches of 14 px -> 10x7 = 70 tokens; 84x56 -> 6x4 patches -> 3x2 = 6 tokens.
    return processor(text=[text], images=[noise_image(280, 196), noise_image(84, 56, seed=1)], return_tensors="pt")


def test_folder_has_the_layout_of_a_real_checkpoint(tiny_dir):
    names = {path.name for path in tiny_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json", "chat_template.json", MARKER_FILE} <= names
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert config["model_type"] == "qwen2_5_vl"


def test_tokenizer_vocab_special_ids_and_config_agree(processor, model):
    tokenizer = processor.tokenizer
    # 3,000 trained BPE tokens, then Qwen2.5's 22 added tokens in their real order (<|endoftext|> first).
    assert len(tokenizer) == 3022
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [3000, 3001, 3002]
    # The embedding table is padded to a multiple of 64 like the real model's: ceil(3022 / 64) * 64 = 3072.
    assert model.config.text_config.vocab_size == 3072
    for text in ("</tool_call>", "<tool_call>", "<|im_end|>", "<|image_pad|>"):
        assert len(tokenizer.encode(text, add_special_tokens=False)) == 1, text
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    ids = tokenizer.convert_tokens_to_ids
    assert model.config.image_token_id == ids("<|image_pad|>") == 3012
    assert model.config.video_token_id == ids("<|video_pad|>") == 3013
    assert model.config.vision_start_token_id == ids("<|vision_start|>") == 3009
    assert model.generation_config.eos_token_id == [3002, 3000]  # [<|im_end|>, <|endoftext|>]
    assert model.generation_config.pad_token_id == 3000


def test_tokenizer_round_trips_a_tool_call(processor):
    tokenizer = processor.tokenizer
    text = '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [12, 340, 56, 780]}}</tool_call>'
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    # <tool_call> is an added but not special token (as in Qwen2.5): skip_special_tokens keeps it.
    assert tokenizer.decode(tokenizer.encode(text + "<|im_end|>"), skip_special_tokens=True) == text


def test_chat_template_renders_images_and_tool_call(processor):
    tool_call = '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 20, 30, 40]}}</tool_call>'
    messages = [
        {"role": "system", "content": "Use the tool."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which color?"}]},
        {"role": "assistant", "content": tool_call},
        {"role": "user", "content": [
            {"type": "text", "text": "<tool_response>"}, {"type": "image"}, {"type": "text", "text": "</tool_response>"}]},
    ]
    expected = (
        "<|im_start|>system\nUse the tool.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which color?<|im_end|>\n"
        f"<|im_start|>assistant\n{tool_call}<|im_end|>\n"
        "<|im_start|>user\n<tool_response><|vision_start|><|image_pad|><|vision_end|></tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected


def test_chat_template_adds_default_system_prompt(processor):
    rendered = processor.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert rendered == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_processor_outputs_and_image_token_counts(processor):
    batch = two_image_prompt(processor)
    assert {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"} <= set(batch)
    # 280x196: t=1, h=196/14=14, w=280/14=20; 84x56: t=1, h=4, w=6.
    assert batch["image_grid_thw"].tolist() == [[1, 14, 20], [1, 4, 6]]
    # one pixel_values row per 14x14 patch: 14*20 + 4*6 = 304 rows of 3 channels * 2 frames * 14 * 14 = 1176 values
    assert tuple(batch["pixel_values"].shape) == (304, 1176)
    ids = batch["input_ids"][0].tolist()
    image_pad, start, end = processor.tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>",
                                                                       "<|vision_end|>"])
    starts = [i for i, tok in enumerate(ids) if tok == start]
    ends = [i for i, tok in enumerate(ids) if tok == end]
    spans = [ids[s + 1:e] for s, e in zip(starts, ends)]
    assert [len(span) for span in spans] == [70, 6]  # 1*14*20/4 and 1*4*6/4
    assert all(tok == image_pad for span in spans for tok in span)
    assert batch["mm_token_type_ids"][0].tolist() == [int(tok == image_pad) for tok in ids]


def test_processor_is_image_only(processor):
    assert processor.get_attributes() == ["image_processor", "tokenizer"]
    with pytest.raises(ValueError, match="image-only"):
        processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[np.zeros((2, 28, 28, 3), np.uint8)])


def test_max_pixels_caps_the_visual_tokens(tiny_dir):
    small = load_processor(tiny_dir, min_pixels=MIN_PIXELS, max_pixels=28 * 28 * 16)
    batch = small(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[noise_image(280, 196)],
                  return_tensors="pt")
    # 280*196 = 54,880 > 12,544: beta = sqrt(54,880 / 12,544) = 2.092; h = floor(196/2.092/28)*28 = 84,
    # w = floor(280/2.092/28)*28 = 112 -> grid 6 x 8 patches -> 12 tokens (<= the budget of 16).
    assert batch["image_grid_thw"].tolist() == [[1, 6, 8]]
    assert int((batch["input_ids"] == small.image_token_id).sum()) == 12


def test_image_token_count():
    assert image_token_count(torch.tensor([[1, 14, 20], [1, 4, 6]])) == [70, 6]  # 280/4, 24/4
    assert image_token_count([[1, 2, 2]]) == [1]


def test_forward_logits_and_mrope_positions(model, processor):
    batch = two_image_prompt(processor)
    model.model.rope_deltas = None
    with torch.no_grad():
        logits = model(**batch).logits
    assert tuple(logits.shape) == (1, batch["input_ids"].shape[1], 3072)
    assert torch.isfinite(logits).all()
    # M-RoPE: an image of 7x10 merged tokens advances positions by max(7, 10) = 10 instead of 70, one of 2x3 by 3
    # instead of 6, so the last position is (70 - 10) + (6 - 3) = 63 below the token count.
    assert model.model.rope_deltas.tolist() == [[-63]]
    # Without mm_token_type_ids transformers silently falls back to 1-D positions: the logits change.
    model.model.rope_deltas = None
    with torch.no_grad():
        plain = model(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"}).logits
    assert not torch.allclose(plain, logits, atol=1e-5)


def test_generate_with_images_stops(model, processor):
    batch = two_image_prompt(processor)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    prompt_len = batch["input_ids"].shape[1]
    assert 1 <= out.shape[1] - prompt_len <= 6
    assert torch.equal(out[:, :prompt_len], batch["input_ids"])
    with torch.no_grad():
        again = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(again, out)  # greedy decoding is deterministic


def test_bfloat16_load(tiny_dir):
    assert load_model(tiny_dir, dtype="bfloat16").dtype == torch.bfloat16


def test_cache_returns_without_rebuilding(tiny_dir):
    weights = tiny_dir / "model.safetensors"
    before = (weights.stat().st_mtime_ns, (tiny_dir / MARKER_FILE).stat().st_mtime_ns)
    assert build_tiny_model(tiny_dir, seed=0) == tiny_dir
    assert (weights.stat().st_mtime_ns, (tiny_dir / MARKER_FILE).stat().st_mtime_ns) == before


def test_build_is_seeded(tiny_dir, tmp_path):
    same = load_file(build_tiny_model(tmp_path / "same", seed=0) / "model.safetensors")
    other = load_file(build_tiny_model(tmp_path / "other", seed=1) / "model.safetensors")
    reference = load_file(tiny_dir / "model.safetensors")
    assert all(torch.equal(same[name], reference[name]) for name in reference)
    assert not torch.equal(other["lm_head.weight"], reference["lm_head.weight"])
    assert (tmp_path / "same" / "tokenizer.json").read_text() == (tiny_dir / "tokenizer.json").read_text()


def test_build_refuses_foreign_or_mismatched_folder(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_tiny_model(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    built = build_tiny_model(tmp_path / "tiny", seed=0)
    with pytest.raises(FileExistsError, match="seed=1"):
        build_tiny_model(built, seed=1)
    rebuilt = build_tiny_model(built, seed=1, overwrite=True)
    assert json.loads((rebuilt / MARKER_FILE).read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir() if "building" in p.name] == []  # no staging folder left behind


def test_missing_model_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model.*build_tiny_model"):
        load_model(missing)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_processor(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty has no config\.json"):
        load_model(empty)


def test_build_of_an_older_builder_version_is_rebuilt(tmp_path):
    built = build_tiny_model(tmp_path / "tiny", seed=0)
    marker = json.loads((built / MARKER_FILE).read_text())
    (built / MARKER_FILE).write_text(json.dumps({**marker, "version": marker["version"] - 1}))
    rebuilt = build_tiny_model(built, seed=0)
    assert json.loads((rebuilt / MARKER_FILE).read_text()) == marker


def test_warm_ups_with_other_settings_never_replace_one_another(tiny_model_dir, tmp_path):
    from lfpc.data.records import load_jsonl
    from lfpc.data.synthetic import generate_synthetic
    from lfpc.model.loading import model_fingerprint
    from lfpc.training.warmup import MARKER, warm_up
    samples = load_jsonl(generate_synthetic(tmp_path / "data", 2, (256, 256), seed=1))
    smoke = warm_up(tiny_model_dir, tmp_path / "warm", samples, steps=1)      # size=smoke's warm-up
    default = warm_up(tiny_model_dir, tmp_path / "warm", samples, steps=2)    # model=tiny's warm-up
    assert smoke != default and smoke.parent == default.parent == tmp_path
    assert json.loads((smoke / MARKER).read_text())["steps"] == 1 and json.loads((default / MARKER).read_text())["steps"] == 2
    before = model_fingerprint(smoke)
    assert warm_up(tiny_model_dir, tmp_path / "warm", samples, steps=1) == smoke and model_fingerprint(smoke) == before
    assert smoke.stat().st_mode & 0o055 == 0o055  # readable like any model folder (mkdtemp makes it private)
