"""Batched greedy evaluation through the rollout engine, one (token budget, crop mode) pass at a time, resumable."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from typing import Collection, Sequence

from tqdm.auto import tqdm

from lfpc.agent.env import MODES
from lfpc.data.records import Sample
from lfpc.evaluation.records import RecordLog, question_record, record_key
from lfpc.rollout.base import RolloutEngine, SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.episodes import EpisodeConfig, Trajectory, run_episodes
from lfpc.viewer.capture import save_thumbnails
from lfpc.vision.budget import fit_to_budget

GREEDY = SamplingConfig(temperature=0.0)


@dataclass(frozen=True)
class EvalPlan:
    """What to evaluate: global-image token ``budgets`` x crop ``modes`` (pred | gt | noise | direct), each over
    the benchmark in batches of ``batch_size`` questions; ``episode.crop_mode`` is replaced by each mode."""

    budgets: tuple[int, ...]
    modes: tuple[str, ...]
    episode: EpisodeConfig
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.budgets or any(isinstance(b, bool) or not isinstance(b, int) or b < 4 for b in self.budgets):
            raise ValueError(f"eval.budgets must list visual-token budgets (integers >= 4), got {list(self.budgets)}")
        unknown = [m for m in self.modes if m not in MODES]
        if not self.modes or unknown:
            raise ValueError(f"eval.modes must list crop modes from {list(MODES)}, got {list(self.modes)}")
        if self.batch_size < 1:
            raise ValueError(f"eval.batch_size must be >= 1, got {self.batch_size}")
        needed = max(self.budgets) + self.episode.crop_max_tokens
        if self.episode.max_context_tokens <= needed:
            raise ValueError(f"episode.max_context_tokens ({self.episode.max_context_tokens}) leaves no room to crop: "
                             f"the global image alone takes up to {max(self.budgets)} tokens and a crop up to "
                             f"{self.episode.crop_max_tokens}; set episode.max_context_tokens above {needed}")


def rollout_batch(engine: RolloutEngine, codec: ChatCodec, samples: Sequence[Sample], budget: int, mode: str,
                  plan: EvalPlan) -> tuple[list[Trajectory], float]:
    """One greedy episode per sample with the global image fitted to ``budget`` visual tokens and crops in
    ``mode``; returns the trajectories and the batch's wall time in seconds."""
    episode = dataclasses.replace(plan.episode, crop_mode=mode)
    sizes = [fit_to_budget(s.image_size, budget, side=codec.token_side) for s in samples]
    start = time.perf_counter()
    trajectories = run_episodes(engine, codec, samples, sizes, 1, episode, GREEDY, seed=plan.seed)
    return trajectories, time.perf_counter() - start


def warm_up_engine(engine: RolloutEngine, codec: ChatCodec, sample: Sample, budget: int) -> None:
    """One single-token generation on ``sample``, so one-time start-up costs (lazy initialisation, kernel
    selection) do not count in the first batch's time per question."""
    episode = EpisodeConfig(max_turns=0, max_new_tokens_per_turn=1, max_response_tokens=1, crop_mode="direct")
    run_episodes(engine, codec, [sample], [fit_to_budget(sample.image_size, budget, side=codec.token_side)], 1, episode, GREEDY)


def check_modes(samples: Sequence[Sample], modes: Sequence[str], benchmark: str) -> None:
    """Refuse the ``gt`` mode on a benchmark whose questions lack GT boxes (before any work is done)."""
    if "gt" in modes:
        missing = [s.id for s in samples if not s.boxes]
        if missing:
            raise ValueError(f"crop mode 'gt' needs GT boxes, but {len(missing)} of {len(samples)} questions of "
                             f"benchmark {benchmark!r} have none (e.g. {missing[0]!r}); drop 'gt' from eval.modes")


def plan_summary(samples: Sequence[Sample], plan: EvalPlan) -> dict:
    """What the records of ``plan`` over ``samples`` are: question ids, modes and budgets (``metrics.json``'s
    ``plan``; :func:`plan_records` and :func:`lfpc.evaluation.records.load_run_records` read its records)."""
    return {"questions": [s.id for s in samples], "modes": list(plan.modes), "budgets": list(plan.budgets)}


def plan_records(samples: Sequence[Sample], plan: EvalPlan, log: RecordLog) -> list[dict]:
    """The records of every (budget, mode, sample) of ``plan``, in plan order: never those ``log`` keeps from
    earlier runs on other questions, a larger ``eval.limit`` or other modes and budgets."""
    return [log.records[record_key(s.id, mode, budget)]
            for budget in plan.budgets for mode in plan.modes for s in samples]


def pending(samples: Sequence[Sample], plan: EvalPlan, done: set[str]) -> list[tuple[int, str, list[Sample]]]:
    """(budget, mode, samples not yet evaluated) for every pass of ``plan`` with work left."""
    passes = []
    for budget in plan.budgets:
        for mode in plan.modes:
            todo = [s for s in samples if record_key(s.id, mode, budget) not in done]
            if todo:
                passes.append((budget, mode, todo))
    return passes


def batch_records(trajectories: Sequence[Trajectory], codec: ChatCodec, benchmark: str, mode: str, budget: int,
                  seconds: float, log: RecordLog, image_ids: Collection[str], thumbnail_px: int) -> list[dict]:
    """The records of one batch; questions in ``image_ids`` also keep thumbnails of their images under
    ``images/`` next to the log (for the trajectory viewer)."""
    records = []
    for trajectory in trajectories:
        record = question_record(trajectory, codec, benchmark, mode, budget, seconds / len(trajectories))
        if trajectory.sample.id in image_ids:
            stem = hashlib.sha1(record["key"].encode()).hexdigest()[:16]
            record["images"] = save_thumbnails(trajectory, log.path.parent / "images", stem, thumbnail_px)
        records.append(record)
    return records


def evaluate_samples(engine: RolloutEngine, codec: ChatCodec, samples: Sequence[Sample], plan: EvalPlan,
                     log: RecordLog, benchmark: str, progress: bool = True, image_ids: Collection[str] = (),
                     thumbnail_px: int = 384) -> list[dict]:
    """Evaluate every (sample, mode, budget) of ``plan`` missing from ``log``, appending each batch's records as
    soon as it is done; return the records of the whole plan (earlier and new) in plan order. Questions in
    ``image_ids`` keep thumbnails of the images the model saw (see :func:`batch_records`)."""
    check_modes(samples, plan.modes, benchmark)
    passes = pending(samples, plan, log.done)
    if passes:
        warm_up_engine(engine, codec, passes[0][2][0], passes[0][0])
    with tqdm(total=sum(len(todo) for _, _, todo in passes), desc=benchmark, unit="q", disable=not progress) as bar:
        for budget, mode, todo in passes:
            bar.set_postfix(mode=mode, budget=budget)
            for start in range(0, len(todo), plan.batch_size):
                batch = todo[start:start + plan.batch_size]
                trajectories, seconds = rollout_batch(engine, codec, batch, budget, mode, plan)
                log.append(batch_records(trajectories, codec, benchmark, mode, budget, seconds, log, image_ids,
                                         thumbnail_px))
                bar.update(len(batch))
    return plan_records(samples, plan, log)
