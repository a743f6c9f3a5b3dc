"""Assemble a run's :class:`~lfpc.plan.report.Plan` from its composed config."""

from __future__ import annotations

from lfpc import config as C
from lfpc.plan.memory import model_config, plan_memory
from lfpc.plan.report import GIB, Plan
from lfpc.plan.rollout import plan_rollout
from lfpc.plan.step_time import plan_step_time
from lfpc.plan.trajectories import PROMPT_TOKENS, Workload, worst_case

WARM_UP = Workload(context_tokens=128, response_tokens=8, turn_tokens=8, image_tokens=(16,))  # creates AdamW state


def typical(cfg, worst: Workload) -> Workload:
    """The trajectory of the step-time estimate: ``plan.mean_context_tokens`` / ``plan.mean_response_tokens``
    (null: the worst case's), every non-policy token beyond the prompt visual."""
    context = cfg.plan.mean_context_tokens or worst.context_tokens
    response = cfg.plan.mean_response_tokens or worst.response_tokens
    if context == worst.context_tokens and response == worst.response_tokens:
        return worst
    return Workload(context, response, worst.turn_tokens, (max(context - response - PROMPT_TOKENS, 0),))


def make_plan(cfg) -> Plan:
    """Plan ``cfg``'s launch per rank (every rank is alike): memory of each phase and the step time."""
    C.check_run_config(cfg)
    config, source = model_config(cfg)
    worst = worst_case(cfg)
    memory = plan_memory(cfg, worst, WARM_UP)
    trajectories = C.per_rank(cfg, "prompts_per_step") * cfg.grpo.group_size
    rollout = plan_rollout(cfg, config, memory.parameters, trajectories,
                           worst.context_tokens + cfg.episode.max_new_tokens_per_turn, memory.trainer_state)
    step = plan_step_time(cfg, config, typical(cfg, worst), rollout, trajectories, C.updates_per_step(cfg) > 1)
    h = cfg.hardware
    return Plan(C.world_size(cfg), h.name, int(h.gpu_memory_gib * GIB), int(h.reserved_gib * GIB),
                cfg.plan.min_headroom, worst, memory, rollout, step, source)
