"""Analysis of logged runs: training dynamics (Figures 5, 6) and the crop-substitution analysis, as importable
functions (``dynamics``, ``substitution``, ``wandb_log``) behind thin notebooks.

The notebooks work from the repository root (:data:`REPOSITORY`), wherever Jupyter starts their kernel (it starts it
in ``analysis/``): their relative paths (``experiments_out/...``, ``figures``) are relative to the repository.
"""

from pathlib import Path

REPOSITORY: Path = Path(__file__).resolve().parents[1]
"""The checkout this package lives in (with ``pip install -e .``, the folder holding ``pyproject.toml``)."""
