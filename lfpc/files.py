"""Files that survive interruption and concurrency: the one implementation every writer of a result uses.

* :func:`atomic_output` / :func:`atomic_write` / :func:`write_json` / :func:`atomic_folder`: a result appears whole or
  not at all (a temporary file or folder beside it, renamed over it), so a reader never sees half of it and an
  interruption never leaves a torn one.
* :func:`single_writer`: one process at a time writes an output folder; a second is refused at once
  (:func:`hydra_run_folder_lock` takes it before Hydra writes into the folder).
* :func:`entry_lock`: one process at a time writes one file or folder; for a cache entry the second waits, then
  finds it built.
* :func:`check_distinct`: an input is never also an output (writing one would destroy the other).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Iterable, Iterator


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is renamed to ``path`` (readable like a
    file ``open`` creates), on any error it is removed and ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; the result is readable like any other file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to fill; on success it replaces ``path`` (whose old content is then
    removed), on any error it is removed and ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is readable like any other folder
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: str | Path, value: object, indent: int | None = 1) -> None:
    """Write ``value`` as a JSON file atomically."""
    atomic_write(path, json.dumps(value, indent=indent) + "\n")


@contextmanager
def _locked(lock_path: Path, wait: bool, busy: str) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            if not wait:
                raise RuntimeError(busy.format(holder=holder)) from None
            print(f"waiting for {holder}, which holds {lock_path}", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_HELD: set[Path] = set()  # output folders this process holds (a nested single_writer of one of them is a no-op)


@contextmanager
def single_writer(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the output folder ``folder`` (file ``.lock``) for the block; a second process is
    refused at once (the lock is released when the process ends, even when it is killed). Re-entrant within one
    process."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    key = Path(folder).resolve()
    if key in _HELD:
        yield
        return
    with _locked(key / ".lock", wait=False,
                 busy=f"{folder} is in use by another process ({{holder}}); wait for it to finish or write into "
                      "another folder"):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def launched_rank_zero() -> bool:
    """Whether this process is the first of its job (the one a user or a scheduler started; the ranks Lightning or
    torchrun launch beside it carry their rank in the environment)."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def hydra_run_folder_lock(argv: list[str]) -> AbstractContextManager:
    """:func:`single_writer` of the ``hydra.run.dir=...`` named on a script's command line, to take before Hydra writes
    ``.hydra/`` into it (a refused second run must not replace the running one's config); a no-op for a multirun,
    a command line without that override, and the ranks launched beside the first process."""
    if "-m" in argv or "--multirun" in argv or not launched_rank_zero():
        return nullcontext()
    folders = [arg.split("=", 1)[1].strip("'\"") for arg in argv if arg.startswith("hydra.run.dir=")]
    if not folders or "${" in folders[-1]:
        return nullcontext()
    return single_writer(folders[-1])


@contextmanager
def entry_lock(entry: str | Path, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``entry`` (a file or folder, which may not exist yet; the lock file ``.<name>.lock``
    lies beside it, so the entry itself may be replaced). A second process waits its turn when ``wait`` (a cache:
    it then finds the entry built), else it is refused at once (an output two writers would mix)."""
    entry = Path(entry)
    with _locked(entry.parent / f".{entry.name}.lock", wait=wait,
                 busy=f"{entry} is being written by another process ({{holder}}); wait for it to finish or write "
                      "another output"):
        yield


def check_distinct(inputs: Iterable[str | Path], outputs: Iterable[str | Path]) -> None:
    """Refuse (``ValueError``) an output that is one of the inputs (the same file under any name or link)."""
    def same(a: Path, b: Path) -> bool:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()

    inputs = [Path(p) for p in inputs]
    for output in map(Path, outputs):
        for source in inputs:
            if same(source, output):
                raise ValueError(f"the output {output} is the input {source}: writing it would destroy the input; "
                                 "choose another output path")
