"""Two GRPO steps in process (Lightning, the tiny Qwen2.5-VL, 2 prompts x group 2, a scripted rollout engine).

Checked against values worked out by hand, not against the code under test: the engine holds the trainer's
current weights at every rollout; trajectories are grouped by prompt; the advantages are the per-group z-scores
of the rewards; after one update the positive-advantage trajectories are more likely and the negative ones less;
the KL term's reference is the frozen initial policy; a resumed run restores the weights and the Adam moments.
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lfpc.data.records import Sample
from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.grpo.objective import PolicyLossConfig
from lfpc.model.loading import load_model
from lfpc.rewards import RewardConfig
from lfpc.rollout.base import Completion
from lfpc.rollout.episodes import EpisodeConfig
from lfpc.training.batches import PromptBatch
from lfpc.training.module import GRPOConfig, GRPOModule, PolicyConfig

pytestmark = pytest.mark.slow

DISPLAY = (224, 112)  # what the display sizer gives every sample
QUESTIONS = ("Which colour is the car?", "What is written on the sign?")
# The reply of each rollout of each prompt (answers: A and C); a reply without an answer ends the episode
# (max_turns 0). The positive and the negative replies share no text, so the update's direction shows per rollout.
REPLIES = {QUESTIONS[0]: ("<answer>A</answer>", "I cannot tell."),
           QUESTIONS[1]: ("<answer>D</answer>", "No idea.")}
# rewards (w_acc 0.8, w_fmt 0.2): right 1.0, wrong 0.2, no answer 0; one group for all would flip rollout 2's sign
REWARDS = [1.0, 0.0, 0.2, 0.0]


def z_scores(pair: tuple[float, float], eps: float = 1e-6) -> list[float]:
    """GRPO advantages of a group of two: (r - mean) / (unbiased std + eps), with std = |r1 - r2| / sqrt(2)."""
    mean, std = sum(pair) / 2, abs(pair[0] - pair[1]) / math.sqrt(2)
    return [(r - mean) / (std + eps) for r in pair]


class ScriptedEngine:
    """Replies from ``replies`` (REPLIES) by question and rollout index (order within the question); keeps every
    weight push and, at every generate call, whether its weights are the trainer's current ones."""

    def __init__(self, codec, module, replies: dict[str, tuple[str, ...]] = REPLIES):
        self.codec, self.module, self.replies = codec, module, replies
        self.pushes: list[dict[str, torch.Tensor]] = []
        self.fresh: list[bool] = []

    def load_weights(self, named_tensors):
        self.pushes.append({name: tensor.detach().clone() for name, tensor in named_tensors})

    def generate(self, contexts, sampling):
        current = self.module.policy.state_dict()
        self.fresh.append(bool(self.pushes) and self.pushes[-1].keys() == current.keys()
                          and all(torch.equal(self.pushes[-1][k], v) for k, v in current.items()))
        seen: dict[str, int] = {}
        completions = []
        for context in contexts:
            question = next(q for q in self.replies if q in self.codec.tokenizer.decode(context.token_ids))
            seen[question] = seen.get(question, -1) + 1
            text = self.replies[question][seen[question]]
            ids = self.codec.completion_ids(text)
            completions.append(Completion(ids, [0.0] * len(ids), "stop"))
        return completions

    def sleep(self):
        pass


def samples(noise_sample, questions=QUESTIONS, answers="AC") -> list[Sample]:
    """One prompt per question (the two QUESTIONS, answers A and C), on one image with nested GT boxes."""
    return [Sample(id=f"p{i}", image_path=noise_sample.image_path, question=q, options=("a", "b", "c", "d"),
                   answer=answers[i], boxes=noise_sample.boxes, image_size=(1024, 768))
            for i, q in enumerate(questions)]


def module_and_trainer(tiny_model_dir, codec, max_steps: int = 2, replies=REPLIES, **options
                       ) -> tuple[GRPOModule, ScriptedEngine, L.Trainer]:
    """A GRPO module (with a KL term) on the tiny model with the scripted engine, and a ``max_steps`` CPU trainer;
    ``options`` replace fields of the module's GRPOConfig, or set the PolicyConfig's ``lora``."""
    policy = PolicyConfig(path=str(tiny_model_dir), lora=options.pop("lora", None))
    defaults = {"group_size": 2, "mini_batch_size": 4, "micro_batch_size": 2, "lr": 1e-3, "max_grad_norm": 1e9,
                "loss": PolicyLossConfig(kl_coef=0.1)}  # no KL gradient at step 0: the policy is the reference
    grpo = GRPOConfig(**{**defaults, **options})
    module = GRPOModule(policy, grpo, EpisodeConfig(max_turns=0, max_new_tokens_per_turn=64, crop_max_tokens=16),
                        RewardConfig(), display_sizer=lambda sample: DISPLAY)
    engine = ScriptedEngine(codec, module, replies)
    module.set_engine(engine)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    return module, engine, trainer


@pytest.fixture(scope="module")
def run(tiny_model_dir, codec, noise_sample):
    """Two GRPO steps on the same 2 prompts; the engine, the trajectories and advantages of each step, the module
    and the trainer."""
    module, engine, trainer = module_and_trainer(tiny_model_dir, codec)
    steps: list[dict] = []
    rollout, update = module.rollout, module.update

    def spy_rollout(batch, seed):
        trajectories = rollout(batch, seed)
        steps.append({"trajectories": trajectories})
        return trajectories

    def spy_update(contexts, advantages):
        steps[-1]["advantages"] = advantages.clone()
        return update(contexts, advantages)

    module.rollout, module.update = spy_rollout, spy_update
    trainer.fit(module, DataLoader(samples(noise_sample), batch_size=2, collate_fn=PromptBatch))
    return engine, steps, module, trainer


def test_engine_holds_the_trainers_current_weights_at_every_rollout(run):
    engine, steps, _, _ = run
    assert len(steps) == 2 and len(engine.pushes) == 2       # one push per GRPO step
    assert engine.fresh == [True, True]                      # one generate call per step (single-turn episodes)
    assert any(not torch.equal(engine.pushes[0][k], v) for k, v in engine.pushes[1].items())  # step 1 saw the update


def test_rollouts_are_grouped_by_prompt_and_scored(run):
    _, steps, _, _ = run
    for step in steps:
        trajectories = step["trajectories"]
        assert [t.group for t in trajectories] == [0, 0, 1, 1]
        assert [t.sample.id for t in trajectories] == ["p0", "p0", "p1", "p1"]
        assert [t.display_size for t in trajectories] == [DISPLAY] * 4
        assert [t.scores["total"] for t in trajectories] == pytest.approx(REWARDS)


def test_advantages_are_per_prompt_z_scores_of_the_rewards(run):
    _, steps, _, _ = run
    expected = torch.tensor(z_scores(tuple(REWARDS[:2])) + z_scores(tuple(REWARDS[2:])))
    for step in steps:
        torch.testing.assert_close(step["advantages"], expected, atol=1e-5, rtol=0)


def test_update_raises_positive_and_lowers_negative_advantage_trajectories(run, tiny_model_dir, codec):
    engine, steps, _, _ = run
    contexts = [t.context for t in steps[0]["trajectories"]]
    before, after = load_model(tiny_model_dir), load_model(tiny_model_dir)
    after.load_state_dict(engine.pushes[1])  # the weights after the first update

    def completion_logprob(model):
        with torch.no_grad():
            lp = sequence_logprobs(model, contexts, codec.pad_id, codec.image_pad_id)["logprobs"]
        return (lp * shifted_policy_tensors(contexts)["mask"]).sum(dim=1)

    change = completion_logprob(after) - completion_logprob(before)
    signs = [1 if a > 0 else -1 for a in steps[0]["advantages"].tolist()]
    assert signs == [1, -1, 1, -1]
    assert all(s * c > 0.1 for s, c in zip(signs, change.tolist())), change  # measured: about +-1 to 2


def test_kl_is_measured_against_the_frozen_initial_policy(run, tiny_model_dir):
    _, _, module, trainer = run
    initial = load_model(tiny_model_dir).state_dict()
    reference = module.reference.state_dict()
    assert reference.keys() == initial.keys() and all(torch.equal(reference[k], v) for k, v in initial.items())
    assert not any(p.requires_grad for p in module.reference.parameters())
    # step 1 updates a policy that step 0 moved away from the reference
    assert float(trainer.callback_metrics["train/kl"]) > 1e-4


def test_resume_restores_the_weights_and_the_optimizer_state(run, tiny_model_dir, codec, noise_sample, tmp_path):
    _, _, module, trainer = run
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed, engine, again = module_and_trainer(tiny_model_dir, codec)
    # the checkpoint is at max_steps already: fit restores it and stops before any rollout
    again.fit(resumed, DataLoader(samples(noise_sample), batch_size=2, collate_fn=PromptBatch),
              ckpt_path=tmp_path / "last.ckpt")
    assert again.global_step == 2 and engine.pushes == []
    weights, restored = module.policy.state_dict(), resumed.policy.state_dict()
    assert restored.keys() == weights.keys() and all(torch.equal(restored[k], v) for k, v in weights.items())
    state, restored_state = trainer.optimizers[0].state_dict(), again.optimizers[0].state_dict()
    assert restored_state["param_groups"] == state["param_groups"]
    assert len(state["state"]) == len(list(module.policy.parameters()))  # Adam moments of every parameter
    for index, moments in state["state"].items():
        assert moments.keys() == restored_state["state"][index].keys()
        assert all(torch.equal(v, restored_state["state"][index][k]) for k, v in moments.items())
