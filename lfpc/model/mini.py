"""The miniature base model ("mini"): the stand-in for Qwen2.5-VL-7B-Instruct in the embedded default.

The paper starts RL from an instruct model that already follows the tool format, roughly localises objects and
reads what it sees well enough (Sec. 3). The mini model gets those abilities from a supervised curriculum on the
tile task (:mod:`lfpc.data.patterns`), with the images shown at every level of the resolution pyramid the runs use:
``read`` (a crop around the tile -> the answer), ``perceive`` (crops and global views -> the answer; a global view
-> a zoom-in call on the tile), then ``act``: full episodes of an *imperfect* scripted teacher:

* half the time the teacher answers directly from the global view (right when the colours are legible there, a
  guess the model cannot learn better than chance when they are not), so RL has tool use to gain (Stage I);
* otherwise it zooms in once with a loose, jittered box around the tile (and 15% of the time a box that misses
  it), so RL has precision to gain (Stage II); then it names the colour pair (the option's text).

A last phase, ``direct``, interleaves those episodes with answers under the no-tool prompt (the probe of the offline
resolution selection and the ``direct`` evaluation mode, paper Sec. 3), so the selection measures the model's answers
rather than its malformed replies.

The model is the real ``Qwen2_5_VLForConditionalGeneration`` at ~2M parameters (tokenizer trained locally on the
project's prompts). ``python -m lfpc.model.mini --out models/mini`` regenerates the shipped weights from scratch
(seeded, deterministic on one machine); the folder records the recipe and its fingerprint, and the weights' hash.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from lfpc.agent.env import CropEnvironment
from lfpc.agent.prompt import (DIRECT_REMINDER, FINAL_REMINDER, REMINDER, initial_messages, system_prompt,
                               tool_call_text)
from lfpc.boxes import Box, Size, scale_box
from lfpc.data import patterns
from lfpc.data.records import Sample
from lfpc.files import atomic_folder
from lfpc.grpo.logprobs import imitation_loss
from lfpc.model.loading import load_model
from lfpc.model.tiny import tiny_config, write_random_checkpoint
from lfpc.model.tiny_tokenizer import build_tiny_tokenizer
from lfpc.rollout.base import Context
from lfpc.rollout.codec import ChatCodec
from lfpc.vision.budget import downsample_pyramid

RECIPE_FILE = "lfpc_mini_recipe.json"
WEIGHTS_FILE = "model.safetensors"

# Everything that determines the shipped weights. Changing any value changes the fingerprint, and the test that
# checks the shipped folder fails until the weights are regenerated with `python -m lfpc.model.mini`.
RECIPE: dict = {
    "version": 1,
    "seed": 0,
    # text: 4 layers x 4 heads of 32, rope_theta 10 and mrope [2, 7, 7] so the few image rows / columns (4 to 16)
    # of a small view get well-separated rotary angles (Qwen's 1e6 barely turns over 16 positions).
    "text": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 32, "max_window_layers": 4,
             "rope_parameters": {"rope_type": "default", "rope_theta": 10.0, "mrope_section": [2, 7, 7]}},
    "vision": {"depth": 4, "hidden_size": 64, "num_heads": 2, "intermediate_size": 256, "out_hidden_size": 128,
               "fullatt_block_indexes": [1, 3]},
    "data": {"seed": 1000, "size_range": list(patterns.DEFAULT_SIZE_RANGE),
             "generator": {"cell": list(patterns.CELL), "cells": list(patterns.CELLS),
                           "background": list(patterns.BACKGROUND_LEVELS)}},
    "views": {"max_tokens": 256, "min_tokens": 16, "scale": 0.5 ** 0.5, "crop_max_tokens": 36},
    "teacher": {"p_direct": 0.5, "p_miss": 0.15, "grow": [1.3, 3.5], "jitter": 0.35},
    "train": {"warmup_steps": 30, "weight_decay": 0.01, "max_grad_norm": 1.0},
    # read crops first (crop -> answer), then see (crops and views -> answer, view -> box), then act (full teacher
    # episodes); reading crops alone learns ~10x faster than inside the mixture
    "curriculum": [{"phase": "read", "steps": 300, "batch_size": 32, "lr": 1e-3},
                   {"phase": "perceive", "steps": 300, "batch_size": 32, "lr": 1e-3},
                   {"phase": "act", "steps": 150, "batch_size": 16, "lr": 5e-4},
                   {"phase": "act", "steps": 300, "batch_size": 16, "lr": 5e-4},
                   {"phase": "direct", "steps": 150, "batch_size": 16, "lr": 3e-4}],
}


def recipe_fingerprint(recipe: dict = RECIPE) -> str:
    """Hash of the recipe (canonical JSON)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def weights_sha256(folder: str | Path) -> str:
    """SHA-256 of the folder's weight file."""
    return hashlib.sha256((Path(folder) / WEIGHTS_FILE).read_bytes()).hexdigest()


def tokenizer_corpus() -> list[str]:
    """The prompts, tool calls and answers of the pattern task, so the mini tokenizer encodes them compactly."""
    lines = [system_prompt(True), system_prompt(False), REMINDER, FINAL_REMINDER, DIRECT_REMINDER]
    for k, pattern in enumerate(patterns.PATTERNS * 2):
        lines.append(f"<answer>{pattern}</answer>")
        lines.append(tool_call_text([k * 13, k * 7 + 3, k * 13 + 40, k * 7 + 45]))
    _, sample = patterns.make_pattern_sample(0)
    lines.append(initial_messages(sample, (112, 112))[1]["content"][1]["text"])
    return lines


def build_mini_base(folder: Path, recipe: dict = RECIPE) -> None:
    """Write the randomly initialised mini checkpoint (tokenizer, config, weights) to ``folder``."""
    tokenizer = build_tiny_tokenizer(tokenizer_corpus())
    config = tiny_config(tokenizer, text=recipe["text"], vision=recipe["vision"])
    write_random_checkpoint(folder, tokenizer, config, recipe["seed"])


def answer_reply(sample: Sample) -> str:
    """The teacher's answer turn: the correct option's text in answer tags."""
    return f"<answer>{sample.answer_text}</answer>"


class ImperfectTeacher:
    """The scripted policy the mini model imitates (see the module doc): direct answers half the time, loose or
    missing boxes otherwise, always the option text as the answer."""

    def __init__(self, p_direct: float, p_miss: float, grow: Sequence[float], jitter: float) -> None:
        self.p_direct, self.p_miss, self.grow, self.jitter = p_direct, p_miss, tuple(grow), jitter

    def box(self, target: Box, display_size: Size, rng: np.random.Generator) -> list[int]:
        """A loose box around ``target`` (display frame): grown, its centre jittered; sometimes elsewhere."""
        width, height = display_size
        side = max(target[2] - target[0], target[3] - target[1])
        half_w, half_h = (side * rng.uniform(*self.grow) / 2 for _ in range(2))
        if rng.random() < self.p_miss:
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        else:
            cx = (target[0] + target[2]) / 2 + rng.normal(0, self.jitter * side)
            cy = (target[1] + target[3]) / 2 + rng.normal(0, self.jitter * side)
        x1, y1 = max(0, math.floor(cx - half_w)), max(0, math.floor(cy - half_h))
        x2, y2 = min(width, math.ceil(cx + half_w)), min(height, math.ceil(cy + half_h))
        if x2 - x1 < 2 or y2 - y1 < 2:  # pushed off the image: fall back to the target's own box
            x1, y1, x2, y2 = (math.floor(target[0]), math.floor(target[1]), math.ceil(target[2]), math.ceil(target[3]))
        return [x1, y1, x2, y2]

    def episode(self, codec: ChatCodec, env: CropEnvironment, rng: np.random.Generator) -> Context:
        """One teacher episode in ``env`` as a token context (policy mask on the teacher's turns)."""
        sample = env.sample
        context = codec.start(initial_messages(sample, env.display_size), [env.global_image()])
        answer = answer_reply(sample)
        if rng.random() >= self.p_direct:
            target = scale_box(sample.boxes[0], sample.image_size, env.display_size)
            call = tool_call_text(self.box(target, env.display_size, rng))
            context.extend(codec.completion_ids(call), from_policy=True)
            result = env.step(call)
            codec.append_user_turn(context, result.content(), [result.image] if result.image is not None else [])
        context.extend(codec.completion_ids(answer), from_policy=True)
        return context


def _pattern_example(recipe: dict, index: int) -> tuple:
    """Pattern sample ``index`` of the recipe's data seed, its rng and the pyramid level (display size) it is shown
    at (drawn per sample among the levels Stage I and the baseline show)."""
    views, data = recipe["views"], recipe["data"]
    image, sample = patterns.make_pattern_sample(index, data["seed"], size_range=tuple(data["size_range"]))
    rng = np.random.default_rng([recipe["seed"], index])
    levels = downsample_pyramid(sample.image_size, views["max_tokens"], views["scale"], views["min_tokens"])
    return image, sample, rng, levels[int(rng.integers(len(levels)))]


def _single_turn(codec: ChatCodec, image, question: str, reply: str) -> Context:
    """A short one-image exchange (default system prompt): ``question`` about ``image``, then ``reply``."""
    context = codec.start([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
                          [image])
    context.extend(codec.completion_ids(reply), from_policy=True)
    return context


def perception_batch(codec: ChatCodec, teacher: ImperfectTeacher, recipe: dict, start: int, count: int,
                     kinds: Sequence[str] = ("crop", "view", "locate")) -> list[Context]:
    """Short exchanges that teach seeing before acting (curriculum phases ``read`` and ``perceive``), cycling
    through ``kinds``: ``crop``, a teacher crop around the tile -> the answer; ``view``, the global view at a pyramid
    level -> the answer (a guess where illegible); ``locate``, the global view -> a zoom-in call on the tile's box
    padded by ~30%."""
    contexts = []
    for index in range(start, start + count):
        image, sample, rng, size = _pattern_example(recipe, index)
        env = CropEnvironment(sample, size, recipe["views"]["crop_max_tokens"], max_turns=1, original=image)
        target = scale_box(sample.boxes[0], sample.image_size, size)
        kind = kinds[index % len(kinds)]
        if kind == "crop":
            box = ImperfectTeacher(0.0, 0.0, teacher.grow, teacher.jitter).box(target, size, rng)
            crop = env.step(tool_call_text(box)).image
            contexts.append(_single_turn(codec, crop, sample.question, sample.answer_text))
        elif kind == "view":
            contexts.append(_single_turn(codec, env.global_image(), sample.question, sample.answer_text))
        else:
            box = ImperfectTeacher(0.0, 0.0, (1.3, 1.3), 0.0).box(target, size, rng)
            question = f"{sample.question}\nThe image is {size[0]} x {size[1]} pixels. Zoom in on it."
            contexts.append(_single_turn(codec, env.global_image(), question, tool_call_text(box)))
    return contexts


def episode_batch(codec: ChatCodec, teacher: ImperfectTeacher, recipe: dict, start: int,
                  count: int) -> list[Context]:
    """Full teacher episodes (curriculum phase ``act``) on pattern samples ``start .. start+count-1``."""
    contexts = []
    for index in range(start, start + count):
        image, sample, rng, size = _pattern_example(recipe, index)
        env = CropEnvironment(sample, size, recipe["views"]["crop_max_tokens"], max_turns=1, original=image)
        contexts.append(teacher.episode(codec, env, rng))
    return contexts


def direct_batch(codec: ChatCodec, teacher: ImperfectTeacher, recipe: dict, start: int,
                 count: int) -> list[Context]:
    """Curriculum phase ``direct``: teacher episodes (odd indices) interleaved with answers under the no-tool
    prompt (even indices): the global view at a pyramid level -> the option's text (a guess where illegible)."""
    contexts = []
    for index in range(start, start + count):
        if index % 2:
            contexts.extend(episode_batch(codec, teacher, recipe, index, 1))
            continue
        image, sample, _, size = _pattern_example(recipe, index)
        env = CropEnvironment(sample, size, recipe["views"]["crop_max_tokens"], max_turns=0, original=image)
        context = codec.start(initial_messages(sample, size, tools=False), [env.global_image()])
        context.extend(codec.completion_ids(answer_reply(sample)), from_policy=True)
        contexts.append(context)
    return contexts


PHASES = {"read": functools.partial(perception_batch, kinds=("crop",)), "perceive": perception_batch,
          "act": episode_batch, "direct": direct_batch}


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _train_phase(model, codec: ChatCodec, teacher: ImperfectTeacher, recipe: dict, phase: dict,
                 first_index: int) -> list[float]:
    """Supervised steps of one curriculum phase (AdamW, warm-up then cosine); returns the per-step losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=phase["lr"], weight_decay=recipe["train"]["weight_decay"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, recipe["train"]["warmup_steps"], phase["steps"]))
    make_batch, size, losses = PHASES[phase["phase"]], phase["batch_size"], []
    bar = tqdm(range(phase["steps"]), desc=f"mini pre-training: {phase['phase']}")
    for step in bar:
        batch = make_batch(codec, teacher, recipe, first_index + step * size, size)
        loss = imitation_loss(model, batch, codec.pad_id, codec.image_pad_id)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["train"]["max_grad_norm"])
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses


def _resume_point(init: Path, recipe: dict, curriculum: list[dict]) -> tuple[int, list]:
    """How many of ``curriculum``'s phases the mini folder ``init`` already ran (its recorded curriculum must be a
    prefix of this one, run in full) and their final losses."""
    record = json.loads((init / RECIPE_FILE).read_text())
    done = [dict(phase, steps=steps) for phase, steps in zip(record["recipe"]["curriculum"], record["steps_run"])]
    same = {k: v for k, v in record["recipe"].items() if k != "curriculum"} == \
        {k: v for k, v in recipe.items() if k != "curriculum"}
    if not same or len(done) >= len(curriculum) or done != curriculum[:len(done)]:
        raise ValueError(f"{init}: its recipe is not a completed prefix of this recipe's curriculum; "
                         "regenerate from scratch (without --init)")
    if record["weights_sha256"] != weights_sha256(init):
        raise ValueError(f"{init}: {WEIGHTS_FILE} does not match the hash its {RECIPE_FILE} records")
    return len(done), record["final_losses"]


def pretrain_mini(out_dir: str | Path, recipe: dict = RECIPE, steps: int | None = None,
                  init: str | Path | None = None) -> Path:
    """Build the mini base and train it through the recipe's curriculum (each phase on new samples); write it, with
    its recipe record, to ``out_dir``. ``steps`` caps every phase's step count (a shorter run, recorded as such).
    ``init``: a mini folder that ran the first phases of this curriculum; training goes on from its weights with
    the next phase. Phases share no optimizer or RNG state and draw samples by index, so this ends where a run from
    scratch ends (up to floating-point nondeterminism across machines)."""
    out = Path(out_dir)
    curriculum = [dict(phase, steps=min(phase["steps"], steps) if steps is not None else phase["steps"])
                  for phase in recipe["curriculum"]]
    torch.manual_seed(recipe["seed"])
    skip, final_losses = _resume_point(Path(init), recipe, curriculum) if init is not None else (0, [])
    with atomic_folder(out) as staging:  # never a half-written model folder, the old one kept until the new is whole
        if init is not None:
            shutil.copytree(init, staging, dirs_exist_ok=True)
        else:
            build_mini_base(staging, recipe)
        codec = ChatCodec.for_model(str(staging), recipe["views"]["max_tokens"])
        model = load_model(staging).train()
        teacher = ImperfectTeacher(**recipe["teacher"])
        start = time.time()
        first_index = sum(phase["steps"] * phase["batch_size"] for phase in curriculum[:skip])
        for phase in curriculum[skip:]:
            losses = _train_phase(model, codec, teacher, recipe, phase, first_index)
            first_index += phase["steps"] * phase["batch_size"]
            final_losses.append([phase["phase"], float(np.mean(losses[-50:]))])
        model.save_pretrained(staging)
        record = {"recipe": recipe, "recipe_fingerprint": recipe_fingerprint(recipe),
                  "steps_run": [phase["steps"] for phase in curriculum], "final_losses": final_losses,
                  "train_seconds": round(time.time() - start, 1), "weights_sha256": weights_sha256(staging)}
        if init is not None:
            record["continued_from_phase"] = skip
        (staging / RECIPE_FILE).write_text(json.dumps(record, indent=1) + "\n")
        for path in staging.iterdir():
            path.chmod(0o644)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: regenerate the mini model from its recipe."""
    parser = argparse.ArgumentParser(description="Pre-train the miniature Qwen2.5-VL on the pattern task.")
    parser.add_argument("--out", type=Path, default=Path("models/mini"), help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="cap every phase's step count (testing)")
    parser.add_argument("--init", type=Path, default=None,
                        help="a mini folder that ran the first phases of the recipe: go on from its weights")
    args = parser.parse_args(argv)
    print(pretrain_mini(args.out, steps=args.steps, init=args.init))


if __name__ == "__main__":
    main()
