"""Dynamic sampling (DAPO): GRPO steps in process (Lightning, the tiny Qwen2.5-VL, PromptData's step sampler) with
scripted replies that give two prompts a reward spread and four the same reward in both rollouts.

With dynamic sampling the update batch holds only groups with a spread, refilled from extra prompts (never the
step's own); with one round it is the step's prompts, constant groups included; off, nothing changes; a resumed run
rolls out the prompts and ends at the weights of an uninterrupted one.
"""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from lfpc.config import grpo_config
from lfpc.training.batches import PromptData, StepSampler
from lfpc.training.dynamic_sampling import DynamicSamplingConfig
from lfpc.training.module import GRPOConfig
from tests.test_resume import CONF_DIR
from tests.test_training_step import module_and_trainer, samples

# answers all A: a right answer scores 1.0, no answer 0 (w_acc 0.8 + w_fmt 0.2)
RIGHT, NONE = "<answer>A</answer>", "I cannot tell."
REPLIES = {"Which colour is the car?": (RIGHT, NONE), "What is written on the sign?": (NONE, RIGHT),  # spread
           "How many birds are there?": (RIGHT, RIGHT), "Where is the lamp?": (RIGHT, RIGHT),     # all 1.0
           "What shape is the window?": (NONE, NONE), "Who holds the umbrella?": (NONE, NONE)}     # all 0
SIGNAL = {"p0", "p1"}
PROMPTS, STEPS, SEED = 2, 2, 0


def data(noise_sample) -> PromptData:
    return PromptData(samples(noise_sample, tuple(REPLIES), "A" * len(REPLIES)), PROMPTS, STEPS, updates_per_step=1,
                      seed=SEED)


def fit(tiny_model_dir, codec, noise_sample, max_steps=STEPS, ckpt_path=None, **options) -> dict:
    """Fit a module (``options`` as in :func:`module_and_trainer`) on :func:`data`; per GRPO step the prompts of
    each rollout call and the update batch (sample id, group, advantage per trajectory), the module and trainer."""
    module, _, trainer = module_and_trainer(tiny_model_dir, codec, max_steps=max_steps, replies=REPLIES, **options)
    record = {"calls": [], "batches": [], "module": module, "trainer": trainer}
    rollout, update, rollout_batch = module.rollout, module.update, module.rollout_batch

    def spy_rollout(batch, seed):
        record["calls"].append((module.global_step, [s.id for s in batch]))
        return rollout(batch, seed)

    def spy_rollout_batch(batch, seed, grpo_step):
        trajectories, stats = rollout_batch(batch, seed, grpo_step)
        record["batches"].append({"ids": [t.sample.id for t in trajectories], "groups": [t.group for t in trajectories],
                                  "stats": stats})
        return trajectories, stats

    def spy_update(contexts, advantages):
        record["batches"][-1]["advantages"] = advantages.tolist()
        return update(contexts, advantages)

    module.rollout, module.update, module.rollout_batch = spy_rollout, spy_update, spy_rollout_batch
    trainer.fit(module, datamodule=data(noise_sample), ckpt_path=ckpt_path)
    return record


def step_prompts(step: int) -> list[str]:
    return [f"p{i}" for i in StepSampler(len(REPLIES), PROMPTS, STEPS, seed=SEED).step_indices(step)]


def on(max_rounds: int) -> DynamicSamplingConfig:
    return DynamicSamplingConfig(enabled=True, max_rounds=max_rounds)


@pytest.fixture(scope="module")
def dynamic(tiny_model_dir, codec, noise_sample):
    return fit(tiny_model_dir, codec, noise_sample, dynamic_sampling=on(3))  # 3 rounds reach all 6 prompts


@pytest.mark.slow
def test_update_batch_holds_only_groups_with_a_reward_spread(dynamic):
    assert any(set(step_prompts(s)) != SIGNAL for s in range(STEPS))  # the setting needs a refill
    assert len(dynamic["batches"]) == STEPS
    for batch in dynamic["batches"]:
        assert sorted(batch["ids"]) == ["p0", "p0", "p1", "p1"] and batch["groups"] == [0, 0, 1, 1]
        assert all(abs(a) > 0.5 for a in batch["advantages"])  # z-scores of a spread pair: +-0.71


@pytest.mark.slow
def test_refill_rounds_roll_out_new_prompts_and_are_counted(dynamic):
    for step in range(STEPS):
        calls = [ids for s, ids in dynamic["calls"] if s == step]
        assert calls[0] == step_prompts(step)
        refills = [i for ids in calls[1:] for i in ids]
        assert not set(refills) & set(step_prompts(step)) and len(set(refills)) == len(refills)
        stats = dynamic["batches"][step]["stats"]
        assert stats == {"sampling/rounds": len(calls), "sampling/groups_generated": 2 * len(calls),
                         "sampling/groups_dropped": 2 * len(calls) - 2, "sampling/flat_in_batch": 0}
    assert max(len([1 for s, _ in dynamic["calls"] if s == step]) for step in range(STEPS)) > 1
    metrics = dynamic["trainer"].callback_metrics
    assert float(metrics["sampling/groups_generated"]) == dynamic["batches"][-1]["stats"]["sampling/groups_generated"]


@pytest.mark.slow
def test_one_round_keeps_the_steps_prompts_constant_groups_included(tiny_model_dir, codec, noise_sample):
    record = fit(tiny_model_dir, codec, noise_sample, dynamic_sampling=on(1))
    for step, batch in enumerate(record["batches"]):
        assert batch["ids"] == [i for i in step_prompts(step) for _ in range(2)]
        flat = len(set(step_prompts(step)) - SIGNAL)
        assert batch["stats"]["sampling/flat_in_batch"] == flat and batch["stats"]["sampling/groups_dropped"] == 0
    assert any(batch["stats"]["sampling/flat_in_batch"] for batch in record["batches"])


@pytest.mark.slow
def test_off_trains_on_the_steps_prompts_as_before(tiny_model_dir, codec, noise_sample):
    record = fit(tiny_model_dir, codec, noise_sample)
    assert [ids for _, ids in record["calls"]] == [step_prompts(s) for s in range(STEPS)]  # no extra rollouts
    for step, batch in enumerate(record["batches"]):
        assert batch["ids"] == [i for i in step_prompts(step) for _ in range(2)] and batch["stats"] == {}
    assert not any(key.startswith("sampling/") for key in record["trainer"].callback_metrics)


@pytest.mark.slow
def test_resumed_run_rolls_out_and_ends_like_an_uninterrupted_one(dynamic, tiny_model_dir, codec, noise_sample,
                                                                   tmp_path):
    first = fit(tiny_model_dir, codec, noise_sample, max_steps=1, dynamic_sampling=on(3))
    first["trainer"].save_checkpoint(tmp_path / "step1.ckpt")
    resumed = fit(tiny_model_dir, codec, noise_sample, ckpt_path=tmp_path / "step1.ckpt", dynamic_sampling=on(3))
    assert [c for c in resumed["calls"]] == [c for c in dynamic["calls"] if c[0] == 1]
    assert resumed["batches"][0]["ids"] == dynamic["batches"][1]["ids"]
    weights, straight = resumed["module"].policy.state_dict(), dynamic["module"].policy.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in straight.items())


def test_refill_prompts_are_a_function_of_step_and_round_disjoint_over_ranks():
    ranks = [StepSampler(12, 2, 5, rank=r, world_size=2, seed=3) for r in range(2)]
    step = {i for sampler in ranks for i in sampler.step_indices(1)}
    rounds = [[i for sampler in ranks for i in sampler.refill_indices(1, k)] for k in (1, 2)]
    assert all(len(set(r)) == 4 and not set(r) & step for r in rounds)  # 4 per round, none of the step's 4
    assert not set(rounds[0]) & set(rounds[1])                          # rounds draw without repeats
    assert StepSampler(12, 2, 5, rank=1, world_size=2, seed=3).refill_indices(1, 2) == ranks[1].refill_indices(1, 2)
    assert ranks[0].refill_indices(2, 1) != ranks[0].refill_indices(1, 1)  # another step, other prompts


def test_config_and_its_checks(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"output_dir={tmp_path}", "cache_dir=/tmp/cache",
                                           "grpo.dynamic_sampling.enabled=true", "grpo.dynamic_sampling.max_rounds=2"])
    assert grpo_config(cfg).dynamic_sampling == on(2)
    with pytest.raises(ValueError, match="max_rounds must be >= 1"):
        on(0)
    with pytest.raises(ValueError, match="group_size >= 2"):
        GRPOConfig(group_size=1, dynamic_sampling=on(2))
