"""Which prompts each rank trains on at each GRPO step (the sampler a resumed run continues from)."""

from __future__ import annotations

from lfpc.training.batches import StepSampler


def test_ranks_get_disjoint_prompts_and_each_pass_covers_the_data_once():
    ranks = [list(StepSampler(12, 2, num_steps=6, rank=r, world_size=2, seed=3)) for r in range(2)]
    assert all(len(indices) == 12 for indices in ranks)  # 6 steps x 2 prompts
    for data_pass in range(2):  # 3 steps per pass: 3 x 2 prompts x 2 ranks = all 12 samples, each once
        seen = [i for indices in ranks for i in indices[data_pass * 6:(data_pass + 1) * 6]]
        assert sorted(seen) == list(range(12))
    assert ranks[0][:6] != ranks[0][6:]  # every pass is shuffled anew


def test_a_resumed_sampler_continues_where_the_interrupted_one_stopped():
    full = list(StepSampler(10, 3, num_steps=5, seed=1))
    resumed = StepSampler(10, 3, num_steps=5, seed=1, start_step=2)
    assert list(resumed) == full[2 * 3:] and len(resumed) == len(full)
