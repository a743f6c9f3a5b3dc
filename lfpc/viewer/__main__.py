"""``python -m lfpc.viewer RUN_OR_EVAL_DIR [--out FILE]``: write the static trajectory report (default
``<dir>/trajectories.html``) of a training run or an evaluation results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from lfpc.files import atomic_write, check_distinct
from lfpc.viewer.load import load_report
from lfpc.viewer.page import render


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of ``folder`` into ``out`` (default ``<folder>/trajectories.html``); returns its path."""
    path = Path(out) if out else Path(folder) / "trajectories.html"
    report = load_report(folder)
    check_distinct(report.sources, [path])
    atomic_write(path, render(report))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lfpc.viewer", description=__doc__)
    parser.add_argument("folder", help="a training run folder (with rollouts/) or an evaluation results folder")
    parser.add_argument("--out", help="the HTML file to write (default: <folder>/trajectories.html)")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {write_report(args.folder, args.out)}")
    except (ValueError, FileNotFoundError) as err:  # the message names the file, line and field
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
