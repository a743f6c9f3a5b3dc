"""Generation backend on a transformers model: batched, multi-image, token-in/token-out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch.utils.weak import WeakIdKeyDictionary
from transformers import DynamicCache
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

from lfpc.model.families import backbone_for
from lfpc.rollout.base import Completion, Context, SamplingConfig
from lfpc.rollout.inputs import batch_inputs


@dataclass
class _Kept:
    """The keys and values the engine kept of one context after its turn: ``token_ids`` (the context then, and the
    tokens it generated) sit in the columns where ``mask`` is true, in order (the others are padding or tokens after
    a stop); ``pixels`` are the context's images, all within its first ``context_length`` tokens."""

    token_ids: list[int]
    context_length: int
    pixels: tuple[torch.Tensor, ...]
    keys: list[torch.Tensor]     # per layer: heads x columns x head_dim
    values: list[torch.Tensor]
    mask: torch.Tensor           # columns, bool

    def first(self, tokens: int) -> "_Kept":
        """The same for the first ``tokens`` tokens only: the columns after the last of them are cut off."""
        columns = int(torch.nonzero(self.mask.cumsum(0) == tokens)[0]) + 1
        return _Kept(self.token_ids[:tokens], self.context_length, self.pixels,
                     [k[..., :columns, :] for k in self.keys], [v[..., :columns, :] for v in self.values],
                     self.mask[:columns])


@dataclass
class _Row:
    """One distinct context of a batch: what is kept of it, and the tokens and images still to prefill."""

    context: Context
    kept: _Kept | None
    new_tokens: int
    new_pixels: list[torch.Tensor]
    new_grids: list[torch.Tensor]


class HFRolloutEngine:
    """Generates with ``model.generate`` on its own model instance (synced from the trainer by ``load_weights``).
    Each token's log-prob is taken under the distribution that sampled it (temperature, top-p and the suppressed
    tokens applied), as the vLLM engine reports it.

    Nothing is computed twice while the weights are unchanged and :meth:`sleep` is not called:

    * each image is encoded by the vision tower once (its embeddings are kept, keyed by its pixel tensor, while a
      context holds that tensor);
    * each context's keys and values are kept after its turn, so its next turn prefills only the tokens appended
      since (the generated turn's last token, the tool reply, the new crop), not the whole sequence again;
    * identical contexts in a batch (the rollouts of a group at their first turn) are prefilled once.

    The keys and values kept after a call take at most ``kept_cache_gib`` GiB on the model's device (a batch whose
    cache would not fit is not kept: its contexts are prefilled in full at their next turn); 0 keeps none. A family
    whose text layers hold recurrent states (:attr:`lfpc.model.families.Backbone.recurrent_state`, Qwen3.5) keeps
    none either and prefills identical contexts separately (a recurrent state can be neither cut at a token nor
    shared between rows); images are still encoded once. With ``offload_when_asleep`` the replica itself moves to
    host memory while asleep (the trainer's update) and back at the next weight push or generation.
    """

    def __init__(self, model, pad_id: int, image_pad_id: int, batch_size: int = 16,
                 kept_cache_gib: float = 4.0, offload_when_asleep: bool = False) -> None:
        self.model = model.eval()
        self.home = next(model.parameters()).device
        self.offload_when_asleep = offload_when_asleep
        self.pad_id = pad_id
        self.image_pad_id = image_pad_id
        self.batch_size = batch_size
        self.kept_cache_bytes = int(kept_cache_gib * 2 ** 30)
        self._embeds: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._kept: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._kept_bytes = 0
        self._weights_version = -1
        # a family with linear-attention layers (recurrent states, not keys and values: Qwen3.5) keeps nothing
        # between turns and prefills each context on its own
        self._recurrent = backbone_for(model.config.model_type).recurrent_state

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def generate(self, contexts: list[Context], sampling: SamplingConfig) -> list[Completion]:
        """Continue each context until a stop token or ``max_new_tokens``; returns sampled tokens and log-probs."""
        self._wake_up()
        version = sum(p._version for p in self.model.parameters())
        if version != self._weights_version:
            self._forget()
            self._weights_version = version
        kept, self._kept_bytes = WeakIdKeyDictionary(), 0
        completions: list[Completion] = []
        for start in range(0, len(contexts), self.batch_size):
            completions.extend(self._generate_batch(contexts[start:start + self.batch_size], sampling, kept))
        self._kept = kept  # a context's next turn continues from this call, never from an older one
        return completions

    def _generate_batch(self, contexts: list[Context], sampling: SamplingConfig,
                        kept: WeakIdKeyDictionary) -> list[Completion]:
        rows, index = self._distinct_rows(contexts)
        ids, mask, positions, cache = self._prefill(rows)
        if index != list(range(len(rows))):  # identical contexts were prefilled once: give each its own copy
            select = torch.tensor(index, device=self.device)
            for layer in cache.layers:
                layer.batch_select_indices(select)
            ids, mask, positions = ids[select], mask[select], positions[:, select]
        greedy = sampling.temperature <= 0
        out = self.model.generate(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
            max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
            temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
            top_k=None, eos_token_id=list(sampling.stop_token_ids), pad_token_id=self.pad_id,
            suppress_tokens=list(sampling.suppress_token_ids) or None,
            return_dict_in_generate=True, output_scores=True)
        new_tokens = out.sequences[:, ids.shape[1]:]
        # the scores the tokens were sampled from: temperature, top-p and the suppressed tokens applied (as vLLM's
        # processed log-probs, so both engines report the log-prob under the distribution that sampled the token)
        scores = torch.stack(out.scores, dim=1).float()
        logprobs = torch.log_softmax(scores, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        stops = set(sampling.stop_token_ids)
        completions = []
        for tokens, lps in zip(new_tokens.tolist(), logprobs.tolist()):
            end = next((i + 1 for i, t in enumerate(tokens) if t in stops), None)
            finish = "stop" if end is not None else "length"
            end = end or len(tokens)
            completions.append(Completion(token_ids=tokens[:end], logprobs=lps[:end], finish_reason=finish))
        self._keep(contexts, completions, mask, out.past_key_values, kept)
        return completions

    def _distinct_rows(self, contexts: list[Context]) -> tuple[list[_Row], list[int]]:
        """The batch's distinct contexts (same kept state, same new tokens, same new images) and, per context, the
        index of its row."""
        rows: dict[tuple, int] = {}
        distinct: list[_Row] = []
        index = []
        for context in contexts:
            kept = self._kept_prefix(context)
            cached, images = (len(kept.token_ids), len(kept.pixels)) if kept else (0, 0)
            key = (id(kept), tuple(context.token_ids[cached:]), tuple(map(id, context.pixel_values[images:])),
                   id(context) if self._recurrent else None)
            if key not in rows:
                rows[key] = len(distinct)
                distinct.append(_Row(context, kept, len(context.token_ids) - cached,
                                     context.pixel_values[images:], context.image_grid_thw[images:]))
            index.append(rows[key])
        return distinct, index

    def _kept_prefix(self, context: Context) -> _Kept | None:
        """What is kept of ``context`` from the previous call, up to where the context departs from it (its tokens
        after the kept context may differ from the generated ones, e.g. a turn replaced by a script); None when the
        context no longer starts with the kept context and its images."""
        kept = self._kept.pop(context, None)  # used once: the previous call's caches go as their batches are done
        if kept is None or len(context.token_ids) <= kept.context_length:
            return None
        same = kept.context_length
        if context.token_ids[:same] != kept.token_ids[:same] or len(kept.pixels) > len(context.pixel_values):
            return None
        if not all(a is b for a, b in zip(kept.pixels, context.pixel_values)):
            return None
        limit = min(len(kept.token_ids), len(context.token_ids) - 1)  # at least one token is left to feed
        while same < limit and context.token_ids[same] == kept.token_ids[same]:
            same += 1
        return kept if same == len(kept.token_ids) else kept.first(same)

    def _prefill(self, rows: list[_Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache]:
        """A cache holding every row's kept columns (right-aligned) followed by its new tokens but the last, which
        ``generate`` feeds. Returns the input ids, attention mask and M-RoPE positions over the cache's columns and
        the last one (the kept columns' ids and positions are placeholders: they are never fed again)."""
        full = batch_inputs([r.context for r in rows], self.pad_id, self.image_pad_id, padding_side="left",
                            device=self.device, pixels=False)
        positions, _ = self.model.model.get_rope_index(
            full["input_ids"], mm_token_type_ids=full["mm_token_type_ids"],
            image_grid_thw=full.get("image_grid_thw"), attention_mask=full["attention_mask"])
        new = max(r.new_tokens for r in rows)
        new_mask = torch.arange(new, device=self.device)[None] >= torch.tensor(
            [new - r.new_tokens for r in rows], device=self.device)[:, None]
        new_ids = full["input_ids"][:, -new:].masked_fill(~new_mask, self.pad_id)
        new_positions = positions[:, :, -new:] * new_mask
        cache, kept_mask = self._kept_cache(rows)
        if new > 1:
            grids = [g for r in rows for g in r.new_grids]
            embeds = self._image_embeds([p for r in rows for p in r.new_pixels], grids) if grids else None
            self.model.model(
                input_ids=new_ids[:, :-1], attention_mask=torch.cat([kept_mask, new_mask[:, :-1]], 1).long(),
                position_ids=new_positions[:, :, :-1], past_key_values=cache, use_cache=True,
                mm_encoder_outputs={"image": embeds} if grids else None)
        columns = kept_mask.shape[1]
        ids = torch.cat([new_ids.new_full((len(rows), columns), self.pad_id), new_ids], 1)
        mask = torch.cat([kept_mask, new_mask], 1).long()
        positions = torch.cat([new_positions.new_zeros((3, len(rows), columns)), new_positions], 2)
        return ids, mask, positions, cache

    def _kept_cache(self, rows: list[_Row]) -> tuple[DynamicCache, torch.Tensor]:
        """The rows' kept keys and values side by side, right-aligned (zeros and a false mask before a shorter one)."""
        columns = max((r.kept.mask.numel() for r in rows if r.kept), default=0)
        mask = torch.zeros((len(rows), columns), dtype=torch.bool, device=self.device)
        if not columns:
            return DynamicCache(config=self.model.config), mask
        sample = next(r.kept for r in rows if r.kept)
        layers = []
        for layer in range(len(sample.keys)):
            shape = (len(rows), *sample.keys[layer].shape[:-2], columns, sample.keys[layer].shape[-1])
            keys, values = sample.keys[layer].new_zeros(shape), sample.values[layer].new_zeros(shape)
            for row, r in enumerate(rows):
                if r.kept:
                    keys[row, ..., columns - r.kept.mask.numel():, :] = r.kept.keys[layer]
                    values[row, ..., columns - r.kept.mask.numel():, :] = r.kept.values[layer]
            layers.append((keys, values))
        for row, r in enumerate(rows):
            if r.kept:
                mask[row, columns - r.kept.mask.numel():] = r.kept.mask
        return DynamicCache(layers, config=self.model.config), mask

    def _keep(self, contexts: list[Context], completions: list[Completion], mask: torch.Tensor,
              cache: DynamicCache, kept: WeakIdKeyDictionary) -> None:
        """Keep each context's keys and values for its next turn: every column but the last generated one (whose
        token ``generate`` sampled and never fed), unless the batch's cache would not fit in ``kept_cache_gib``."""
        if self._recurrent:
            return
        size = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        if self._kept_bytes + size > self.kept_cache_bytes:
            return
        self._kept_bytes += size
        generated = cache.get_seq_length() - mask.shape[1]
        for row, (context, completion) in enumerate(zip(contexts, completions)):
            fed = min(len(completion.token_ids), generated)
            columns = torch.arange(generated, device=self.device) < fed
            kept[context] = _Kept(token_ids=context.token_ids + completion.token_ids[:fed],
                                  context_length=len(context.token_ids), pixels=tuple(context.pixel_values),
                                  keys=[layer.keys[row] for layer in cache.layers],
                                  values=[layer.values[row] for layer in cache.layers],
                                  mask=torch.cat([mask[row].bool(), columns]))

    def _image_embeds(self, pixels: list[torch.Tensor],
                      grids: list[torch.Tensor]) -> BaseModelOutputWithDeepstackFeatures:
        """Vision-tower outputs of the images in order, as the model's forward takes them (``mm_encoder_outputs``),
        encoding only the images not seen before, one at a time (concatenating a turn's crops first costs more than
        it saves: measured in BENCHMARKS.md, run E). Each image keeps its embeddings and, for a family with DeepStack
        (Qwen3-VL, :mod:`lfpc.model.families`), its per-layer DeepStack features."""
        for p, g in zip(pixels, grids):
            if p not in self._embeds:
                out = self.model.model.get_image_features(p.to(self.device), g[None].to(self.device))
                deepstack = getattr(out, "deepstack_features", None)
                self._embeds[p] = (out.pooler_output[0],
                                   None if deepstack is None else tuple(layer[0] for layer in deepstack))
        encoded = [self._embeds[p] for p in pixels]
        deepstack = None if encoded[0][1] is None else [tuple(layers[i] for _, layers in encoded)
                                                         for i in range(len(encoded[0][1]))]
        return BaseModelOutputWithDeepstackFeatures(pooler_output=tuple(e for e, _ in encoded),
                                                    deepstack_features=deepstack)

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy full tensors into the engine model in place; every parameter must be covered."""
        self._wake_up()
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
        """Drop the kept image embeddings and keys / values (they would otherwise live as long as the rollout's
        contexts); the replica moves to host memory with ``offload_when_asleep``, else stays resident."""
        self._forget()
        if self.offload_when_asleep and self.home.type != "cpu":
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def _wake_up(self) -> None:
        """The replica back on its device after an offloading :meth:`sleep` (nothing to do otherwise)."""
        if self.device != self.home:
            self.model.to(self.home)

    def _forget(self) -> None:
        """Drop what was computed with the current weights: the kept image embeddings and keys / values."""
        self._embeds.clear()
        self._kept = WeakIdKeyDictionary()
