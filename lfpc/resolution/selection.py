"""Offline resolution selection (paper Sec. 3.2, Stage I): per sample, the global-view size to train with.

For each sample a downsampling pyramid is built (level 0 = the original image at the global token budget,
each next level scaled by ``scale`` down to ``min_tokens``). The model answers the question directly
(no tool, greedy) on the reference view and on the levels, largest first, batched across samples; the
``answer_divergence`` strategy picks the first level whose answer differs from the reference answer.

The reference ("the original image") is the image at ``reference_max_tokens`` visual tokens, by default the global
budget itself (= level 0): the policy never sees more than the budget, so the gap is measured against what it would
see without one; a larger reference (e.g. 16384) makes level 0 itself a candidate. An answer is its canonical form
(:func:`lfpc.answers.answer_key`: the option letter with options), or ``"none"`` for no valid answer. Two answers
agree (:func:`answers_agree`) when they name the same option; a free-form answer agrees with the reference answer
when the accuracy reward's rule grades it right against it (:func:`lfpc.answers.grade`: numbers, yes/no, equal
text), or one contains the other as whole words ("red car" and "red"), or, when neither settles it, the optional
judge (``judge.model``) says so. A reply without a valid answer is asked once more (useful when the answerer is not
deterministic), then its level is skipped: it is no divergence. The statistics count retries, skipped levels and the
samples that never diverged, with the policy applied to them (``never_diverged``).

Stopping rule ``stop``: ``first_divergence`` queries levels until the first divergence (the paper),
``all`` queries every level (answers for analysis; same choice). Results go to a resumable manifest
(:mod:`lfpc.resolution.manifest`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm.auto import tqdm

from lfpc.answers import Judge, answer_key, grade, normalize_text
from lfpc.boxes import Size
from lfpc.data.records import Sample
from lfpc.files import entry_lock, write_json
from lfpc.resolution.manifest import Manifest
from lfpc.resolution.strategies import NEVER_DIVERGED, NO_ANSWER, STRATEGIES, choose_level, divergence_level
from lfpc.rollout.base import RolloutEngine, SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.episodes import EpisodeConfig, run_episodes
from lfpc.vision.budget import PATCH, downsample_pyramid, fit_to_budget, visual_tokens
from lfpc.vision.images import image_digest

log = logging.getLogger(__name__)

STOP_RULES = ("first_divergence", "all")
ANSWER_MATCH = "grade, containment, judge"  # how answers are compared (in the manifest fingerprint)

AnswerFn = Callable[[Sequence[Sample], Sequence[Size]], list[str]]
"""Answers ``samples[i]`` shown at ``sizes[i]`` for every i, in one batch: a canonical answer or ``"none"``."""


@dataclass(frozen=True)
class SelectionConfig:
    """Pyramid schedule, reference view, stopping rule and strategy of one selection."""

    strategy: str = "answer_divergence"
    max_tokens: int = 1024                  # global budget: level 0
    scale: float = 0.5 ** 0.5               # side scale between levels
    min_tokens: int = 16                    # smallest level
    reference_max_tokens: int | None = None  # the "original" view; None = max_tokens (level 0)
    stop: str = "first_divergence"          # first_divergence | all
    never_diverged: str = "hardest"         # hardest | original | drop (answer_divergence only)
    seed: int = 0                           # random strategy only
    max_new_tokens: int = 64                # generation budget of one direct answer
    batch_samples: int = 64                 # samples whose queries are batched together
    token_side: int = PATCH                 # the backbone's pixels per visual token (lfpc.model.families)
    judge: str | None = None                # the judge model compared free-form answers no rule settles (None: none)

    def __post_init__(self) -> None:
        for name, value, allowed in (("strategy", self.strategy, STRATEGIES), ("stop", self.stop, STOP_RULES),
                                     ("never_diverged", self.never_diverged, NEVER_DIVERGED)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")
        if self.reference_max_tokens is not None and self.reference_max_tokens < self.max_tokens:
            raise ValueError(f"reference_max_tokens ({self.reference_max_tokens}) must be >= the global budget "
                             f"max_tokens ({self.max_tokens}), or null for the budget itself")
        if self.batch_samples < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_samples and max_new_tokens must be >= 1")

    def levels(self, image_size: Size) -> list[Size]:
        """The downsampling pyramid of an image of ``image_size``, largest first."""
        return downsample_pyramid(image_size, self.max_tokens, self.scale, self.min_tokens, self.token_side)

    def reference(self, image_size: Size) -> Size:
        """Size of the reference ("original") view."""
        return fit_to_budget(image_size, self.reference_max_tokens or self.max_tokens, side=self.token_side)

    def settings(self) -> dict:
        """Everything that determines the records (what the manifest fingerprint covers)."""
        settings = {**asdict(self), "answer_match": ANSWER_MATCH}
        settings.pop("batch_samples")
        settings.pop("token_side")  # implied by the model, whose fingerprint the manifest holds
        if self.strategy != "random":
            settings.pop("seed")
        if self.strategy != "answer_divergence":
            settings.pop("never_diverged")
        return settings


@dataclass
class SelectionStats:
    """What a selection did: cache use, chosen levels, never-diverging samples, throughput."""

    total: int
    cached: int
    computed: int
    queries: int                  # model answers generated in this call
    seconds: float                # time spent computing in this call (0 when everything was cached)
    never_diverged: int           # samples whose answer never differs from the reference answer
    never_diverged_policy: str
    dropped: int
    retried: int = 0              # queries asked again after a reply without a valid answer
    skipped_levels: int = 0       # levels still without a valid answer after the retry (not divergences)
    no_reference_answer: int = 0  # samples without a valid reference answer (so they never diverge)
    level_counts: dict[int, int] = field(default_factory=dict)  # chosen level -> samples
    mean_chosen_tokens: float = 0.0
    total_seconds: float = 0.0    # time spent computing the manifest's records, over every call (paper Table 11)
    devices: int = 1              # the selection runs in one process on one device
    fingerprint: str = ""         # the manifest's: ``total_seconds`` carries over only while it stays the same

    @property
    def never_diverged_fraction(self) -> float:
        return self.never_diverged / self.total if self.total else 0.0

    @property
    def samples_per_s(self) -> float | None:
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None

    def as_dict(self) -> dict:
        """JSON-ready dict, including the derived fraction and throughput."""
        return {**asdict(self), "never_diverged_fraction": self.never_diverged_fraction,
                "samples_per_s": self.samples_per_s}

    def summary(self) -> str:
        """One line for logs."""
        speed = f"{self.samples_per_s:.2f} samples/s" if self.samples_per_s else "n/a samples/s"
        return (f"{self.total} samples ({self.cached} cached, {self.computed} computed in {self.seconds:.1f} s, "
                f"{speed}, {self.queries} queries); chosen levels {dict(sorted(self.level_counts.items()))}, "
                f"mean {self.mean_chosen_tokens:.0f} visual tokens; never diverged {self.never_diverged}/"
                f"{self.total} ({100 * self.never_diverged_fraction:.1f}%, -> {self.never_diverged_policy}; "
                f"{self.no_reference_answer} without a valid reference answer); dropped {self.dropped}; "
                f"{self.retried} queries retried for no valid answer, {self.skipped_levels} levels skipped")


@dataclass
class SelectionResult:
    """Display size of every kept sample, the manifest record of every sample, and the statistics."""

    sizes: dict[str, Size]
    records: dict[str, dict]
    stats: SelectionStats


def rollout_answerer(engine: RolloutEngine, codec: ChatCodec, max_new_tokens: int) -> AnswerFn:
    """An :data:`AnswerFn` that asks ``engine`` for one direct (tool-free), greedy answer per (sample, size)."""
    episode = EpisodeConfig(max_turns=0, max_new_tokens_per_turn=max_new_tokens, max_response_tokens=max_new_tokens,
                            crop_mode="direct")
    greedy = SamplingConfig(temperature=0.0)

    def answer(samples: Sequence[Sample], sizes: Sequence[Size]) -> list[str]:
        trajectories = run_episodes(engine, codec, samples, sizes, 1, episode, greedy)
        return [answer_key(t.outcome.answer, t.sample) or NO_ANSWER for t in trajectories]

    return answer


def answers_agree(answer: str, reference: str, sample: Sample, judge: Judge | None = None) -> bool:
    """Whether two canonical answers (:func:`lfpc.answers.answer_key`) to ``sample`` say the same.

    With options: the same letter. Free-form: the accuracy reward's rule with ``reference`` as the truth
    (:func:`lfpc.answers.grade`) when it decides; else whole-word containment of one in the other; else ``judge``
    when given; else they differ.
    """
    if sample.options or answer == reference:
        return answer == reference
    verdict = grade(answer, dataclasses.replace(sample, answer=reference))
    if verdict is not None:
        return verdict
    a, b = f" {normalize_text(answer)} ", f" {normalize_text(reference)} "
    if a in b or b in a:
        return True
    return judge is not None and judge(sample.question, reference, answer)


def select_resolutions(samples: Sequence[Sample], config: SelectionConfig, manifest_path: str | Path,
                       model_fingerprint: str, make_answerer: Callable[[], AnswerFn],
                       progress: bool = True, judge: Judge | None = None) -> SelectionResult:
    """Select a display size for every sample, reusing finished records of the manifest at ``manifest_path``.

    ``make_answerer`` is called (once) only when some sample still needs the model; ``judge`` settles free-form
    answers no rule compares (:func:`answers_agree`). Records are appended to the manifest sample by sample; the
    statistics are logged and written to ``<manifest>.stats.json``.
    """
    duplicates = [i for i, n in Counter(s.id for s in samples).items() if n > 1]
    if duplicates:
        raise ValueError(f"sample ids must be unique for resolution selection; repeated: {duplicates[:5]}")
    for sample in samples:
        if sample.image_size is None:
            raise ValueError(f"sample {sample.id} has no image_size; resolution selection needs it")
    with entry_lock(manifest_path, wait=True):  # concurrent processes (e.g. torchrun ranks) compute it once
        manifest = Manifest(manifest_path, {**config.settings(), "model": model_fingerprint})
        pending = [s for s in samples if manifest.lookup(s) is None]
        stamp = {"fingerprint": manifest.fingerprint, "model": model_fingerprint}
        start, queries = time.perf_counter(), 0
        if pending:
            answer = make_answerer()
            with tqdm(total=len(pending), desc="resolution selection", unit="sample", disable=not progress) as bar:
                for begin in range(0, len(pending), config.batch_samples):
                    batch = pending[begin:begin + config.batch_samples]
                    for record in _select_batch(batch, config, answer, stamp, judge):
                        manifest.append(record)
                        queries += record["queries"]
                        bar.update(1)
        seconds = time.perf_counter() - start if pending else 0.0
        records = {s.id: manifest.lookup(s) for s in samples}
        stats_path = Path(f"{manifest_path}.stats.json")
        sizes = {i: tuple(r["chosen_size"]) for i, r in records.items() if r["chosen_size"] is not None}
        stats = _statistics(records, sizes, config, cached=len(samples) - len(pending), queries=queries,
                            seconds=seconds)
        stats.fingerprint = manifest.fingerprint
        stats.total_seconds = _earlier_seconds(stats_path, manifest.fingerprint) + seconds
        write_json(stats_path, stats.as_dict())
    log.info("resolution selection (%s, %s): %s", config.strategy, manifest_path, stats.summary())
    return SelectionResult(sizes=sizes, records=records, stats=stats)


@dataclass
class _Walk:
    """One sample's queries so far: answers by display size."""

    sample: Sample
    reference: Size
    levels: list[Size]
    answers: dict[Size, str] = field(default_factory=dict)
    retried: set[Size] = field(default_factory=set)  # sizes asked again after a reply without a valid answer
    judge: Judge | None = None

    def same(self, answer: str, reference: str) -> bool:
        """:func:`answers_agree` for this sample."""
        return answers_agree(answer, reference, self.sample, self.judge)

    def take(self, size: Size, reply: str) -> None:
        """Keep ``reply`` for ``size``; a first reply without a valid answer is dropped, so it is asked again."""
        if reply == NO_ANSWER and size not in self.retried:
            self.retried.add(size)
        else:
            self.answers[size] = reply

    def next_queries(self, stop: str) -> list[Size]:
        """Sizes to ask about in the next round (none when this sample is finished)."""
        if stop == "all":
            return [s for s in dict.fromkeys([self.reference, *self.levels]) if s not in self.answers]
        if self.reference not in self.answers:
            return [self.reference]
        if self.answers[self.reference] == NO_ANSWER:
            return []  # nothing to compare the levels with
        for level in self.levels:
            if level not in self.answers:
                return [level]
            if self.answers[level] != NO_ANSWER and not self.same(self.answers[level], self.answers[self.reference]):
                return []
        return []

    def record(self, config: SelectionConfig, stamp: dict) -> dict:
        """The manifest record: sizes, answers per level, divergence, choice, plus ``stamp`` (fingerprints)."""
        reference_answer = self.answers[self.reference]
        answers = [self.answers.get(level) for level in self.levels]
        divergence = divergence_level(reference_answer, answers, self.same)
        chosen = choose_level(config.strategy, len(self.levels), self.sample.id, config.seed, divergence,
                              config.never_diverged)
        return {"id": self.sample.id, "image_path": self.sample.image_path,
                "image_digest": image_digest(self.sample.image_path),
                "image_size": list(self.sample.image_size), "strategy": config.strategy, **stamp,
                "reference_size": list(self.reference), "reference_answer": reference_answer,
                "levels": [list(level) for level in self.levels], "answers": answers,
                "divergence_level": divergence, "chosen_level": chosen,
                "chosen_size": None if chosen is None else list(self.levels[chosen]),
                "queries": len(self.answers) + len(self.retried), "retried": len(self.retried),
                "skipped_levels": sum(answer == NO_ANSWER for answer in answers)}


def _select_batch(samples: Sequence[Sample], config: SelectionConfig, answer: AnswerFn,
                  stamp: dict, judge: Judge | None = None) -> Iterator[dict]:
    """Walk a batch of samples level by level, one batched model call per round; yield each sample's record as
    soon as that sample is finished (so it can be saved before the rest of the batch)."""
    walks = [_Walk(s, config.reference(s.image_size), config.levels(s.image_size), judge=judge) for s in samples]
    while walks:
        queries, active = [], []
        for walk in walks:
            sizes = walk.next_queries(config.stop)
            if sizes:
                active.append(walk)
                queries.extend((walk, size) for size in sizes)
            else:
                yield walk.record(config, stamp)
        walks = active
        if not queries:
            return
        replies = answer([walk.sample for walk, _ in queries], [size for _, size in queries])
        if len(replies) != len(queries):
            raise RuntimeError(f"the answer source returned {len(replies)} answers for {len(queries)} queries")
        for (walk, size), reply in zip(queries, replies):
            walk.take(size, reply)


def _earlier_seconds(stats_path: Path, fingerprint: str) -> float:
    """The compute time the statistics at ``stats_path`` recorded for the manifest of ``fingerprint`` (0 for
    another manifest, or none): a later call that finds the records cached keeps the time they took."""
    if not stats_path.is_file():
        return 0.0
    earlier = json.loads(stats_path.read_text())
    return float(earlier.get("total_seconds", 0.0)) if earlier.get("fingerprint") == fingerprint else 0.0


def _statistics(records: dict[str, dict], sizes: dict[str, Size], config: SelectionConfig, cached: int,
                queries: int, seconds: float) -> SelectionStats:
    kept = [r for r in records.values() if r["chosen_level"] is not None]
    tokens = [visual_tokens(*size, config.token_side) for size in sizes.values()]
    return SelectionStats(
        total=len(records), cached=cached, computed=len(records) - cached, queries=queries, seconds=seconds,
        never_diverged=sum(r["divergence_level"] is None for r in records.values()),
        never_diverged_policy=config.never_diverged if config.strategy == "answer_divergence" else "n/a",
        dropped=len(records) - len(kept), level_counts=dict(Counter(r["chosen_level"] for r in kept)),
        retried=sum(r["retried"] for r in records.values()),
        skipped_levels=sum(r["skipped_levels"] for r in records.values()),
        no_reference_answer=sum(r["reference_answer"] == NO_ANSWER for r in records.values()),
        mean_chosen_tokens=sum(tokens) / len(tokens) if tokens else 0.0)
