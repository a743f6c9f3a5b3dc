"""Generation backend on a transformers model: batched, multi-image, token-in/token-out."""

from __future__ import annotations

from typing import Iterable

import torch
from torch.utils.weak import WeakIdKeyDictionary
from transformers.modeling_outputs import BaseModelOutputWithPooling

from lfpc.model.inputs import batch_inputs
from lfpc.rollout.base import Completion, Context, SamplingConfig


class HFRolloutEngine:
    """Generates with ``model.generate`` on its own model instance (synced from the trainer by ``load_weights``).

    Each image is encoded by the vision tower once: its embeddings are kept, keyed by the identity of its pixel
    tensor, while a context holds that tensor, the vision weights are unchanged and :meth:`sleep` is not called. A
    later turn encodes only its new images, and the rollouts of a group (copies of one prompt context) share their
    prompt's encoding.
    """

    def __init__(self, model, pad_id: int, image_pad_id: int, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.pad_id = pad_id
        self.image_pad_id = image_pad_id
        self.batch_size = batch_size
        self._embeds: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._vision_version = -1

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def generate(self, contexts: list[Context], sampling: SamplingConfig) -> list[Completion]:
        """Continue each context until a stop token or ``max_new_tokens``; returns sampled tokens and log-probs."""
        completions: list[Completion] = []
        for start in range(0, len(contexts), self.batch_size):
            completions.extend(self._generate_batch(contexts[start:start + self.batch_size], sampling))
        return completions

    def _generate_batch(self, contexts: list[Context], sampling: SamplingConfig) -> list[Completion]:
        inputs = batch_inputs(contexts, self.pad_id, self.image_pad_id, padding_side="left", device=self.device,
                              pixels=False)
        if "image_grid_thw" in inputs:
            embeds = self._image_embeds([p for c in contexts for p in c.pixel_values],
                                        [g for c in contexts for g in c.image_grid_thw])
            inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=embeds)}
        self.model.model.rope_deltas = None
        greedy = sampling.temperature <= 0
        out = self.model.generate(
            **inputs, max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
            temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
            top_k=None, eos_token_id=list(sampling.stop_token_ids), pad_token_id=self.pad_id,
            suppress_tokens=list(sampling.suppress_token_ids) or None,
            return_dict_in_generate=True, output_logits=True)
        self.model.model.rope_deltas = None
        new_tokens = out.sequences[:, inputs["input_ids"].shape[1]:]
        logits = torch.stack(out.logits, dim=1).float()
        if not greedy:
            logits = logits / sampling.temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        stops = set(sampling.stop_token_ids)
        completions = []
        for tokens, lps in zip(new_tokens.tolist(), logprobs.tolist()):
            end = next((i + 1 for i, t in enumerate(tokens) if t in stops), None)
            finish = "stop" if end is not None else "length"
            end = end or len(tokens)
            completions.append(Completion(token_ids=tokens[:end], logprobs=lps[:end], finish_reason=finish))
        return completions

    def _image_embeds(self, pixels: list[torch.Tensor], grids: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Vision-tower outputs of each image in order, encoding in one call only the images not seen before."""
        version = sum(p._version for p in self.model.model.visual.parameters())
        if version != self._vision_version:
            self._embeds.clear()
            self._vision_version = version
        new = list({id(p): (p, g) for p, g in zip(pixels, grids) if p not in self._embeds}.values())
        if new:
            grid = torch.stack([g for _, g in new]).to(self.device)
            out = self.model.model.get_image_features(torch.cat([p for p, _ in new]).to(self.device), grid)
            for (p, _), embeds in zip(new, out.pooler_output):
                self._embeds[p] = embeds
        return tuple(self._embeds[p] for p in pixels)

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy full tensors into the engine model in place; every parameter must be covered."""
        state = self.model.state_dict()
        seen = set()
        for name, tensor in named_tensors:
            if name not in state:
                raise KeyError(f"weight {name!r} is not a parameter of the rollout model")
            state[name].copy_(tensor.to(state[name].device, state[name].dtype))
            seen.add(name)
        missing = set(dict(self.model.named_parameters())) - seen
        if missing:
            raise KeyError(f"weight push did not cover {len(missing)} parameters, e.g. {sorted(missing)[:3]}")

    def sleep(self) -> None:
        """Drop the kept image embeddings (they would otherwise live as long as the rollout's contexts); the replica
        stays resident (it is small next to the trainer's state)."""
        self._embeds.clear()
