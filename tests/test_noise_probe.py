"""The noise probe (lfpc.training.noise_probe): a policy whose answers cannot depend on the crop keeps every answer
(share 1.0), one that reads its crop changes every answer (share 0.0); the turns before the first crop are replayed,
not generated; the GRPO step logs the share when the probe is on and nothing when it is off."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from lfpc.agent.prompt import tool_call_text
from lfpc.data.records import Sample
from lfpc.rewards import RewardConfig
from lfpc.rollout.base import Completion, Context, SamplingConfig
from lfpc.rollout.episodes import EpisodeConfig, run_episodes
from lfpc.training.batches import PromptBatch
from lfpc.training.module import GRPOConfig, GRPOModule, PolicyConfig
from lfpc.training.noise_probe import NoiseProbeConfig, noise_probe, probe_set, rerun, share

DISPLAY = (512, 384)
EPISODE = EpisodeConfig(max_turns=2, max_new_tokens_per_turn=64, crop_max_tokens=16)


class CropThenAnswer:
    """A stand-in policy: its first turn is not a valid call (an error observation follows), its second crops, its
    third answers. ``reads_crop``: the answer is A when the last image shown is flat (the real crop of the grey
    image) and C when it is not (noise); otherwise always A. Records the turn index and the temperature of every
    context it is asked to continue."""

    def __init__(self, codec, reads_crop: bool) -> None:
        self.codec, self.reads_crop = codec, reads_crop
        self.asked: list[tuple[int, float]] = []

    def generate(self, contexts, sampling):
        completions = []
        for context in contexts:
            turn = self.codec.tokenizer.decode(context.token_ids).count("<|im_start|>assistant") - 1
            self.asked.append((turn, sampling.temperature))
            if turn == 0:
                text = "Let me look closer."
            elif turn == 1:
                text = tool_call_text([100, 100, 200, 180])
            else:
                flat = float(np.asarray(context.images[-1]).std()) < 20
                text = "<answer>A</answer>" if flat or not self.reads_crop else "<answer>C</answer>"
            ids = self.codec.completion_ids(text)
            completions.append(Completion(ids, [-0.5] * len(ids), "stop"))
        return completions

    def load_weights(self, named_tensors):
        pass

    def sleep(self):
        pass


@pytest.fixture(scope="module")
def grey_samples(tmp_path_factory) -> list[Sample]:
    """Two questions on a flat grey 1024 x 768 image: any real crop is flat, a noise crop is not."""
    path = tmp_path_factory.mktemp("grey") / "grey.png"
    Image.new("RGB", (1024, 768), (128, 128, 128)).save(path)
    return [Sample(id=f"q{i}", image_path=str(path), question=f"Question {i}?", options=("a", "b", "c", "d"),
                   answer="A", boxes=((200.0, 200.0, 400.0, 360.0),), image_size=(1024, 768)) for i in range(2)]


def rollouts(engine, codec, samples):
    """The step's trajectories: 2 questions x group 2, sampled (temperature 1)."""
    return run_episodes(engine, codec, samples, [DISPLAY] * len(samples), 2, EPISODE, SamplingConfig(), seed=3)


@pytest.mark.parametrize("reads_crop, expected", [(False, 1.0), (True, 0.0)])
def test_share_of_unchanged_answers(codec, grey_samples, reads_crop, expected):
    engine = CropThenAnswer(codec, reads_crop)
    trajectories = rollouts(engine, codec, grey_samples)
    assert all(t.outcome.num_crops == 1 and t.outcome.answer == "A" for t in trajectories)
    engine.asked.clear()
    unchanged, probed = noise_probe(engine, codec, trajectories, EPISODE, size=3)
    assert probed == 3 and share(unchanged, probed) == expected
    # only the answer turn is generated, greedily, once with the real crop and once with noise per probed trajectory
    assert engine.asked == [(2, 0.0)] * 6


def test_rerun_replays_the_turns_up_to_the_first_crop(codec, grey_samples):
    engine = CropThenAnswer(codec, reads_crop=True)
    original = rollouts(engine, codec, grey_samples)[:1]
    [control] = rerun(engine, codec, original, EPISODE, "pred")
    [noised] = rerun(engine, codec, original, EPISODE, "noise")
    # the real crop again: the whole trajectory is reproduced, token for token, with the same crop
    assert control.context.token_ids == original[0].context.token_ids and control.turns == original[0].turns
    assert np.array_equal(np.asarray(control.context.images[1]), np.asarray(original[0].context.images[1]))
    # noise of the crop's size: the same tokens up to the answer, another image, another answer
    assert noised.turns[:2] == original[0].turns[:2] and noised.outcome.answer == "C"
    assert noised.context.images[1].size == original[0].context.images[1].size
    assert noised.events[1]["crop_size"] == original[0].events[1]["crop_size"]


def fake(group: int, crops: bool) -> SimpleNamespace:
    """A trajectory as the probe sees it: its group, events, decoded turns and the policy turns of its context."""
    context = Context(token_ids=[1, 7, 2, 8, 9], policy_mask=[0, 1, 0, 1, 1], logprobs=[0.0] * 5)
    return SimpleNamespace(group=group, turns=["a", "b"], context=context,
                           events=[{"turn": 1, "crop_size": [28, 28] if crops else None}, {"turn": 2}])


def test_probe_set_spreads_over_groups_and_skips_trajectories_without_crops():
    trajectories = [fake(0, True), fake(0, True), fake(0, True), fake(1, False), fake(1, True), fake(2, True)]
    assert probe_set(trajectories, 4) == [trajectories[i] for i in (0, 4, 5, 1)]
    assert probe_set([fake(0, False)], 4) == []
    assert trajectories[0].context.policy_turns() == [[7], [8, 9]]
    unreplayable = fake(0, True)
    unreplayable.turns = ["a", "", "b"]  # an empty turn leaves no tokens: the turns cannot be told apart
    assert probe_set([unreplayable], 4) == []


def test_config_is_off_by_default_and_runs_every_n_steps():
    assert not any(NoiseProbeConfig().due(step) for step in range(10))
    assert [step for step in range(7) if NoiseProbeConfig(every_n_steps=3).due(step)] == [0, 3, 6]
    with pytest.raises(ValueError, match="size >= 1"):
        NoiseProbeConfig(size=0)
    assert math.isnan(share(0, 0))


@pytest.mark.slow
@pytest.mark.parametrize("probe, reads_crop, expected", [(NoiseProbeConfig(every_n_steps=1), False, 1.0),
                                                         (NoiseProbeConfig(every_n_steps=1), True, 0.0),
                                                         (NoiseProbeConfig(), False, None)])
def test_training_step_logs_the_probe(tiny_model_dir, codec, grey_samples, probe, reads_crop, expected):
    """One GRPO step of the tiny Qwen2.5-VL (2 questions x group 2, every trajectory crops)."""
    module = GRPOModule(PolicyConfig(path=str(tiny_model_dir)), GRPOConfig(group_size=2, mini_batch_size=4),
                        EPISODE, RewardConfig(), display_sizer=lambda sample: DISPLAY, probe=probe)
    module.set_engine(CropThenAnswer(codec, reads_crop))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(grey_samples, batch_size=2, collate_fn=PromptBatch))
    metrics = trainer.callback_metrics
    assert float(metrics["rollout/tool_call_rate"]) == 1.0
    if expected is None:
        assert "probe/noise_unchanged" not in metrics and "time/probe" not in metrics
    else:
        assert float(metrics["probe/noise_unchanged"]) == expected and float(metrics["probe/trajectories"]) == 4
