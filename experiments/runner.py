"""Plan a definition's commands and run them one after another (``train.py`` / ``eval.py`` Hydra multiruns).

The plan is computed up front: every train step is one ``train.py -m`` call into ``<out>/train/<step>`` (a sweep's
jobs into sub-folders named by their swept overrides), preceded, for each of its multi-process jobs that trains on
the offline resolution selection (``resolution=answer_divergence``), by that selection as its own single-process,
one-device ``python -m lfpc.resolution.select`` call (such a job cannot compute it; a single-process job computes it
itself; paper Table 11 times it either way); every eval step one ``eval.py -m`` call per evaluated model (its
benchmarks swept) into ``<out>/eval/<label>``. Locally Hydra's basic launcher runs a sweep's jobs in turn; with
``launcher="slurm"`` they go to SLURM through submitit and the call returns when all are done. Commands already
recorded as finished in ``<out>/manifest.json`` with the same arguments are skipped, so a rerun resumes.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TextIO

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from experiments.definitions import LAUNCHERS, SIZES, Definition, EvalStep, Size, TrainStep
from experiments.layout import MANIFEST, eval_dir, job_label, load_manifest, train_dir
from lfpc.files import write_json

ROOT = Path(__file__).resolve().parents[1]
REF = re.compile(r"\{run:([^}]*)\}")
SAFE_VALUE = re.compile(r"[\w./:+@%-]+")  # needs no quotes in a Hydra override value
UNQUOTABLE = re.compile(r"['\\]")


@dataclass(frozen=True)
class Job:
    """One Hydra job of a command: its label, its output folder and its task overrides (sweeps expanded)."""

    label: str
    dir: Path
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    """One subprocess: ``kind`` train or eval, ``name`` the train step or eval label, the jobs it runs."""

    kind: str
    name: str
    argv: tuple[str, ...]
    jobs: tuple[Job, ...]

    @property
    def config_name(self) -> str:
        """The Hydra primary config of the command's script."""
        return "eval" if self.kind == "eval" else "config"


def expand_sweeps(overrides: Sequence[str]) -> list[tuple[str | None, tuple[str, ...]]]:
    """The jobs of a Hydra multirun over ``overrides``, in Hydra's order: (job folder, the job's overrides).

    The folder name is Hydra's ``override_dirname`` of the swept overrides (sorted ``key=value`` joined by ``,``);
    None when nothing is swept (a single job).
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    swept = [i for i, o in enumerate(parsed) if o.is_sweep_override()]
    jobs = []
    for combination in itertools.product(*choices):
        name = ",".join(sorted(combination[i] for i in swept)) if swept else None
        jobs.append((name, tuple(combination)))
    return jobs


def _fixed_keys(overrides: Sequence[str]) -> list[str]:
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return sorted({o.key_or_group for o in parsed if not o.is_sweep_override()})


def override(key: str, value: str | Path) -> str:
    """``key=value`` in Hydra's override grammar: the value single-quoted unless it is a plain word or path."""
    value = str(value)
    if SAFE_VALUE.fullmatch(value):
        return f"{key}={value}"
    if UNQUOTABLE.search(value):
        raise ValueError(f"{key}={value!r}: a value passed to Hydra cannot hold a quote or a backslash")
    return f"{key}='{value}'"


def _resolve_refs(line: str, single_jobs: dict[str, Path], where: str) -> str:
    """``line`` with each ``{run:<step>}`` replaced by that step's job folder (the value quoted if needed)."""
    if not REF.search(line):
        return line

    def folder(match: re.Match) -> str:
        step = match.group(1)
        if step not in single_jobs:
            raise ValueError(f"{where}: {{run:{step}}} must name an earlier train step with a single job "
                             f"(earlier single-job steps: {sorted(single_jobs)})")
        return str(single_jobs[step])
    key, sep, value = line.partition("=")
    if not sep or REF.search(key):
        raise ValueError(f"{where}: {{run:...}} may only appear in the value of a key=value override, got {line!r}")
    return override(key, REF.sub(folder, value))


def _train_command(step: TrainStep, size: Size, launcher: str, out: Path, python: str,
                   single_jobs: dict[str, Path], where: str) -> Command:
    overrides = (*size.train, *(_resolve_refs(o, single_jobs, where) for o in step.overrides_for(size.name)))
    folder = train_dir(out, step.name)
    expanded = expand_sweeps(overrides)
    swept = expanded[0][0] is not None
    jobs = tuple(Job(job_label(step.name, name), folder / name if swept else folder, job_overrides)
                 for name, job_overrides in expanded)
    subdir = "${hydra.job.override_dirname}" if swept else "."
    hydra = [override("hydra.sweep.dir", folder), f"hydra.sweep.subdir={subdir}"]
    if swept:  # name each job folder by its swept overrides only
        hydra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(_fixed_keys(overrides))}]")
    argv = (python, "train.py", "-m", *overrides, *LAUNCHERS[launcher]["train"], *hydra)
    return Command("train", step.name, argv, jobs)


def needs_selection(overrides: Sequence[str]) -> bool:
    """Whether a training job of ``overrides`` needs its offline resolution selection run beforehand: it trains on
    it (``resolution.strategy`` is ``answer_divergence``) in several processes, which cannot compute it."""
    from lfpc.config import world_size
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "output_dir=.", "cache_dir=."])
    return cfg.resolution.strategy == "answer_divergence" and world_size(cfg) > 1


def _selection_commands(train: Command, launcher: str, out: Path, python: str) -> list[Command]:
    """The offline resolution selection of each job of ``train`` that needs one (:func:`needs_selection`): one
    process on one device (the evaluation launcher), its Hydra folder ``<out>/selection/<job label>``."""
    return [Command("select", job.label,
                    (python, "-m", "lfpc.resolution.select", "-m", *job.overrides, *LAUNCHERS[launcher]["eval"],
                     override("hydra.sweep.dir", out / "selection" / job.label)), (job,))
            for job in train.jobs if needs_selection(job.overrides)]


def _eval_commands(step: EvalStep, size: Size, launcher: str, out: Path, python: str,
                   train_jobs: dict[str, tuple[Job, ...]]) -> list[Command]:
    benchmarks = size.benchmark_set(step.benchmarks)
    if not benchmarks:  # e.g. no benchmark without GT boxes at this size
        return []
    models = ([(step.label, None)] if step.of is None
              else [(job.label, job.dir / "hf_model") for job in train_jobs[step.of]])
    commands = []
    for label, model in models:
        overrides = (*((override("init_from", model),) if model is not None else ()), override("label", label),
                     *step.overrides_for(size.name))
        folder = eval_dir(out, label)
        jobs = tuple(Job(label, folder / b, (*size.eval, f"benchmark={b}", *overrides)) for b in benchmarks)
        argv = (python, "eval.py", "-m", *size.eval, f"benchmark={','.join(benchmarks)}", *overrides,
                *LAUNCHERS[launcher]["eval"], override("hydra.sweep.dir", folder))
        commands.append(Command("eval", label, argv, jobs))
    return commands


def plan(definition: Definition, size: str, out: str | Path, launcher: str | None = None,
         python: str = sys.executable) -> list[Command]:
    """Every command of ``definition`` at ``size``, in order: the train steps, then the eval steps."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {list(SIZES)}")
    spec = SIZES[size]
    launcher = launcher or spec.launcher
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; choose from {list(LAUNCHERS)}")
    out = Path(out).resolve()
    trains: list[Command] = []
    single_jobs: dict[str, Path] = {}
    train_jobs: dict[str, tuple[Job, ...]] = {}
    for step in definition.train:
        command = _train_command(step, spec, launcher, out, python, single_jobs,
                                 where=f"{definition.name}: train step {step.name!r}")
        trains.append(command)
        train_jobs[step.name] = command.jobs
        if len(command.jobs) == 1:
            single_jobs[step.name] = command.jobs[0].dir
    commands = [c for train in trains for c in (*_selection_commands(train, launcher, out, python), train)]
    for step in definition.eval:
        commands += _eval_commands(step, spec, launcher, out, python, train_jobs)
    return commands


# ----------------------------------------------------------------------------------------------------------------
# Running

def finished(manifest: dict, command: Command) -> bool:
    """Whether the manifest records ``command`` as finished (status "ok"; an entry without one was interrupted) and
    its outputs are still in place (:func:`check_outputs`: a run folder deleted since is run again)."""
    if not any(isinstance(entry, dict) and entry.get("argv") == list(command.argv) and entry.get("status") == "ok"
               for entry in manifest["commands"]):
        return False
    try:
        check_outputs(command)
    except RuntimeError:
        return False
    return True


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def code_version(root: Path = ROOT) -> str:
    """The commit of the code a command runs (short hash), with "+ uncommitted changes" when tracked files differ
    from it; "unknown (not a git checkout)" where git cannot tell."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} + uncommitted changes" if changes else commit


def execute(command: Command, log: Path) -> float:
    """Run ``command`` from the repository root with its output in ``log``; its wall time in seconds. A failure
    raises RuntimeError with the end of the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        returncode = subprocess.run(command.argv, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                    env={**os.environ, "HYDRA_FULL_ERROR": "1"}).returncode
    if returncode != 0:
        raise RuntimeError(f"{command.kind} {command.name!r} failed (exit {returncode}); log {log}, last lines:\n"
                           f"{_tail(log)}")
    return time.perf_counter() - start


def check_outputs(command: Command) -> None:
    """Every job of a train command left its ``summary.json`` where the plan expects it, and none says its run was
    stopped by a collapse alarm (RuntimeError if not: no later step may start from such a model)."""
    if command.kind != "train":
        return
    missing = [str(job.dir) for job in command.jobs if not (job.dir / "summary.json").is_file()]
    if missing:
        raise RuntimeError(f"train {command.name!r} finished but left no summary.json in {missing}")
    for job in command.jobs:
        try:
            summary = json.loads((job.dir / "summary.json").read_text(encoding="utf-8"))
            if not isinstance(summary, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as err:
            raise RuntimeError(f"train {command.name!r}: {job.dir / 'summary.json'} is not a JSON summary ({err})") \
                from None
        stopped = summary.get("stopped_on_alarm")
        if stopped:
            raise RuntimeError(f"train {command.name!r}: {job.dir} was stopped on a {stopped}; its model is not "
                               "used (see its summary.json)")


def run(definition: Definition, size: str, out: str | Path, launcher: str | None = None, dry_run: bool = False,
        force: bool = False, stream: TextIO = sys.stdout) -> list[Command]:
    """Run (or with ``dry_run`` only print) every command of ``definition``, sequentially, recording each in
    ``<out>/manifest.json``; commands recorded as finished are skipped unless ``force``."""
    out = Path(out).resolve()
    commands = plan(definition, size, out, launcher)
    manifest = load_manifest(out)
    manifest.update(definition=definition.name, size=size, launcher=launcher or SIZES[size].launcher)
    for number, command in enumerate(commands, start=1):
        head = f"[{number}/{len(commands)}] {command.kind} {command.name}"
        if dry_run:
            print(f"{head}\n  {shlex.join(command.argv)}", file=stream)
            continue
        if not force and finished(manifest, command):
            print(f"{head}: done before, skipped", file=stream)
            continue
        log = out / "logs" / f"{number:02d}-{command.kind}-{command.name}.log"
        print(f"{head}: running (log {log})", file=stream, flush=True)
        entry = {"kind": command.kind, "name": command.name, "argv": list(command.argv), "log": str(log),
                 "code": code_version(), "status": "interrupted"}  # until it returns (Ctrl-C: rerun it)
        try:
            wall_s = execute(command, log)
            check_outputs(command)
            entry.update(status="ok", wall_s=wall_s)
        except RuntimeError:
            entry.update(status="failed")
            raise
        finally:
            manifest["commands"] = [e for e in manifest["commands"]
                                    if not isinstance(e, dict) or e.get("argv") != entry["argv"]] + [entry]
            write_json(out / MANIFEST, manifest)  # whole or not at all: a Ctrl-C never tears it
    return commands
