"""LFPC: look closer, crop precisely (RL with a crop tool for high-resolution VQA)."""

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# `${lfpc_root:}` in the configs: the repository folder (where the shipped mini model lives, models/mini).
OmegaConf.register_new_resolver("lfpc_root", lambda: str(PROJECT_ROOT), replace=True)
