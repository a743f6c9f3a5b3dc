"""The vLLM rollout backend on the real tiny Qwen2.5-VL (CPU build of vLLM; `.ci/vllm_lane.sh` installs it).

The engine tests skip where vLLM is not installed; the factory/config tests run everywhere.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lfpc.distributed import full_named_tensors
from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.model.loading import load_model
from lfpc.model.lora import LoraSettings, apply_lora, policy_named_tensors
from lfpc.rollout.base import SamplingConfig
from lfpc.rollout.episodes import EpisodeConfig, run_episodes
from lfpc.rollout.factory import build_engine, release_engine
from lfpc.rollout.hf import HFRolloutEngine

CONF = Path(__file__).resolve().parents[1] / "conf" / "rollout"
SKIP_REASON = "vLLM is not installed in this environment; .ci/vllm_lane.sh installs its CPU build and runs this file"


def _engine_cfg() -> dict:
    return {**OmegaConf.to_container(OmegaConf.load(CONF / "vllm.yaml")), "dtype": "float32", "max_model_len": 2048,
            "max_images_per_prompt": 3}


@pytest.fixture(scope="module")
def engine(tiny_model_dir, codec):
    pytest.importorskip("vllm", reason=SKIP_REASON)
    return build_engine(_engine_cfg(), codec, str(tiny_model_dir), "cpu", seed=0)


@pytest.fixture()
def trainer(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture()
def contexts(codec, noise_sample):
    """A one-image prompt and a two-image conversation (assistant tool call, then a tool response with a crop)."""
    first = codec.start(_messages("What color is the dot?"), [_image(noise_sample, (224, 168))])
    second = first.copy()
    call = codec.tokenizer.encode('<tool_call>{"name": "image_zoom_in_tool"}</tool_call>', add_special_tokens=False)
    second.extend(call + [codec.im_end_id], from_policy=True, logprobs=[-1.0] * (len(call) + 1))
    codec.append_user_turn(second, [{"type": "text", "text": "<tool_response>"}, {"type": "image"},
                                    {"type": "text", "text": "</tool_response>"}], [_image(noise_sample, (112, 84))])
    return [first, second]


def test_generates_multi_image_contexts_with_n_samples_per_prompt(engine, codec, contexts):
    first, second = contexts
    batch = [first, first.copy(), first.copy(), second]  # three copies of one prompt -> one request with n=3
    sampling = SamplingConfig(max_new_tokens=8, temperature=1.0, stop_token_ids=codec.stop_token_ids,
                              suppress_token_ids=codec.vision_token_ids)
    completions = engine.generate(batch, sampling)
    assert len(completions) == 4
    for completion in completions:
        assert 1 <= len(completion.token_ids) <= 8 and len(completion.logprobs) == len(completion.token_ids)
        assert all(-40 < lp <= 0 for lp in completion.logprobs)
        assert not set(completion.token_ids) & set(codec.vision_token_ids)
        stopped = completion.token_ids[-1] in codec.stop_token_ids
        assert completion.finish_reason == ("stop" if stopped else "length")
        assert stopped or len(completion.token_ids) == 8
    # the n samples of one prompt are independent draws (8 tokens from a near-uniform 3072-way softmax)
    assert len({tuple(c.token_ids) for c in completions[:3]}) == 3


def test_suppressed_tokens_are_never_generated(engine, codec, contexts):
    greedy = SamplingConfig(max_new_tokens=1, temperature=0.0)
    favourite = engine.generate(contexts[:1], greedy)[0].token_ids[0]
    suppressed = SamplingConfig(max_new_tokens=1, temperature=0.0, suppress_token_ids=(favourite,))
    assert engine.generate(contexts[:1], suppressed)[0].token_ids[0] != favourite


def test_logprobs_agree_with_trainer_after_weight_push(engine, codec, contexts, trainer):
    sampling = SamplingConfig(max_new_tokens=12, temperature=0.7)  # no stop tokens: exactly 12 new tokens each
    engine.generate(contexts, sampling)  # fill vLLM's prefix and encoder caches with the old weights' results
    _perturb(trainer, seed=1)
    engine.load_weights(full_named_tensors(trainer))
    completions = engine.generate(contexts, sampling)
    for context, completion in zip(contexts, completions):
        context.extend(completion.token_ids, from_policy=True, logprobs=completion.logprobs)
    with torch.no_grad():
        trained = sequence_logprobs(trainer, contexts, codec.pad_id, codec.image_pad_id, temperature=0.7)["logprobs"]
    for row, (context, completion) in enumerate(zip(contexts, completions)):
        end = len(context.token_ids) - 1  # trained[:, j] scores token j + 1: the 12 new tokens are end-12 .. end-1
        assert len(completion.token_ids) == 12
        # measured: max |diff| ~1e-6 in float32; without the cache resets after the push it exceeds 1
        torch.testing.assert_close(torch.tensor(completion.logprobs), trained[row, end - 12:end], atol=1e-4, rtol=0)


def test_rollouts_change_after_an_update(engine, codec, contexts, trainer):
    engine.load_weights(full_named_tensors(trainer))
    greedy = SamplingConfig(max_new_tokens=10, temperature=0.0)
    before = engine.generate(contexts, greedy)
    # one gradient step that makes a sampled rollout of the first prompt more likely (a positive advantage)
    sample = engine.generate(contexts[:1], SamplingConfig(max_new_tokens=10, temperature=1.0))[0]
    reinforced = contexts[0].copy()
    reinforced.extend(sample.token_ids, from_policy=True, logprobs=sample.logprobs)
    mask = shifted_policy_tensors([reinforced])["mask"].bool()
    loss = -sequence_logprobs(trainer, [reinforced], codec.pad_id, codec.image_pad_id)["logprobs"][mask].sum()
    loss.backward()
    torch.optim.SGD(trainer.parameters(), lr=1.0).step()
    engine.load_weights(full_named_tensors(trainer))
    after = engine.generate(contexts, greedy)
    reference = HFRolloutEngine(trainer, codec.pad_id, codec.image_pad_id).generate(contexts, greedy)
    assert [c.token_ids for c in after] == [c.token_ids for c in reference]  # vLLM now runs the updated policy
    assert [c.token_ids for c in after] != [c.token_ids for c in before]


def test_lora_policy_push_serves_the_adapted_policy(engine, codec, contexts, trainer):
    """A LoRA policy reaches vLLM as merged weights through the same in-place push (no LoRA support in vLLM)."""
    policy = apply_lora(trainer, LoraSettings(r=4, alpha=8.0), seed=0)
    _perturb(policy, seed=2, only="lora_B")  # B starts at 0: make the adapters change the outputs
    engine.load_weights(policy_named_tensors(policy))
    sampling = SamplingConfig(max_new_tokens=12, temperature=0.7)
    completions = engine.generate(contexts, sampling)
    for context, completion in zip(contexts, completions):
        context.extend(completion.token_ids, from_policy=True, logprobs=completion.logprobs)
    with torch.no_grad():
        adapted = sequence_logprobs(policy, contexts, codec.pad_id, codec.image_pad_id, temperature=0.7)["logprobs"]
        with policy.disable_adapter():
            base = sequence_logprobs(policy, contexts, codec.pad_id, codec.image_pad_id, temperature=0.7)["logprobs"]
    for row, (context, completion) in enumerate(zip(contexts, completions)):
        end = len(context.token_ids) - 1
        sampled = torch.tensor(completion.logprobs)
        torch.testing.assert_close(sampled, adapted[row, end - 12:end], atol=1e-4, rtol=0)
        assert float((sampled - base[row, end - 12:end]).abs().max()) > 1e-2  # the adapters matter


def test_streamed_episodes_are_reproducible_and_match_the_batched_engine(engine, codec, noise_sample, trainer):
    engine.load_weights(full_named_tensors(trainer))
    config = EpisodeConfig(max_turns=2, max_new_tokens_per_turn=6, max_response_tokens=24, crop_max_tokens=16)

    def run(threads, sampling, seed, rollout_engine=engine):
        return run_episodes(rollout_engine, codec, [noise_sample, noise_sample], [(224, 168), (112, 84)], 3,
                            dataclasses.replace(config, host_threads=threads), sampling, seed=seed)

    sampled = SamplingConfig(temperature=1.0)
    one, four, other = run(1, sampled, 5), run(4, sampled, 5), run(1, sampled, 6)
    assert all(len(t.turns) == 3 for t in one)  # the random policy's calls fail; every episode uses all its turns
    assert [t.context.token_ids for t in one] == [t.context.token_ids for t in four]  # a seed per request
    for a, b in zip(one, four):
        torch.testing.assert_close(torch.tensor(a.context.logprobs), torch.tensor(b.context.logprobs), atol=1e-6,
                                   rtol=0)
    assert len({tuple(t.context.token_ids) for t in one[:3]}) == 3  # the rollouts of a prompt are distinct draws
    assert [t.context.token_ids for t in one] != [t.context.token_ids for t in other]
    greedy = SamplingConfig(temperature=0.0)
    streamed = run(2, greedy, 0)
    by_turns = run(2, greedy, 0, HFRolloutEngine(trainer, codec.pad_id, codec.image_pad_id))
    assert [t.context.token_ids for t in streamed] == [t.context.token_ids for t in by_turns]


def test_push_must_cover_every_parameter(engine, trainer):
    partial = [(name, tensor) for name, tensor in full_named_tensors(trainer) if name != "lm_head.weight"]
    with pytest.raises(KeyError, match="did not cover 1 vLLM parameters"):
        engine.load_weights(partial)
    engine.load_weights(full_named_tensors(trainer))  # a full push afterwards is accepted


def test_factory_selects_backend(codec, tiny_model_dir):
    assert isinstance(build_engine({"backend": "hf"}, codec, str(tiny_model_dir), "cpu"), HFRolloutEngine)
    with pytest.raises(ValueError, match="rollout.backend"):
        build_engine({"backend": "sglang"}, codec, str(tiny_model_dir), "cpu")


def test_rollout_config_keys_are_engine_arguments():
    from lfpc.rollout.vllm_engine import VLLMRolloutEngine  # imports vLLM lazily: works without it
    keys = set(OmegaConf.load(CONF / "vllm.yaml")) - {"backend"}
    assert keys <= set(inspect.signature(VLLMRolloutEngine).parameters)
    assert set(OmegaConf.load(CONF / "hf.yaml")) - {"backend"} == {"kept_cache_gib", "offload_when_asleep"}
    assert {"kept_cache_gib", "offload_when_asleep"} <= set(inspect.signature(HFRolloutEngine).parameters)


def test_a_closed_engine_is_shut_down_and_the_next_one_starts(engine, codec, contexts, tiny_model_dir):
    # the single-process resolution selection closes its engine before training builds its own (last in this file:
    # closing tears down vLLM's process-wide distributed state, which the next engine sets up again)
    selection = build_engine(_engine_cfg(), codec, str(tiny_model_dir), "cpu", seed=0)
    release_engine(selection)
    assert selection.llm is None
    training = build_engine(_engine_cfg(), codec, str(tiny_model_dir), "cpu", seed=0)
    completions = training.generate(contexts[:1], SamplingConfig(max_new_tokens=4, temperature=0.0))
    assert len(completions) == 1 and 1 <= len(completions[0].token_ids) <= 4


def _perturb(model, seed, only: str = ""):
    """Add N(0, 0.05^2) noise to every parameter whose name contains ``only``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if only in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)



def _messages(text):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def _image(sample, size):
    from PIL import Image
    return Image.open(sample.image_path).convert("RGB").resize(size)
