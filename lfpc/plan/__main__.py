"""``python -m lfpc.plan <the overrides of train.py>``: print the plan of that launch per rank; exit 1 when it
does not fit (``--json FILE`` also writes it)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from lfpc import PROJECT_ROOT
from lfpc.plan.planner import make_plan


def compose_run_config(overrides: list[str]):
    """The config train.py would compose from ``overrides``, with Hydra's runtime values (``${hydra:...}``: the
    working directory, the run folder) set as under ``@hydra.main``."""
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = cfg.hydra.run.dir
    HydraConfig.instance().set_config(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lfpc.plan", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the plan here")
    args, overrides = parser.parse_known_args(argv)
    plan = make_plan(compose_run_config(overrides))
    print(plan.text())
    if args.json:
        args.json.write_text(json.dumps({**asdict(plan), "peaks": plan.peaks(), "problems": plan.problems(),
                                         "step_seconds": plan.step.total}, indent=1, default=str))
    return 0 if plan.fits else 1


if __name__ == "__main__":
    sys.exit(main())
