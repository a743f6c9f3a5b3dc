"""The shipped mini model: its weights belong to its recipe, its recipe regenerates deterministically, and before any
RL it already does what the paper's starting model does (follows the format, reads legible patterns, crops loosely)."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file
from transformers import Qwen2_5_VLForConditionalGeneration

from lfpc import PROJECT_ROOT
from lfpc.agent.env import CropEnvironment
from lfpc.agent.prompt import initial_messages, tool_call_text
from lfpc.boxes import coverage, scale_box
from lfpc.data import patterns
from lfpc.data.synthetic import JPEG_QUALITY
from lfpc.model import mini
from lfpc.model.loading import load_model
from lfpc.rollout.base import SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.episodes import EpisodeConfig, run_episodes
from lfpc.rollout.hf import HFRolloutEngine
from lfpc.rewards import RewardConfig, score_episode
from lfpc.vision.budget import fit_to_budget

SHIPPED = PROJECT_ROOT / "models" / "mini"
TEST_SEED = 1  # the held-out split (benchmark=patterns); pre-training used RECIPE["data"]["seed"]


def test_shipped_weights_belong_to_the_recipe():
    record = json.loads((SHIPPED / mini.RECIPE_FILE).read_text())
    assert record["recipe"] == mini.RECIPE, "the recipe changed: regenerate with `python -m lfpc.model.mini`"
    assert record["recipe_fingerprint"] == mini.recipe_fingerprint()
    assert record["steps_run"] == [phase["steps"] for phase in mini.RECIPE["curriculum"]]
    assert record["weights_sha256"] == mini.weights_sha256(SHIPPED)


def test_recipe_fingerprint_tracks_every_setting():
    changed = json.loads(json.dumps(mini.RECIPE))
    changed["teacher"]["p_direct"] = 0.25
    assert mini.recipe_fingerprint(changed) != mini.recipe_fingerprint()


def test_mini_is_the_real_architecture_at_a_few_million_parameters():
    model = load_model(SHIPPED)
    assert type(model) is Qwen2_5_VLForConditionalGeneration
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 10e6


def test_pretraining_is_deterministic(tmp_path):
    first = load_file(mini.pretrain_mini(tmp_path / "a", steps=2) / mini.WEIGHTS_FILE)
    second = load_file(mini.pretrain_mini(tmp_path / "b", steps=2) / mini.WEIGHTS_FILE)
    assert first.keys() == second.keys() and all(first[k].equal(second[k]) for k in first)
    record = json.loads((tmp_path / "a" / mini.RECIPE_FILE).read_text())
    assert record["steps_run"] == [2] * len(mini.RECIPE["curriculum"])  # a shortened run says so


def test_pretraining_goes_on_from_a_folder_that_ran_the_first_phases(tmp_path):
    """``init`` continues the curriculum where a shorter recipe stopped and ends where a run from scratch ends; a
    folder whose recipe is not a prefix of the curriculum is refused."""
    prefix = dict(mini.RECIPE, curriculum=mini.RECIPE["curriculum"][:-1])
    first_phases = mini.pretrain_mini(tmp_path / "first", prefix, steps=1)
    continued = load_file(mini.pretrain_mini(tmp_path / "continued", steps=1, init=first_phases) / mini.WEIGHTS_FILE)
    scratch = load_file(mini.pretrain_mini(tmp_path / "scratch", steps=1) / mini.WEIGHTS_FILE)
    assert continued.keys() == scratch.keys() and all(continued[k].equal(scratch[k]) for k in scratch)
    other = dict(prefix, seed=1)
    with pytest.raises(ValueError, match="not a completed prefix"):
        mini.pretrain_mini(tmp_path / "refused", other, steps=1, init=first_phases)


def test_teacher_boxes_are_loose_but_mostly_on_target():
    teacher = mini.ImperfectTeacher(**mini.RECIPE["teacher"])
    rng = np.random.default_rng(0)
    covered, ratios = [], []
    for index in range(200):
        _, sample = patterns.make_pattern_sample(index, TEST_SEED)
        size = fit_to_budget(sample.image_size, 16)
        target = scale_box(sample.boxes[0], sample.image_size, size)
        box = teacher.box(target, size, rng)
        covered.append(coverage(tuple(box), target) >= 0.9)
        ratios.append((box[2] - box[0]) * (box[3] - box[1]) / ((target[2] - target[0]) * (target[3] - target[1])))
    assert 0.45 < np.mean(covered) < 0.95      # imperfect: RL has precision to gain
    assert np.median(ratios) > 2.0             # loose: the median box is more than twice the tile's area


def _held_out(count: int):
    """The first ``count`` test questions with their images as the pipeline reads them (saved as JPEG)."""
    held_out = []
    for index in range(count):
        image, sample = patterns.make_pattern_sample(index, TEST_SEED)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
        held_out.append((Image.open(buffer).convert("RGB"), sample))
    return held_out


def _greedy(codec: ChatCodec, contexts, max_new_tokens: int) -> list[str]:
    engine = HFRolloutEngine(load_model(SHIPPED), codec.pad_id, codec.image_pad_id, batch_size=32)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, stop_token_ids=codec.stop_token_ids,
                              suppress_token_ids=codec.vision_token_ids)
    return [codec.decode(c.token_ids) for c in engine.generate(contexts, sampling)]


def test_before_rl_the_mini_model_reads_what_is_legible_to_it():
    """In the agent's own format (tool system prompt, global view, question), the greedy answer names the tile's
    colour pair: mostly when the global view has 256 tokens, much less often at 16 tokens, and mostly again at 16
    tokens once a zoom-in on B2 has returned a crop from the original (measured on 32 held-out questions:
    0.94, 0.16, 1.00; chance is 0.25)."""
    codec = ChatCodec.for_model(str(SHIPPED), 256)
    accuracy = {}
    for view in ("256", "16", "16 + crop"):
        contexts, answers = [], []
        for image, sample in _held_out(32):
            size = fit_to_budget(sample.image_size, 256 if view == "256" else 16)
            env = CropEnvironment(sample, size, 36, max_turns=1, original=image)
            context = codec.start(initial_messages(sample, size), [env.global_image()])
            if view == "16 + crop":
                call = tool_call_text([round(v) for v in scale_box(sample.boxes[1], sample.image_size, size)])
                context.extend(codec.completion_ids(call), from_policy=True)
                result = env.step(call)
                codec.append_user_turn(context, result.content(), [result.image])
            contexts.append(context)
            answers.append(f"<answer>{sample.answer_text}</answer>")
        replies = _greedy(codec, contexts, 16)
        accuracy[view] = np.mean([reply.startswith(answer) for reply, answer in zip(replies, answers)])
    assert accuracy["256"] >= 0.8 and accuracy["16 + crop"] >= 0.7, accuracy
    assert accuracy["16"] <= min(accuracy["256"], accuracy["16 + crop"]) - 0.25, accuracy


def test_before_rl_the_mini_model_follows_the_tool_format(tmp_path):
    """Greedy agent episodes on held-out questions at the info-gap budget end in a well-formed answer."""
    samples = []
    for image, sample in _held_out(24):
        path = tmp_path / f"{sample.id}.png"
        image.save(path)
        samples.append(dataclasses.replace(sample, image_path=str(path)))
    codec = ChatCodec.for_model(str(SHIPPED), 256)
    engine = HFRolloutEngine(load_model(SHIPPED), codec.pad_id, codec.image_pad_id, batch_size=24)
    config = EpisodeConfig(max_turns=3, max_new_tokens_per_turn=64, max_response_tokens=192, crop_max_tokens=36)
    sizes = [fit_to_budget(s.image_size, 16) for s in samples]
    trajectories = run_episodes(engine, codec, samples, sizes, 1, config, SamplingConfig(temperature=0.0))
    scores = [score_episode(t.outcome, t.sample, RewardConfig()) for t in trajectories]
    assert np.mean([s["fmt"] for s in scores]) >= 0.9, [t.turns for t in trajectories]


def test_before_rl_the_mini_model_answers_under_the_no_tool_prompt():
    """Under the no-tool prompt (the resolution selection's probe and the ``direct`` evaluation mode) the greedy
    reply is a well-formed answer naming one of the options, right mostly where the view is legible (256 tokens)
    and much less often at 16 tokens, so answers diverge across the pyramid as the selection expects (measured on 32
    held-out questions: 1.00 at 256 tokens, 0.25 at 16, every reply well-formed)."""
    codec = ChatCodec.for_model(str(SHIPPED), 256)
    accuracy, well_formed = {}, {}
    for budget in (256, 16):
        contexts, samples = [], []
        for image, sample in _held_out(32):
            size = fit_to_budget(sample.image_size, budget)
            view = CropEnvironment(sample, size, 36, max_turns=0, original=image).global_image()
            contexts.append(codec.start(initial_messages(sample, size, tools=False), [view]))
            samples.append(sample)
        replies = _greedy(codec, contexts, 16)
        named = [next((o for o in s.options if reply.startswith(f"<answer>{o}</answer>")), None)
                 for reply, s in zip(replies, samples)]
        well_formed[budget] = np.mean([n is not None for n in named])
        accuracy[budget] = np.mean([n == s.answer_text for n, s in zip(named, samples)])
    assert min(well_formed.values()) >= 0.9, (well_formed, replies[:4])
    assert accuracy[256] >= 0.7 and accuracy[16] <= accuracy[256] - 0.25, accuracy
