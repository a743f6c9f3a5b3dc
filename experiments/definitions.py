"""The run definitions of the paper tables and figures (``experiments/tables/<name>.yaml``) and the run sizes.

A definition is declarative: ``train`` steps (each one ``train.py -m`` call; a comma-separated override value
sweeps, one job per value, e.g. ``reward=iou,iou_nothresh,none``), ``eval`` steps (``eval.py`` on every job of a
train step, or on a base model under a given label) and what the collector needs (``collector`` and its options,
the paper's rows). ``{run:<step>}`` in an override stands for the folder of that (single-job) train step.
Per-size extra overrides go under the step's ``smoke:`` / ``paper:`` / ``mini:`` keys. ``size`` is the size ``run``
uses when none is given (default smoke); a definition with a ``report`` (a file at the repository root, e.g. the
miniature's ``RESULTS.md``) is collected at the end of ``run`` and its report written there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from omegaconf import OmegaConf

from lfpc.evaluation.paper_numbers import PaperRow

TABLES_DIR = Path(__file__).resolve().parent / "tables"
COLLECTORS = ("eval", "ablation", "cost", "hyperparameters", "figure", "miniature")
BENCHMARK_SETS = ("all", "boxed", "unboxed")  # boxed: benchmarks with GT boxes (the gt mode and IoU need them)
BENCHMARK_CONF = Path(__file__).resolve().parents[1] / "conf" / "benchmark"
STEP_NAME = re.compile(r"^[A-Za-z][\w.-]*$")


def has_gt_boxes(benchmark: str) -> bool:
    """Whether ``conf/benchmark/<benchmark>.yaml`` gives GT boxes: HR-Bench only with its box file
    (``benchmark.boxes``, else ``<file stem>.boxes.json`` beside the file; the paper's were not released), every
    other benchmark always."""
    from lfpc.data.benchmarks import hrbench_box_file
    conf = OmegaConf.load(BENCHMARK_CONF / f"{benchmark}.yaml")
    return conf.kind != "hrbench" or hrbench_box_file(conf.path, conf.get("boxes")).is_file()


@dataclass(frozen=True)
class Size:
    """How big every run of a definition is: overrides added to each ``train.py`` / ``eval.py`` call, its
    benchmarks, and the launcher used unless another is asked for."""

    name: str
    train: tuple[str, ...]
    eval: tuple[str, ...]
    benchmarks: tuple[str, ...]
    launcher: str

    def benchmark_set(self, which: str) -> tuple[str, ...]:
        """The benchmarks of a :data:`BENCHMARK_SETS` entry: all, those with GT boxes now (:func:`has_gt_boxes`),
        or those without."""
        if which == "all":
            return self.benchmarks
        return tuple(b for b in self.benchmarks if has_gt_boxes(b) == (which == "boxed"))


SIZES: dict[str, Size] = {
    "smoke": Size("smoke", ("size=smoke",), ("+size/eval=smoke",), ("synthetic",), launcher="local"),
    "paper": Size("paper", ("size=paper",), ("+size/eval=paper",), ("vstar", "hrbench_4k", "hrbench_8k"),
                  launcher="slurm"),
    # the paper in miniature: the mini Qwen2.5-VL on the pattern task, ~1 h on 2 CPU cores (conf/size/mini.yaml)
    "mini": Size("mini", ("size=mini",), ("+size/eval=mini",), ("patterns",), launcher="local"),
}
DEFAULT_SIZE = "smoke"

# Hydra launcher overrides per launcher: local = Hydra's basic launcher (jobs run one after another); slurm = the
# submitit configs of conf/hydra/launcher/ (pip install hydra-submitit-launcher), 8 GPUs to train, 1 to evaluate.
LAUNCHERS: dict[str, dict[str, tuple[str, ...]]] = {
    "local": {"train": (), "eval": ()},
    "slurm": {"train": ("hydra/launcher=slurm_8gpu",), "eval": ("hydra/launcher=slurm_1gpu",)},
}


class SizedOverrides:
    """Mixin for steps with ``overrides`` shared by every size and ``sized``: the extra overrides of each size."""

    overrides: tuple[str, ...]
    sized: Mapping[str, tuple[str, ...]]

    def overrides_for(self, size: str) -> tuple[str, ...]:
        return (*self.overrides, *self.sized.get(size, ()))


@dataclass(frozen=True)
class TrainStep(SizedOverrides):
    """One ``train.py -m`` call; ``sized`` holds the extra overrides of each size."""

    name: str
    overrides: tuple[str, ...] = ()
    sized: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalStep(SizedOverrides):
    """``eval.py`` on each job of train step ``of`` (labelled like the job), or on the base model as ``label``,
    over the benchmarks of ``benchmarks`` (a set of :data:`BENCHMARK_SETS`)."""

    of: str | None = None
    label: str | None = None
    benchmarks: str = "all"
    overrides: tuple[str, ...] = ()
    sized: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Definition:
    """The runs of one paper table or figure and how to collect them."""

    name: str
    title: str
    collector: str
    train: tuple[TrainStep, ...] = ()
    eval: tuple[EvalStep, ...] = ()
    train_metrics: tuple[str, ...] = ()        # ablation: training-log columns (final values)
    groups: Mapping[str, str] = field(default_factory=dict)  # figure: curve name -> run label
    paper: tuple[PaperRow, ...] = ()           # ablation / cost: the paper's rows
    paper_columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # hyperparameters: paper values
    size: str = DEFAULT_SIZE                   # the size `run` uses when none is given
    report: str | None = None                  # miniature: the report file (repository root) `run` ends by writing

    @property
    def number(self) -> int | None:
        """The paper's table or figure number (``table10`` -> 10)."""
        return number_of(self.name)


def number_of(name: str) -> int | None:
    """The number in a definition's name (``table10`` -> 10), None without one."""
    digits = re.sub(r"\D", "", name)
    return int(digits) if digits else None


def names(folder: Path = TABLES_DIR) -> list[str]:
    """Every definition in ``folder``: tables by number, then figures, then the others (e.g. miniature)."""
    def rank(stem: str) -> tuple[int, int, str]:
        kind = 0 if stem.startswith("table") else 1 if stem.startswith("figure") else 2
        return kind, number_of(stem) or 0, stem
    return sorted((p.stem for p in Path(folder).glob("*.yaml")), key=rank)


def _check_keys(where: str, data: Mapping, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown, missing = set(data) - allowed, set(required) - set(data)
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; missing keys {sorted(missing)} "
                         f"(allowed: {sorted(allowed)})")


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of override strings, got {value!r}")
    return tuple(value)


def _sized(where: str, data: Mapping) -> dict[str, tuple[str, ...]]:
    return {size: _strings(f"{where}.{size}", data[size]) for size in SIZES if size in data}


def _train_step(where: str, data: Mapping) -> TrainStep:
    _check_keys(where, data, {"name", "overrides", *SIZES}, {"name"})
    if not STEP_NAME.match(str(data["name"])):
        raise ValueError(f"{where}: step name {data['name']!r} must match {STEP_NAME.pattern}")
    return TrainStep(data["name"], _strings(f"{where}.overrides", data.get("overrides")), _sized(where, data))


def _eval_step(where: str, data: Mapping, train: tuple[TrainStep, ...]) -> EvalStep:
    _check_keys(where, data, {"of", "label", "benchmarks", "overrides", *SIZES})
    step = EvalStep(data.get("of"), data.get("label"), data.get("benchmarks", "all"),
                    _strings(f"{where}.overrides", data.get("overrides")), _sized(where, data))
    if (step.of is None) == (step.label is None):
        raise ValueError(f"{where}: give exactly one of 'of' (a train step) and 'label' (the base model's label)")
    if step.of is not None and step.of not in {s.name for s in train}:
        raise ValueError(f"{where}: 'of: {step.of}' names no train step ({[s.name for s in train]})")
    if step.label is not None and not STEP_NAME.match(step.label):
        raise ValueError(f"{where}: label {step.label!r} must match {STEP_NAME.pattern}")
    if step.benchmarks not in BENCHMARK_SETS:
        raise ValueError(f"{where}: benchmarks must be one of {list(BENCHMARK_SETS)}, got {step.benchmarks!r}")
    return step


def _paper_row(where: str, data: Mapping, number: int | None) -> PaperRow:
    _check_keys(where, data, {"label", "name", "budget", "values", "variant", "note"}, {"label", "name"})
    return PaperRow(number or 0, str(data["label"]), str(data["name"]), data.get("budget"),
                    dict(data.get("values") or {}), data.get("variant"), data.get("note"))


def load(name: str, folder: Path = TABLES_DIR) -> Definition:
    """The definition ``<folder>/<name>.yaml`` (default: ``experiments/tables``), checked: unknown keys, dangling
    step names, bad labels."""
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no experiment definition {name!r}; choose from {names(folder)}")
    data = yaml.safe_load(path.read_text()) or {}
    _check_keys(str(path), data, {"title", "collector", "train", "eval", "train_metrics", "groups", "paper",
                                  "paper_columns", "size", "report"}, {"title", "collector"})
    if data["collector"] not in COLLECTORS:
        raise ValueError(f"{path}: collector must be one of {list(COLLECTORS)}, got {data['collector']!r}")
    if data.get("size", DEFAULT_SIZE) not in SIZES:
        raise ValueError(f"{path}: size must be one of {list(SIZES)}, got {data['size']!r}")
    train = tuple(_train_step(f"{path}: train[{i}]", s) for i, s in enumerate(data.get("train") or []))
    if len({s.name for s in train}) != len(train):
        raise ValueError(f"{path}: train step names must be unique, got {[s.name for s in train]}")
    evals = tuple(_eval_step(f"{path}: eval[{i}]", s, train) for i, s in enumerate(data.get("eval") or []))
    paper = tuple(_paper_row(f"{path}: paper[{i}]", row, number_of(name))
                  for i, row in enumerate(data.get("paper") or []))
    return Definition(name=name, title=str(data["title"]), collector=data["collector"], train=train, eval=evals,
                      train_metrics=_strings(f"{path}: train_metrics", data.get("train_metrics")),
                      groups=dict(data.get("groups") or {}), paper=paper,
                      paper_columns=dict(data.get("paper_columns") or {}),
                      size=data.get("size", DEFAULT_SIZE), report=data.get("report"))
