"""The evaluation benchmarks named by the ``benchmark`` config group, loaded as :class:`Sample` records."""

from __future__ import annotations

from omegaconf import DictConfig

from lfpc.config import load_samples
from lfpc.data.benchmarks import load_hrbench, load_vstar, shuffle_sample
from lfpc.data.records import Sample

KINDS = ("synthetic", "jsonl", "hrbench", "vstar")


def load_benchmark(bench: DictConfig, seed: int = 0, shuffle_options: bool = True,
                   limit: int | None = None) -> list[Sample]:
    """Samples of ``bench`` (kind synthetic | jsonl | hrbench | vstar), the first ``limit`` when given, with the
    options of each question shuffled (seeded by ``seed`` and the question id) when ``shuffle_options``."""
    if bench.kind in ("synthetic", "jsonl"):
        samples = load_samples(bench)
    elif bench.kind == "hrbench":
        samples = load_hrbench(bench.path, bench.image_cache, source=bench.get("source"))
    elif bench.kind == "vstar":
        samples = load_vstar(bench.root, shuffle_options=False)  # shuffled below, like every benchmark
    else:
        raise ValueError(f"unknown benchmark.kind {bench.kind!r}; expected one of {list(KINDS)}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"eval.limit must be a positive number of questions or null, got {limit}")
        samples = samples[:limit]
    return [shuffle_sample(s, seed) for s in samples] if shuffle_options else samples


def subtask_of(sample: Sample) -> str:
    """The sub-task a question is reported under: ``meta["subtask"]`` (FSP/FCP for HR-Bench, Attr/Spatial for V*),
    else its category (``single``/``cross`` for the synthetic set)."""
    return str(sample.meta.get("subtask") or sample.category)
