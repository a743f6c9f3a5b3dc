"""Command line: list definitions, run one (sequentially, or on SLURM), collect its results into tables/figures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from experiments import definitions, runner
from experiments.definitions import LAUNCHERS, SIZES


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the definitions (paper tables and figures)")
    run = commands.add_parser("run", help="run a definition's train and eval commands, one after another")
    run.add_argument("name", help="table1 ... table12, figure5, figure6, miniature")
    run.add_argument("--size", choices=sorted(SIZES), default=None,
                     help="smoke, mini or paper (default: the definition's size: miniature mini, the others smoke)")
    run.add_argument("--launcher", choices=sorted(LAUNCHERS), default=None,
                     help="local (Hydra's basic launcher) or slurm (submitit); default: the size's (slurm for paper)")
    run.add_argument("--out", default=None, help="output folder (default: experiments_out/<name>/<size>)")
    run.add_argument("--dry-run", action="store_true", help="print the commands only")
    run.add_argument("--force", action="store_true", help="rerun commands the manifest records as finished")
    collect = commands.add_parser("collect", help="turn finished runs into the table (markdown + CSV) or figure")
    collect.add_argument("name")
    collect.add_argument("runs_dir", help="the --out folder of `run`")
    collect.add_argument("--out", default=None, help="where to write (default: <runs_dir>/results)")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in definitions.names():
            print(f"{name:10s} {definitions.load(name).title}")
    elif args.command == "run":
        definition = definitions.load(args.name)
        size = args.size or definition.size
        out = Path(args.out or Path("experiments_out") / args.name / size)
        runner.run(definition, size, out, args.launcher, args.dry_run, args.force)
        if definition.report and not args.dry_run:  # e.g. the miniature: one command, runs to RESULTS.md
            from experiments.collect import collect
            print(collect(definition, out))
    else:
        from experiments.collect import collect  # pandas / matplotlib: only needed to collect
        print(collect(definitions.load(args.name), Path(args.runs_dir), args.out and Path(args.out)))


if __name__ == "__main__":
    main()
