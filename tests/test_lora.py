"""LoRA policy (PEFT): two GRPO steps of the tiny Qwen2.5-VL with adapters (Lightning, scripted replies of
tests/test_training_step.py), then what the rest of the pipeline sees of it.

Checked against independent references: the base weights are compared with a fresh load of the checkpoint, the
merged weights with PEFT's own ``merge_and_unload``, the exported model's log-probs with the adapted policy's, and a
real HF rollout engine's sampling log-probs (after the weight push) with the trainer's forward.
"""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torch.utils.data import DataLoader

from lfpc.config import policy_config
from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.grpo.objective import PolicyLossConfig
from lfpc.grpo.update import PolicyUpdate
from lfpc.model.checkpointing import enable_activation_checkpointing
from lfpc.model.loading import load_model
from lfpc.model.lora import AdapterOff, LoraSettings, apply_lora, base_model, policy_named_tensors
from lfpc.rollout.base import SamplingConfig
from lfpc.rollout.hf import HFRolloutEngine
from lfpc.training.batches import PromptBatch
from tests.test_resume import CONF_DIR
from tests.test_training_step import module_and_trainer, samples

LORA = LoraSettings(r=4, alpha=8.0)
ADAPTED = 2 * 7  # the tiny model's 2 decoder layers x (q, k, v, o, gate, up, down)


@pytest.fixture(scope="module")
def run(tiny_model_dir, codec, noise_sample):
    """Two GRPO steps (lr 1e-2, KL 0.1) of a LoRA policy; the module, its scripted engine, the trainer and the
    first step's contexts."""
    module, engine, trainer = module_and_trainer(tiny_model_dir, codec, lora=LORA, lr=1e-2)
    contexts = []
    rollout = module.rollout

    def spy_rollout(batch, seed):
        trajectories = rollout(batch, seed)
        contexts.extend(t.context for t in trajectories if not contexts)
        return trajectories

    module.rollout = spy_rollout
    trainer.fit(module, DataLoader(samples(noise_sample), batch_size=2, collate_fn=PromptBatch))
    return module, engine, trainer, contexts


def logprobs(model, contexts, codec) -> torch.Tensor:
    with torch.no_grad():
        return sequence_logprobs(model, contexts, codec.pad_id, codec.image_pad_id)["logprobs"]


@pytest.mark.slow
def test_only_the_adapters_are_trained(run, tiny_model_dir):
    module, _, trainer, _ = run
    adapters = {n: p for n, p in module.policy.named_parameters() if ".lora_" in n}
    assert len(adapters) == 2 * ADAPTED and all(p.requires_grad for p in adapters.values())
    optimized = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    assert {id(p) for p in optimized} == {id(p) for p in adapters.values()}
    assert len(trainer.optimizers[0].state) == len(adapters)  # Adam moments of the adapters only
    assert all(float(p.detach().abs().max()) > 0 for n, p in adapters.items() if ".lora_B." in n)  # B starts at 0
    initial = load_model(tiny_model_dir).state_dict()
    base = {n.removeprefix("base_model.model.").replace(".base_layer.", "."): p
            for n, p in module.policy.named_parameters() if ".lora_" not in n}
    assert base.keys() == {n for n, _ in load_model(tiny_model_dir).named_parameters()}
    assert not any(p.requires_grad for p in base.values())
    assert all(torch.equal(p, initial[n]) for n, p in base.items())  # bit for bit after two updates


@pytest.mark.slow
def test_merged_weights_are_peft_merge_and_base_elsewhere(run, tiny_model_dir):
    module = run[0]
    merged = dict(policy_named_tensors(module.policy))
    reference = copy.deepcopy(module.policy).merge_and_unload().state_dict()  # PEFT's own merge
    initial = load_model(tiny_model_dir).state_dict()
    assert list(merged) == list(initial) and reference.keys() == initial.keys()  # names and order of the base
    changed = [n for n in merged if not torch.equal(merged[n], initial[n])]
    assert len(changed) == ADAPTED and all(".language_model.layers." in n for n in changed)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], atol=1e-7, rtol=0, msg=name)


@pytest.mark.slow
def test_exported_model_computes_what_the_adapted_policy_does(run, tiny_model_dir, codec, tmp_path):
    module, _, _, contexts = run
    module.export_hf(str(tmp_path / "hf_model"))
    exported = load_model(tmp_path / "hf_model")
    adapted, base = logprobs(module.policy, contexts, codec), logprobs(load_model(tiny_model_dir), contexts, codec)
    mask = shifted_policy_tensors(contexts)["mask"].bool()
    torch.testing.assert_close(logprobs(exported, contexts, codec)[mask], adapted[mask], atol=1e-5, rtol=0)
    assert float((adapted - base)[mask].abs().max()) > 0.05  # the export is not the base model (measured 0.72)


@pytest.mark.slow
def test_rollout_engine_samples_from_the_updated_policy_after_the_push(run, tiny_model_dir, codec, noise_sample):
    module = run[0]  # a real HF engine on the base checkpoint, given the merged weights as GRPOModule pushes them
    engine = HFRolloutEngine(load_model(tiny_model_dir), codec.pad_id, codec.image_pad_id)
    engine.load_weights(policy_named_tensors(module.policy))
    image = Image.open(noise_sample.image_path).convert("RGB").resize((112, 84))
    prompt = codec.start([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}],
                         [image])
    contexts = [prompt.copy() for _ in range(3)]
    torch.manual_seed(0)
    for context, completion in zip(contexts, engine.generate(contexts, SamplingConfig(max_new_tokens=12))):
        context.extend(completion.token_ids, from_policy=True, logprobs=completion.logprobs)
    mask = shifted_policy_tensors(contexts)["mask"].bool()
    sampled = shifted_policy_tensors(contexts)["rollout_logprobs"][mask]
    # measured: 1e-6 from the trainer's log-probs, 0.18 from the base model's (what a push without the adapters gives)
    torch.testing.assert_close(sampled, logprobs(module.policy, contexts, codec)[mask], atol=2e-4, rtol=0)
    base = logprobs(load_model(tiny_model_dir), contexts, codec)[mask]
    assert float((sampled - base).abs().max()) > 1e-2


@pytest.mark.slow
def test_kl_reference_is_the_base_model_without_a_copy(run, tiny_model_dir, codec):
    module, _, trainer, contexts = run
    assert isinstance(module.reference, AdapterOff)
    assert all(a is b for a, b in zip(module.reference.parameters(), module.policy.parameters()))
    torch.testing.assert_close(logprobs(module.reference, contexts, codec),
                               logprobs(load_model(tiny_model_dir), contexts, codec), atol=1e-6, rtol=0)
    assert float(trainer.callback_metrics["train/kl"]) > 1e-4  # step 1 updated a policy step 0 moved away


@pytest.mark.slow
def test_resume_restores_the_adapters_and_their_adam_moments(run, tiny_model_dir, codec, noise_sample, tmp_path):
    module, _, trainer, _ = run
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed, engine, again = module_and_trainer(tiny_model_dir, codec, lora=LORA, lr=1e-2)
    again.fit(resumed, DataLoader(samples(noise_sample), batch_size=2, collate_fn=PromptBatch),
              ckpt_path=tmp_path / "last.ckpt")
    assert again.global_step == 2 and engine.pushes == []
    weights, restored = module.policy.state_dict(), resumed.policy.state_dict()
    assert restored.keys() == weights.keys() and all(torch.equal(restored[k], v) for k, v in weights.items())
    state, restored_state = trainer.optimizers[0].state_dict()["state"], again.optimizers[0].state_dict()["state"]
    assert len(state) == 2 * ADAPTED and state.keys() == restored_state.keys()
    assert all(torch.equal(v, restored_state[i][k]) for i, moments in state.items() for k, v in moments.items())


def test_lora_config_group_sets_model_lora(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        full = compose("config", overrides=[f"output_dir={tmp_path}", "cache_dir=/tmp/cache"])
        lora = compose("config", overrides=[f"output_dir={tmp_path}", "cache_dir=/tmp/cache", "+lora=default",
                                            "model.lora.r=16"])
    assert policy_config(full, "m").lora is None
    assert policy_config(lora, "m").lora == LoraSettings(r=16, alpha=128.0)
    with pytest.raises(ValueError, match="model.lora needs r >= 1"):
        LoraSettings(r=0)


def test_a_checkpointed_lora_update_frees_its_embedding_outputs(tiny_model_dir, codec, noise_sample):
    """Gradient checkpointing makes frozen embeddings' outputs (tokens and patches) leaves that take a ``.grad``
    (transformers' ``enable_input_require_grads``); after the update none of them may stay alive (the memory plan
    counts them as kept: a fake-tensor artefact, BENCHMARKS.md "LoRA")."""
    model = load_model(tiny_model_dir).train()
    enable_activation_checkpointing(model)
    policy = apply_lora(model, LoraSettings(r=4, alpha=8.0), seed=0)
    outputs: list[weakref.ref] = []
    for layer in (base_model(policy).get_input_embeddings(), base_model(policy).model.visual.patch_embed):
        layer.register_forward_hook(lambda _module, _inputs, output: outputs.append(weakref.ref(output)))
    image = Image.open(noise_sample.image_path).convert("RGB").resize((112, 84))
    contexts = []
    for letter in "AB":
        context = codec.start([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}],
                              [image])
        context.extend(codec.completion_ids(f"<answer>{letter}</answer>"), from_policy=True)
        contexts.append(context)
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.1)
    PolicyUpdate(policy, optimizer, PolicyLossConfig(), codec.pad_id, codec.image_pad_id, mini_batch_size=2,
                 micro_batch_size=1)(contexts, torch.tensor([1.0, -1.0]))
    gc.collect()
    assert len(outputs) >= 4  # token and patch embeddings of both micro-batches (and their recomputations)
    assert [ref() for ref in outputs if ref() is not None] == []
