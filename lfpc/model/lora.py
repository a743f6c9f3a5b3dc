"""LoRA for the policy (PEFT): low-rank adapters on the language model's linear layers, the base weights frozen.

A run on 1-4 GPUs cannot hold the paper's full fine-tuning state (float32 weights, gradients and two Adam moments
of a 7B model); with LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021) only the adapters
get gradients and Adam states. Everything outside the trainer sees plain transformers weights:
:func:`policy_named_tensors` yields the merged weights ``W + (alpha / r) * B @ A`` under the base model's names, so
the rollout engines' in-place weight push, the exported ``hf_model`` (eval.py, Stage II ``init_from``) and weight
digests work as with full fine-tuning.

PEFT is imported only when a LoRA policy is built or read (its import takes seconds).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import torch

from lfpc.distributed import full_named_tensors

ADAPTER = "default"  # PEFT's name of the single adapter
LANGUAGE_LAYERS = r"model\.language_model\.layers\.\d+"
VISION_BLOCKS = r"model\.visual\.blocks\.\d+"
PEFT_PREFIX = "base_model.model."  # PeftModel -> LoraModel -> the transformers model


@dataclass(frozen=True)
class LoraSettings:
    """The ``model.lora`` config: adapters of rank ``r`` scaled by ``alpha / r`` on every linear layer named in
    ``target_modules`` inside the language model's decoder layers (and the vision tower's blocks when ``vision``).

    ``dropout`` > 0 makes the trainer's forward random, so the PPO ratio and the rollout-vs-trainer log-probs
    carry dropout noise: keep it 0 for GRPO unless measured otherwise.
    """

    r: int = 64
    alpha: float = 128.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    vision: bool = False

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.target_modules:
            raise ValueError(f"model.lora needs r >= 1, alpha > 0, 0 <= dropout < 1 and target_modules, got {self}")

    def target_pattern(self) -> str:
        """The regular expression PEFT matches (in full) against module names to place adapters."""
        scopes = [LANGUAGE_LAYERS] + ([VISION_BLOCKS] if self.vision else [])
        names = "|".join(re.escape(name) for name in self.target_modules)
        return rf"(?:{'|'.join(scopes)})\.\w+\.(?:{names})"


def apply_lora(model: torch.nn.Module, settings: LoraSettings, seed: int = 0) -> torch.nn.Module:
    """Wrap a transformers model in a PEFT LoRA model: adapters trainable, every other parameter frozen.

    The adapters' random initialisation (``A``; ``B`` starts at 0, so the wrapped model computes what the base
    does) is drawn from ``seed``, the same on every rank whatever the global random state. Only ``nn.Linear``
    targets are accepted: :func:`policy_named_tensors` merges ``B @ A`` into a linear weight.
    """
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_pattern(), bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wrapped = get_peft_model(model, config)
    others = [name for name, module in wrapped.named_modules()
              if isinstance(module, LoraLayer) and not isinstance(module, LoraLinear)]
    if others:
        raise ValueError(f"model.lora.target_modules must name linear layers only, not e.g. {others[:3]}")
    return wrapped


def is_lora(model) -> bool:
    """Whether ``model`` is a PEFT model (has adapters)."""
    return hasattr(model, "peft_config")


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PEFT model (``model`` itself otherwise)."""
    return model.get_base_model() if is_lora(model) else model


def policy_named_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's full weights as the transformers model's state dict has them (names and order), the same on
    every rank (collective under FSDP2): for a LoRA policy each adapted weight merged, ``W + scaling * B @ A``
    (computed in float32, returned in ``W``'s dtype), and the adapters themselves left out.

    A merged weight is known once its ``B`` arrives, after the layer's bias: entries wait in a short queue so that
    the order (and so :func:`lfpc.distributed.weights_digest`) is the base model's.
    """
    if not is_lora(model):
        yield from full_named_tensors(model)
        return
    scalings = _lora_scalings(model)
    queue: deque[list] = deque()  # [name, tensor], the tensor None while its merge waits for A and B
    pending: dict[str, dict[str, torch.Tensor]] = {}  # adapted layer -> its W, A, B seen so far
    slots: dict[str, list] = {}  # adapted layer -> its merged weight's queue entry
    for name, tensor in full_named_tensors(model):
        layer, part = _lora_part(name, scalings)
        if layer is None:
            queue.append([_base_name(name), tensor])
        else:
            pending.setdefault(layer, {})[part] = tensor
            if part == "W":
                slots[layer] = [_base_name(f"{layer}.weight"), None]
                queue.append(slots[layer])
            if len(pending[layer]) == 3:
                seen = pending.pop(layer)
                slots.pop(layer)[1] = merged_weight(seen["W"], seen["A"], seen["B"], scalings[layer])
        while queue and queue[0][1] is not None:
            yield tuple(queue.popleft())
    if pending or queue:
        raise RuntimeError(f"LoRA layers without all of base weight, A and B in the state dict: {sorted(pending)[:3]}")


def merged_weight(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """``weight + scaling * b @ a`` in float32, cast back to ``weight``'s dtype (a LoRA linear layer, merged)."""
    return (weight.float() + (b.float() @ a.float()) * scaling).to(weight.dtype)


def _lora_scalings(model: torch.nn.Module) -> dict[str, float]:
    """``alpha / r`` of each adapted layer, by its module name in the PEFT model."""
    from peft.tuners.lora import LoraLayer

    return {name: module.scaling[ADAPTER] for name, module in model.named_modules() if isinstance(module, LoraLayer)}


_PARTS = {".base_layer.weight": "W", f".lora_A.{ADAPTER}.weight": "A", f".lora_B.{ADAPTER}.weight": "B"}


def _lora_part(name: str, scalings: dict[str, float]) -> tuple[str | None, str | None]:
    """(adapted layer, "W" | "A" | "B") for a state-dict entry of a LoRA layer's weight or adapter, else (None,
    None) (a base layer's bias is an ordinary entry)."""
    for suffix, part in _PARTS.items():
        if name.endswith(suffix) and name[:-len(suffix)] in scalings:
            return name[:-len(suffix)], part
    return None, None


def _base_name(name: str) -> str:
    """A PEFT state-dict name as the transformers model names it (``base_model.model.`` and ``.base_layer`` off)."""
    name = name.removeprefix(PEFT_PREFIX)
    return name.replace(".base_layer.", ".")


class AdapterOff:
    """The LoRA policy with its adapters switched off: the frozen initial policy, used as the KL reference without
    a second copy of the weights (what :class:`lfpc.grpo.update.PolicyUpdate` needs of a reference: ``parameters()``,
    a forward, the inner ``model`` and the LM head). Deliberately not an ``nn.Module``, so the policy is not
    registered (checkpointed) twice."""

    def __init__(self, policy: torch.nn.Module) -> None:
        self.policy = policy

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.policy.parameters()

    @property
    def model(self) -> torch.nn.Module:
        """The transformers model's inner model (shared with the policy; adapters off only inside a call)."""
        return base_model(self.policy).model

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.policy.get_output_embeddings()

    def __call__(self, *args, **kwargs):
        with self.policy.disable_adapter():
            return self.policy(*args, **kwargs)
