"""Every command in README.md and docs/*.md works as written, and the docs stay true to the code.

Commands are the lines of ```` ```bash ```` fences (a trailing backslash continues a line; ``#`` starts a comment).
A fence's info string marks what its commands need: ``gpu``, ``data`` (files that are not in the repository),
``slow`` (minutes or more) or ``writes`` (it writes into the checkout). Commands in an unmarked fence run as
written. Commands in a marked fence are checked without running:

* ``train.py`` / ``eval.py`` / ``lfpc.resolution.select`` (also under ``torchrun``): their overrides compose with
  Hydra's compose API (every value of a ``-m`` sweep);
* ``python -m experiments run``: the run is planned (``--dry-run``) and each planned command composes;
* any other ``python -m <module>``: it answers ``--help``, and its help names every ``--flag`` used;
* ``make <target>``: make knows the target (``make -n``); ``bash <script>``: the script parses (``bash -n``).

Hydra commands in an unmarked fence are composed too. A command that fits none of these fails the test.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.config_options import BEGIN, END, PAGE, generate

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKS = {"gpu", "data", "slow", "writes"}
FENCE = re.compile(r"^```bash(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
HYDRA_SCRIPTS = {"train.py": "config", "eval.py": "eval"}
HYDRA_MODULES = {"lfpc.resolution.select": "config", "lfpc.plan": "config"}  # train.py's overrides
TIMEOUT = 600


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str
    marks: frozenset[str]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def commands_of(path: Path) -> list[Command]:
    """The commands of a page's bash fences, continuation lines joined."""
    found = []
    text = path.read_text(encoding="utf-8")
    for fence in FENCE.finditer(text):
        marks = frozenset(fence.group("info").split())
        first = text[: fence.start("body")].count("\n") + 1
        pending, start = "", 0
        for offset, line in enumerate(fence.group("body").splitlines()):
            if not pending:
                start = first + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = (pending + line).strip()
            pending = ""
            if command and not command.startswith("#"):
                found.append(Command(str(path.relative_to(ROOT)), start, command, marks))
    return found


COMMANDS = [command for page in PAGES for command in commands_of(page)]


def _argv(command: Command) -> tuple[list[str], dict[str, str]]:
    """The command's words (comments removed) and its leading ``NAME=value`` environment assignments."""
    words = shlex.split(command.text, comments=True)
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return words, env


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    python_env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(argv, cwd=ROOT, env=python_env, capture_output=True, text=True, timeout=timeout)


def _hydra_target(words: list[str]) -> tuple[str, list[str]] | None:
    """(config name, the words after the script) of a train.py / eval.py / selection / planner command, else None."""
    for i, word in enumerate(words):
        if word in HYDRA_SCRIPTS:
            return HYDRA_SCRIPTS[word], words[i + 1:]
        if word == "-m" and i + 1 < len(words) and words[i + 1] in HYDRA_MODULES:
            return HYDRA_MODULES[words[i + 1]], words[i + 2:]
    return None


def _launcher_plugin() -> bool:
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        return False
    return True


def compose_overrides(config: str, words: list[str]) -> int:
    """Compose ``config`` with the overrides among ``words`` (every combination of a sweep's values); returns how
    many configs were composed. Without the SLURM plugin, ``hydra/launcher`` choices are checked to exist only."""
    overrides, skip = [], False
    for word in words:  # Hydra's own flags: -m / --multirun, and --cfg / --package / --info with their value
        if skip or word in ("-m", "--multirun"):
            skip = False
        elif word in ("--cfg", "-c", "--package", "-p", "--info", "-i"):
            skip = True
        else:
            overrides.append(word)
    if not _launcher_plugin():
        for launcher in [o for o in overrides if o.startswith("hydra/launcher=")]:
            assert (CONF / "hydra" / "launcher" / f"{launcher.split('=', 1)[1]}.yaml").is_file(), launcher
        overrides = [o for o in overrides if not o.startswith(("hydra/launcher=", "hydra.launcher."))]
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.input_line.split("=", 1)[1]]
               for o in parsed]
    keys = [o.input_line.split("=", 1)[0] for o in parsed]
    GlobalHydra.instance().clear()
    composed = 0
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for values in itertools.product(*choices):
            cfg = compose(config, overrides=[f"{k}={v}" for k, v in zip(keys, values)], return_hydra_config=True)
            assert "seed" in cfg
            composed += 1
    return composed


def check_without_running(command: Command, words: list[str]) -> str:
    """Check a command that needs a GPU, data or time; returns what was checked."""
    if words[0] == "make":
        proc = _run(["make", "-n", *words[1:]])
        assert proc.returncode == 0, proc.stderr
        return "make -n"
    if words[0] == "bash":
        proc = _run(["bash", "-n", words[1]])
        assert proc.returncode == 0, proc.stderr
        return "bash -n"
    if words[0] == "python" and words[1:3] == ["-m", "experiments"] and words[3] == "run":
        out = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"lfpc-docs-{os.getpid()}"
        argv = [sys.executable, *[w for w in words[1:] if w != "--dry-run"], "--dry-run", "--out", str(out)]
        proc = _run(argv)
        assert proc.returncode == 0, proc.stderr
        planned = [shlex.split(line) for line in proc.stdout.splitlines() if line.startswith("  ")]
        assert planned, proc.stdout
        for planned_words in planned:
            target = _hydra_target(planned_words)
            assert target, planned_words
            compose_overrides(*target)
        return f"planned {len(planned)} commands, each composes"
    if words[0] == "python" and words[1] == "-m":
        module = words[2]
        sub = [words[3]] if module == "experiments" else []
        proc = _run([sys.executable, "-m", module, *sub, "--help"], timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        flags = [w.split("=", 1)[0] for w in words[3:] if w.startswith("--")]
        missing = [flag for flag in flags if flag not in proc.stdout]
        assert not missing, f"{module} --help does not name {missing}"
        return "--help names every flag"
    raise AssertionError(f"{command.id}: `{command.text}` neither runs nor composes: mark it, or teach tests/test_docs.py")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_documented_command_runs_or_composes(command: Command, tmp_path, monkeypatch):
    assert command.marks <= MARKS, f"unknown fence marks {sorted(command.marks - MARKS)} (known: {sorted(MARKS)})"
    monkeypatch.setenv("PYTEST_TMP", str(tmp_path))
    words, env = _argv(command)
    if words[0] == "export":  # sets variables for the commands after it; nothing to run
        assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S+", w) for w in words[1:]), command.text
        return
    target = _hydra_target(words)
    if target:
        assert compose_overrides(*target) >= 1
    if command.marks:
        if not target:
            check_without_running(command, words)
        return
    if words[0] == "make":  # make train / make test install and run for minutes: never cheap
        pytest.fail(f"{command.id}: mark `{command.text}` slow")
    assert words[0] == "python", f"{command.id}: only python commands run as written: `{command.text}`"
    proc = _run([sys.executable, *words[1:]], env)
    assert proc.returncode == 0, f"{command.text}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_every_page_opens_with_its_command():
    for page in PAGES[1:]:
        text = page.read_text(encoding="utf-8")
        first_section = text.find("\n## ")
        first_fence = text.find("```bash")
        assert 0 <= first_fence < (first_section if first_section >= 0 else len(text)), page.name


def test_links_between_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.exists(), f"{page.name}: broken link {target}"


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "docs/figures/miniature.png" in readme and (ROOT / "docs" / "figures" / "miniature.png").is_file()
    assert "sample → prompt → rollout → reward → advantage → update" in readme


def test_configuration_page_matches_conf():
    page = PAGE.read_text(encoding="utf-8")
    generated = page[page.index(BEGIN): page.index(END) + len(END)]
    assert generated == generate(), "docs/configuration.md is stale: run python -m tests.config_options --write"


def test_configuration_generator_reads_settings_and_comments(tmp_path):
    """Hand-written YAML: nesting, comments continued under the first, ``#`` inside interpolations."""
    from tests.config_options import header, overrides, settings

    path = tmp_path / "x.yaml"
    path.write_text("# @package _global_\n# What it is.\n# More.\ndefaults:\n  - override /reward: iou\n"
                    "a: 1      # first\n          # continued\nb:        # a mapping\n  c: ${oc.env:X,#y}\n")
    assert header(path) == ("What it is.", "_global_")
    assert overrides(path) == ["reward=iou"]
    assert settings(path) == [("a", "1", "first continued"), ("b", "", "a mapping"), ("b.c", "${oc.env:X,#y}", "")]
