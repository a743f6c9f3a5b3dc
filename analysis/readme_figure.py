"""The README's picture: three panels of the miniature's Figure 5 (baseline vs Stage I), redrawn small from the values
the miniature report saved beside it (``results/miniature/figure5.csv``), so no run folder is needed.

    python -m analysis.readme_figure            # writes docs/figures/miniature.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis.dynamics import plot_dynamics

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "results" / "miniature" / "figure5.csv"
OUT = ROOT / "docs" / "figures" / "miniature.png"
PANELS = {"reward/acc": "Accuracy reward", "rollout/tool_calls": "Tool calls per trajectory",
          "rollout/bbox_ratio": "Crop area / image area"}
SMOOTH = 10  # GRPO steps in the moving average drawn over each raw curve


def runs_from_long_table(path: Path) -> dict[str, pd.DataFrame]:
    """``run, grpo_step, metric, value`` rows (:func:`analysis.dynamics.long_table`) back to one frame per run."""
    rows = pd.read_csv(path)
    return {name: group.pivot(index="grpo_step", columns="metric", values="value")
            for name, group in rows.groupby("run", sort=False)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.readme_figure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="the plotted values of Figure 5 (CSV)")
    parser.add_argument("--out", type=Path, default=OUT, help="the PNG to write")
    args = parser.parse_args(argv)
    figure = plot_dynamics(runs_from_long_table(args.source), PANELS, columns=3, smooth=SMOOTH,
                           title="The miniature in training: Stage I vs the baseline (paper Fig. 5; 100 GRPO steps on 2 CPU cores)")
    figure.set_size_inches(10.5, 3.1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=96)
    print(args.out)


if __name__ == "__main__":
    main()
