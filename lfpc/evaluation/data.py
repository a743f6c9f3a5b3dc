"""The evaluation benchmarks named by the ``benchmark`` config group, loaded as :class:`Sample` records."""

from __future__ import annotations

from omegaconf import DictConfig

from lfpc.config import load_samples
from lfpc.data.benchmarks import load_hrbench, load_vstar, shuffle_sample
from lfpc.data.records import Sample

KINDS = ("synthetic", "jsonl", "hrbench", "vstar")


def shuffles(bench: DictConfig, shuffle_options: bool | None) -> bool:
    """Whether options are shuffled: ``shuffle_options``, or when None the benchmark's ``shuffle_options`` (HR-Bench:
    false, its rows already rotate each question's options; default true)."""
    return bool(bench.get("shuffle_options", True)) if shuffle_options is None else shuffle_options


def question_of(sample: Sample) -> str:
    """The question a sample belongs to: HR-Bench lists each question once per option rotation (its cycles)."""
    return str(sample.meta.get("question", sample.id))


def first_questions(samples: list[Sample], limit: int) -> list[Sample]:
    """The samples of the first ``limit`` questions (all the rows of each)."""
    if limit < 1:
        raise ValueError(f"eval.limit must be a positive number of questions or null, got {limit}")
    kept = set(list(dict.fromkeys(question_of(s) for s in samples))[:limit])
    return [s for s in samples if question_of(s) in kept]


def load_benchmark(bench: DictConfig, seed: int = 0, shuffle_options: bool | None = None,
                   limit: int | None = None) -> list[Sample]:
    """Samples of ``bench`` (kind synthetic | jsonl | hrbench | vstar), those of the first ``limit`` questions when
    given, with the options of each question shuffled (seeded by ``seed`` and the question id) when
    :func:`shuffles`."""
    if bench.kind in ("synthetic", "jsonl"):
        samples = load_samples(bench)
    elif bench.kind == "hrbench":
        samples = load_hrbench(bench.path, bench.image_cache, source=bench.get("source"), boxes_path=bench.get("boxes"))
    elif bench.kind == "vstar":
        samples = load_vstar(bench.root, shuffle_options=False)  # shuffled below, like every benchmark
    else:
        raise ValueError(f"unknown benchmark.kind {bench.kind!r}; expected one of {list(KINDS)}")
    if limit is not None:
        samples = first_questions(samples, limit)
    return [shuffle_sample(s, seed) for s in samples] if shuffles(bench, shuffle_options) else samples


def subtask_of(sample: Sample) -> str:
    """The sub-task a question is reported under: ``meta["subtask"]`` (FSP/FCP for HR-Bench, Attr/Spatial for V*),
    else its category (``single``/``cross`` for the synthetic set)."""
    return str(sample.meta.get("subtask") or sample.category)
