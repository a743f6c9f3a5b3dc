"""Generation backend on vLLM's offline engine, colocated with the trainer (token-in/token-out, multi-image).

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a weight push is a direct in-place
copy into the running model: no serialization, no reload from disk. Contexts that share the same tokens and
images (the ``group_size`` copies of a prompt) become one request with ``n`` samples, so the prompt and its
images are encoded once. Images are the context's own (already at their display size); vLLM's processor gets
the trainer processor's min/max pixels, so it computes the same grids and expands each ``<|image_pad|>``
placeholder to the same number of tokens the trainer sees (checked on every request).

Rollout log-probs are vLLM's ``processed_logprobs``: the log-prob of each sampled token under the distribution
that actually sampled it (temperature, top-p and the suppressed vision tokens applied) — the denominator that
truncated importance sampling (``grpo.tis_cap``) corrects for.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from lfpc.rollout import vllm_compat
from lfpc.rollout.base import Completion, Context, SamplingConfig


SLEEP_LEVELS = (1, 2)
MAX_MEMORY_SHARE = 0.9  # vLLM's own default share when it has the GPU alone
MIN_MEMORY_SHARE = 0.1  # below this vLLM cannot hold a 3B model's bf16 weights and a KV cache on an 80 GB card


def memory_share(total_bytes: int, trainer_bytes: int, reserve_gib: float) -> float:
    """vLLM's ``gpu_memory_utilization`` when the config leaves it null: the share of the GPU's ``total_bytes``
    left after what the colocated trainer keeps on it during rollouts (``trainer_bytes``: its weight shards,
    gradients and AdamW moments, :func:`lfpc.training.sharding.resident_state_bytes`) and ``reserve_gib`` (CUDA
    context, NCCL buffers, one full tensor gathered for the weight push, fragmentation), at most 0.9."""
    share = (total_bytes - trainer_bytes - reserve_gib * 2 ** 30) / total_bytes
    if share < MIN_MEMORY_SHARE:
        raise ValueError(
            f"only {max(share, 0):.2f} of the GPU's {total_bytes / 2 ** 30:.1f} GiB is left for vLLM after the "
            f"trainer's {trainer_bytes / 2 ** 30:.1f} GiB (weights, gradients, AdamW) and rollout.memory_reserve_gib="
            f"{reserve_gib:g}; shard the trainer over more GPUs, or set rollout.gpu_memory_utilization")
    return min(share, MAX_MEMORY_SHARE)


class VLLMRolloutEngine:
    """A vLLM ``LLM`` serving the policy; implements :class:`lfpc.rollout.base.RolloutEngine`."""

    def __init__(self, model_path: str, image_pad_id: int, min_pixels: int, max_pixels: int, *,
                 device: torch.device | str = "cpu", dtype: str = "bfloat16", seed: int = 0,
                 max_images_per_prompt: int = 6, max_model_len: int | None = None,
                 gpu_memory_utilization: float | None = None, memory_reserve_gib: float = 6.0,
                 trainer_bytes: int = 0, max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                 enforce_eager: bool | None = None, sleep_level: int = 2, cpu_kvcache_space_gib: int = 1) -> None:
        """Start the engine on the checkpoint at ``model_path`` (the keys of ``conf/rollout/vllm.yaml``).

        ``device`` is where the trainer runs: on CUDA the engine uses CUDA graphs and sleep mode, and takes
        ``gpu_memory_utilization`` of the GPU (None: :func:`memory_share` of what the trainer's ``trainer_bytes``
        and ``memory_reserve_gib`` leave); on CPU it runs eager with a ``cpu_kvcache_space_gib`` KV cache.
        ``max_num_seqs`` / ``max_num_batched_tokens`` None: vLLM's defaults. ``min_pixels``/``max_pixels`` must be
        the trainer processor's (:func:`lfpc.rollout.factory.build_engine` passes the codec's).
        """
        if sleep_level not in SLEEP_LEVELS:
            raise ValueError(f"rollout.sleep_level must be one of {SLEEP_LEVELS}, got {sleep_level!r}")
        self.device = torch.device(device)
        self.image_pad_id = image_pad_id
        self.sleep_level = sleep_level
        self.sleep_enabled = self.device.type == "cuda"  # vLLM's sleep mode exists on CUDA only
        self.asleep = False
        self.weights_discarded = False  # level 2 dropped them: only a weight push brings the engine back
        _configure_environment(self.device, cpu_kvcache_space_gib)
        vllm_compat.ensure_ready()
        from vllm import LLM

        eager = self.device.type != "cuda" if enforce_eager is None else enforce_eager  # no graph capture on CPU
        launcher = _launcher_for_trainer_ranks()
        if launcher:
            seed += torch.distributed.get_rank()  # each rank draws its own samples
        if self.device.type == "cuda" and gpu_memory_utilization is None:
            total = torch.cuda.get_device_properties(self.device).total_memory
            gpu_memory_utilization = memory_share(total, trainer_bytes, memory_reserve_gib)
        self.gpu_memory_utilization = gpu_memory_utilization
        knobs = {"gpu_memory_utilization": gpu_memory_utilization, "max_num_seqs": max_num_seqs,
                 "max_num_batched_tokens": max_num_batched_tokens}
        self.llm = LLM(
            model=str(model_path), dtype=dtype, seed=seed, max_model_len=max_model_len, enforce_eager=eager,
            enable_sleep_mode=self.sleep_enabled,
            distributed_executor_backend=launcher, logprobs_mode="processed_logprobs",
            limit_mm_per_prompt={"image": max_images_per_prompt, "video": 0},
            mm_processor_kwargs={"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}},
            **{key: value for key, value in knobs.items() if value is not None},
        )
        self._tickets = itertools.count()
        self._open: dict[int, _Ticket] = {}  # submitted, not finished
        self._requests: dict[str, tuple[int, list[int]]] = {}  # vLLM request id -> (ticket, context indices)

    # ----- generation -----
    def generate(self, contexts: list[Context], sampling: SamplingConfig) -> list[Completion]:
        """Continue each context until a stop token or ``max_new_tokens``; returns sampled tokens and log-probs."""
        if self._open:
            raise RuntimeError("generate() while submitted requests are open: it would take their outputs")
        ticket = self.submit(contexts, sampling)
        while True:
            for finished, completions in self.poll():
                if finished == ticket:
                    return completions

    def submit(self, contexts: list[Context], sampling: SamplingConfig) -> int:
        """Queue one continuation per context without waiting; :meth:`poll` returns them. Contexts with the same
        tokens and images become one request with ``n`` samples (drawn with seeds ``sampling.seed + k``)."""
        from vllm.inputs import TokensPrompt

        self.wake_up()
        groups = _group_identical(contexts)
        greedy = sampling.temperature <= 0
        prompts, params = [], []
        for members in groups:
            context = contexts[members[0]]
            prompt = TokensPrompt(prompt_token_ids=_collapse_runs(context.token_ids, self.image_pad_id))
            if context.images:
                prompt["multi_modal_data"] = {"image": list(context.images)}
            prompts.append(prompt)
            params.append(self._sampling_params(sampling, n=1 if greedy else len(members)))
        ticket = next(self._tickets)
        self._open[ticket] = _Ticket(contexts, [None] * len(contexts), len(groups), greedy)
        for request_id, members in zip(self.llm.enqueue(prompts, params, use_tqdm=False), groups):
            # enqueue returns vLLM's internal id ("<id>-<8 random characters>"); outputs carry the id before the dash
            self._requests[request_id.partition("-")[0]] = (ticket, members)
        return ticket

    def poll(self) -> list[tuple[int, list[Completion]]]:
        """One engine step; returns the tickets whose requests have all finished."""
        finished = []
        for output in self.llm.llm_engine.step():
            if not output.finished:
                continue
            ticket, members = self._requests.pop(output.request_id)
            state = self._open[ticket]
            _check_expansion(state.contexts[members[0]], output.prompt_token_ids)
            for k, index in enumerate(members):
                state.completions[index] = _completion(output.outputs[0 if state.greedy else k])
            state.requests_left -= 1
            if not state.requests_left:
                finished.append((ticket, self._open.pop(ticket).completions))
        return finished

    def _sampling_params(self, sampling: SamplingConfig, n: int):
        from vllm import SamplingParams

        greedy = sampling.temperature <= 0
        return SamplingParams(
            n=n, temperature=0.0 if greedy else sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens, stop_token_ids=list(sampling.stop_token_ids), ignore_eos=True,
            logit_bias={t: float("-inf") for t in sampling.suppress_token_ids} or None,
            logprobs=0, detokenize=False, seed=sampling.seed,
        )

    # ----- weight sync -----
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy full (unsharded) trainer tensors into the running model in place, then drop the caches they invalidate.

        Names are the trainer's (transformers) state-dict names; vLLM maps them to its fused layout. Raises if any
        parameter of the vLLM model was left without a value.
        """
        if self.sleep_enabled and self.asleep:
            self.llm.wake_up(tags=["weights"])  # level 2: fresh memory (and the saved buffers), overwritten below
        missing = self.llm.collective_rpc(_reload_in_place, args=(named_tensors,))[0]
        if missing:
            raise KeyError(f"weight push did not cover {len(missing)} vLLM parameters, e.g. {missing[:3]}")
        self.weights_discarded = False
        self.wake_up()
        self.llm.reset_prefix_cache()  # KV blocks computed with the old weights
        self.llm.llm_engine.reset_encoder_cache()  # vision embeddings computed with the old weights

    # ----- memory (CUDA) -----
    def sleep(self) -> None:
        """Free the GPU memory during the trainer's update (CUDA; a no-op elsewhere): the KV cache always; the
        weights offloaded to host memory at ``sleep_level`` 1, discarded at level 2 (the trainer pushes new ones
        before the next rollout anyway: no 15 GiB host copy per step at 7B)."""
        if self.sleep_enabled and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            torch.cuda.empty_cache()
            self.asleep = True
            self.weights_discarded = self.sleep_level == 2

    def wake_up(self) -> None:
        """Bring back what :meth:`sleep` released; called by :meth:`generate` and :meth:`load_weights`. After a
        level-2 sleep only :meth:`load_weights` can: the weights are gone."""
        if self.weights_discarded:
            raise RuntimeError("the vLLM engine slept at level 2 (rollout.sleep_level), which discards its weights: "
                               "push weights with load_weights() before generating")
        if self.sleep_enabled and self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        """Release the engine for good: weights and KV cache discarded (CUDA), the engine core shut down (its
        process groups and cached memory freed). For an engine that is done, e.g. the resolution selection's
        before the trainer builds its own
        (:func:`lfpc.rollout.factory.release_engine` then collects it)."""
        if self.sleep_enabled and not self.asleep:
            self.llm.sleep(level=2)
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None


@dataclass
class _Ticket:
    """The contexts of one :meth:`VLLMRolloutEngine.submit` and their completions as they finish."""

    contexts: list[Context]
    completions: list[Completion | None]
    requests_left: int
    greedy: bool


def _configure_environment(device: torch.device, cpu_kvcache_space_gib: int) -> None:
    """vLLM settings that must be in the environment before the engine starts."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in this process: in-place weight pushes
    if device.type == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kvcache_space_gib))
        # vLLM's CPU worker drops torch to 1 thread unless OMP_NUM_THREADS is set; the trainer shares this process
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


def _launcher_for_trainer_ranks() -> str | None:
    """``external_launcher`` when the trainer runs several ranks (else None, vLLM's single-process executor).

    Each rank then runs its own engine inside the existing process group, as TRL's colocate mode does; vLLM reads
    the rank layout from the environment (set by torchrun; filled in here when another launcher did not).
    """
    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return None
    rank = torch.distributed.get_rank()
    local = rank % torch.cuda.device_count() if torch.cuda.is_available() else rank
    for key, value in (("RANK", rank), ("WORLD_SIZE", torch.distributed.get_world_size()), ("LOCAL_RANK", local)):
        os.environ.setdefault(key, str(value))
    return "external_launcher"


def _reload_in_place(worker, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Runs on vLLM's worker: layer-wise in-place reload (vLLM re-applies its kernel repacking after loading).

    Returns the names of vLLM parameters that received no value.
    """
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import (
        finalize_layerwise_reload,
        initialize_layerwise_reload,
    )

    model = worker.model_runner.get_model()
    expected = {name for name, _ in model.named_parameters()}
    with set_current_vllm_config(worker.vllm_config), torch.no_grad():
        initialize_layerwise_reload(model)
        loaded = model.load_weights(named_tensors)
        finalize_layerwise_reload(model, worker.vllm_config.model_config)
    return sorted(expected - set(loaded))


def _group_identical(contexts: Sequence[Context]) -> list[list[int]]:
    """Indices of contexts grouped by identical tokens and images (the same image objects), in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for index, context in enumerate(contexts):
        key = (tuple(context.token_ids), tuple(id(image) for image in context.images))
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _collapse_runs(token_ids: Sequence[int], token: int) -> list[int]:
    """``token_ids`` with every run of ``token`` collapsed to one (vLLM expands each image placeholder itself)."""
    return [t for i, t in enumerate(token_ids) if t != token or i == 0 or token_ids[i - 1] != token]


def _check_expansion(context: Context, prompt_token_ids: Sequence[int]) -> None:
    if list(prompt_token_ids) != context.token_ids:
        raise RuntimeError(
            f"vLLM expanded the prompt to {len(prompt_token_ids)} tokens but the context has {len(context.token_ids)}: "
            "its image processor computed other grids than the trainer's (min/max pixels must match the codec's)")


def _completion(output) -> Completion:
    tokens = list(output.token_ids)
    logprobs = [step[token].logprob for step, token in zip(output.logprobs, tokens)]
    return Completion(token_ids=tokens, logprobs=logprobs,
                      finish_reason="stop" if output.finish_reason == "stop" else "length")
