"""Build a tiny, randomly initialised Qwen2.5-VL (the real architecture) fully offline, for tests and CPU runs.

The folder written by :func:`build_tiny_model` has the same layout as a real Qwen2.5-VL-7B-Instruct checkpoint
(``config.json``, ``generation_config.json``, safetensors weights, ``tokenizer.json``/``tokenizer_config.json``,
``preprocessor_config.json``, ``chat_template.json``), so :mod:`lfpc.model.loading` loads both the same way.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from lfpc.files import atomic_folder, entry_lock

# Bump when the build changes, so cached folders built by an older version are rebuilt.
BUILD_VERSION = 2
MARKER_FILE = "lfpc_tiny_build.json"

# The chat template of Qwen2.5-VL-7B-Instruct (chat_template.json), verbatim.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5 added tokens in their real order (ids 151643.. in the real model), with their "special" flag.
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

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

BPE_VOCAB_SIZE = 3000

_COLORS = "red green blue yellow black white orange purple pink brown gray silver gold".split()
_SHAPES = "circle square triangle rectangle star cross diamond arrow line dot".split()
_OBJECTS = (
    "car bus truck bicycle person dog cat bird tree house window door sign clock flag boat plane "
    "bottle cup chair table lamp book phone bag umbrella ball hat shirt box letter number text logo"
).split()
_RELATIONS = "left right above below behind in front of next to near far inside outside top bottom".split()
_WORDS = """
a an the is are was were of to in on at by with and or not what which where when who how many color shape object
image picture region area crop zoom small large tiny big first second answer question option options choose correct
based think look closer carefully tool function result please only final format should may need use given side relative
position between about above across action add after again against age air all almost alone along already also always
among amount animal another any appear apple arm around arrive art ask attention away baby back background bank bar base
basket beach bear beautiful because become bed before begin believe bell belt bench best better black blank block board
body bold bone border both bowl boy branch bread break bridge bright bring brother build building burn busy butter button
buy cake call camera can candle cap capital captain card care carry case center certain chance change character child
church city clean clear climb close cloud coat coffee cold collect column come common compare complete computer condition
contain continue control cook copy corner count country course cover cow crowd current cut dark date daughter day dead
deep describe desk detail different direction dirty distance doctor dollar draw dream dress drink drive drop dry during
each ear early earth east easy eat edge egg eight either else empty end engine enough enter equal even evening ever every
exact example eye face fact fall family farm fast father feel fence few field fifteen fight fill find fine finger finish
fire fish five flat floor flower fly follow food foot force forest form forward four free fresh friend fruit full game
garden gate general get girl give glass go good grass great ground group grow guess hair half hand happen happy hard head
hear heart heavy help here high hill hold hole home horse hot hour huge hundred idea important inch include indicate
information instead island jacket job join jump just keep key kind king kitchen knife know lady lake land language last
late laugh lead leaf learn least leave leg length less level life light like list listen little live long lose lot low
machine main make man map mark market match matter mean measure meet member metal middle might mile milk mind minute miss
modern moment money month moon more morning most mother mountain mouth move much music must name narrow nation natural
nature necessary neck never new next night nine noise none north nose note nothing notice now ocean off office often old
once one open order other outdoor over page paint pair paper parent park part pass past path pattern pay pen people
perhaps period photo piece place plain plan plant plate play point pole poor possible pot power present press pretty
print probable problem produce provide pull push put quick quiet quite rain raise reach read ready real reason receive
record remember repeat reply rest rich ride ring river road rock roof room root rope round row rule run safe sail same
sand save say scene school science sea season seat section see seem sell send sense sentence separate serve set seven
several shadow share sharp sheep shelf ship shoe shop short shoulder show simple since sing single sister sit six size
skin sky sleep slow smile snow soft soldier solve some son song soon sound south space speak special speed spell spend
spot spring stand start state station stay step still stone stop store story straight strange street strong student
study subject success sudden summer sun supply sure surface swim symbol system tail take talk tall teacher team tell ten
test than thank then there thick thin thing third thousand three through throw tie time together tomorrow tonight total
touch tower town track train travel trip true try turn twelve twenty two type under unit until up usual valley value very
view village visible visit voice wait walk wall want warm wash watch water wave way wear weather week weight well west
wheel while whole wide wild win wind wing winter wire wish woman wonder wood word work world write wrong yard year yes yet
young zero
""".split()
_PROMPT_LINES = (
    "You are a helpful assistant.",
    "# Tools",
    "You may call one or more functions to assist with the user query.",
    "You are provided with function signatures within <tools></tools> XML tags:",
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:",
    '{"type": "function", "function": {"name": "image_zoom_in_tool", "description": "Zoom in on a region '
    'of the image by cropping it with a bounding box.", "parameters": {"type": "object", "properties": '
    '{"bbox_2d": {"type": "array", "items": {"type": "number"}}, "label": {"type": "string"}}, '
    '"required": ["bbox_2d"]}}}',
    "Think first, call image_zoom_in_tool if needed, then answer.",
    "Format strictly as: <think>...</think> <tool_call>...</tool_call> (if tools needed) <answer>...</answer>",
    "<tool_response>Here is the zoomed in image. Continue your reasoning.</tool_response>",
    "Answer with the option's letter from the given choices directly.",
)


def _training_corpus(extra_lines: Sequence[str] = ()) -> list[str]:
    """A small deterministic corpus covering the prompt, tool-call and answer vocabulary (plus ``extra_lines``)."""
    lines = list(_PROMPT_LINES) + list(extra_lines)
    vocabulary = _COLORS + _SHAPES + _OBJECTS + _RELATIONS + _WORDS
    for start in range(0, len(vocabulary), 8):  # each word bare, after a space, capitalised and plural
        chunk = vocabulary[start : start + 8]
        lines.append("\n".join(chunk))
        lines.append(" ".join(chunk))
        lines.append(" ".join(word.capitalize() for word in chunk))
        lines.append(" ".join(word + "s" for word in chunk))
    lines.append("0 1 2 3 4 5 6 7 8 9 10 100 1000 , . : ; ! ? ( ) [ ] { } \" ' - _ / * # < > = + \n")
    for i, (color, obj) in enumerate(itertools.product(_COLORS, _OBJECTS)):
        shape = _SHAPES[i % len(_SHAPES)]
        relation = _RELATIONS[i % len(_RELATIONS)]
        other = _OBJECTS[(i * 7) % len(_OBJECTS)]
        letter = "ABCD"[i % 4]
        x1, y1 = (i * 37) % 900, (i * 53) % 700
        lines.append(f"What is the color of the {obj}? The {obj} is {color}.")
        lines.append(f"Is the {color} {shape} on the {relation} of the {other}?")
        lines.append(f"(A) {color} (B) {_COLORS[(i + 1) % len(_COLORS)]} (C) {shape} (D) {other}")
        lines.append(
            '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": '
            f'[{x1}, {y1}, {x1 + 64 + i % 200}, {y1 + 48 + i % 150}], "label": "the {color} {obj}"}}}}</tool_call>'
        )
        lines.append(f"<think>The {obj} is small, I should zoom in.</think> <answer>{letter}</answer>")
    return lines


def _train_bpe(corpus: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen2's pre-tokenizer; return (vocab, merges)."""
    tokenizer = Tokenizer(BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], [tuple(merge) for merge in model["merges"]]


def build_tiny_tokenizer(extra_lines: Sequence[str] = ()) -> Qwen2Tokenizer:
    """Byte-level BPE tokenizer with Qwen2.5's added tokens, special tokens and the Qwen2.5-VL chat template.

    ``extra_lines`` join the training corpus (the mini model adds its prompts, so they take fewer tokens)."""
    vocab, merges = _train_bpe(_training_corpus(extra_lines))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    for text, special in QWEN_ADDED_TOKENS:
        tokenizer.add_tokens([AddedToken(text, special=special, normalized=False)], special_tokens=special)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return tokenizer


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


def _marker(seed: int) -> dict:
    return {"builder": "lfpc.model.tiny", "version": BUILD_VERSION, "seed": seed}


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_build(folder: Path, seed: int) -> None:
    tokenizer = build_tiny_tokenizer()
    write_random_checkpoint(folder, tokenizer, tiny_config(tokenizer), seed)
    (folder / MARKER_FILE).write_text(json.dumps(_marker(seed), indent=2) + "\n")  # last: marks a complete build


def write_random_checkpoint(folder: Path, tokenizer: Qwen2Tokenizer, config: Qwen2_5_VLConfig, seed: int) -> None:
    """Write a checkpoint folder (weights drawn with ``seed``, tokenizer, processor, chat template) to ``folder``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],  # [<|im_end|>, <|endoftext|>]
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n")
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_5_VL_CHAT_TEMPLATE}, indent=2))


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> Path:
    """Build (or reuse) a tiny random Qwen2.5-VL checkpoint folder at ``out_dir`` and return its path.

    A folder holding a complete build with the same ``seed`` and build version is returned at once. The build is
    written to a temporary sibling folder and renamed into place, so ``out_dir`` never holds a partial build.
    A build of the same seed by an older builder version is rebuilt. ``overwrite=True`` replaces whatever ``out_dir``
    holds; otherwise any other non-empty folder raises ``FileExistsError``.
    """
    out = Path(out_dir)
    with entry_lock(out, wait=True):  # a second process building the same folder waits, then reuses it
        if out.exists() and not overwrite:
            marker = _read_marker(out)
            if marker == _marker(seed):
                return out
            stale_version = marker is not None and marker.get("seed") == seed  # an older build of this seed: rebuild
            if not stale_version and any(out.iterdir()):
                raise FileExistsError(
                    f"{out} is not empty and holds no tiny model built with seed={seed} (version {BUILD_VERSION}); "
                    "pass overwrite=True to replace it, or choose another folder"
                )
        with atomic_folder(out) as staging:
            _write_build(staging, seed)
    return out
