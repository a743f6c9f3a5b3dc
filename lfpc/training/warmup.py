"""Format warm-up for the tiny model: a short supervised pass on scripted tool-use episodes.

A random-init tiny model never emits a well-formed ``<tool_call>`` or ``<answer>``, so every reward is 0 and GRPO has
no signal. The warm-up plays the role of the instruct model of the paper: it teaches the *format* only (random boxes,
random letters), so accuracy and grounding still have to be learned by RL.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tqdm import tqdm

from lfpc.agent.prompt import tool_call_text
from lfpc.data.records import LETTERS, Sample
from lfpc.files import atomic_folder, entry_lock
from lfpc.grpo.logprobs import imitation_loss
from lfpc.model.loading import load_model, model_fingerprint
from lfpc.rollout.base import Completion, Context, SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.episodes import EpisodeConfig, run_episodes
from lfpc.vision.budget import fit_to_budget

MARKER = "lfpc_warmup.json"


class FormatTeacher:
    """A scripted policy: one zoom-in on a random box of the shown image, then a random option letter."""

    def __init__(self, codec: ChatCodec, seed: int, num_options: int = 4) -> None:
        self.codec, self.rng, self.num_options = codec, random.Random(seed), num_options

    def _text(self, context: Context) -> str:
        if len(context.images) > 1:
            return f"<think>The crop shows it.</think><answer>{self.rng.choice(LETTERS[:self.num_options])}</answer>"
        w, h = self.codec.image_size(context.image_grid_thw[0])
        x1, y1 = self.rng.uniform(0, w * 0.8), self.rng.uniform(0, h * 0.8)
        x2, y2 = self.rng.uniform(x1 + w * 0.1, w), self.rng.uniform(y1 + h * 0.1, h)
        box = self.codec.backbone.coordinates.from_pixels((x1, y1, x2, y2), (w, h))  # as the backbone writes boxes
        return "<think>I need a closer look.</think>" + tool_call_text([round(v) for v in box])

    def generate(self, contexts: list[Context], sampling: SamplingConfig) -> list[Completion]:
        completions = []
        for context in contexts:
            ids = self.codec.completion_ids(self._text(context))
            completions.append(Completion(ids, [0.0] * len(ids), "stop"))
        return completions

    def load_weights(self, named_tensors: Iterable) -> None:
        raise TypeError("a scripted teacher has no weights")


def warm_up(base_dir: str | Path, out_dir: str | Path, samples: Sequence[Sample], steps: int = 150,
            global_max_tokens: int = 16, crop_max_tokens: int = 4, lr: float = 3e-3, seed: int = 0) -> Path:
    """Fine-tune the model at ``base_dir`` on scripted episodes of ``samples``; save to ``<out_dir>-<digest>`` (cached)
    and return that folder.

    The digest is that of every setting (base model, samples, steps, ...), so warm-ups with other settings (e.g.
    ``size=smoke`` and the default) get their own folders and never replace one another under a running job; a
    second process asking for the same warm-up waits for the first and reuses its folder."""
    params = {"base": str(base_dir), "base_fingerprint": model_fingerprint(base_dir), "samples": [s.id for s in samples],
              "steps": steps, "lr": lr, "seed": seed, "global_max_tokens": global_max_tokens,
              "crop_max_tokens": crop_max_tokens}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    out = Path(f"{out_dir}-{digest}")
    with entry_lock(out, wait=True):
        if (out / MARKER).is_file() and json.loads((out / MARKER).read_text()) == params:
            return out
        model, codec = _train(base_dir, samples, steps, global_max_tokens, crop_max_tokens, lr, seed)
        with atomic_folder(out) as staging:
            model.save_pretrained(staging)
            codec.processor.save_pretrained(staging)
            (staging / MARKER).write_text(json.dumps(params))
    return out


def _train(base_dir: str | Path, samples: Sequence[Sample], steps: int, global_max_tokens: int, crop_max_tokens: int,
           lr: float, seed: int) -> tuple[torch.nn.Module, ChatCodec]:
    """The warmed model and its codec (see :func:`warm_up`)."""
    torch.manual_seed(seed)
    codec = ChatCodec.for_model(str(base_dir), max(global_max_tokens, crop_max_tokens))
    model = load_model(base_dir).train()
    teacher = FormatTeacher(codec, seed)
    episode = EpisodeConfig(max_turns=2, crop_max_tokens=crop_max_tokens)
    sizes = [fit_to_budget(s.image_size, global_max_tokens, side=codec.token_side) for s in samples]
    contexts = [t.context for t in run_episodes(teacher, codec, samples, sizes, 2, episode, SamplingConfig())]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in tqdm(range(steps), desc="format warm-up", leave=False):
        batch = [contexts[(step * 4 + k) % len(contexts)] for k in range(4)]
        loss = imitation_loss(model, batch, codec.pad_id, codec.image_pad_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, codec
