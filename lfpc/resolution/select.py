"""Offline resolution selection from the training config (the same conf/ as train.py).  Examples:

    python -m lfpc.resolution.select +stage=infogap                 # what Stage I trains with
    python -m lfpc.resolution.select resolution=answer_divergence resolution.stop=all model=qwen2_5_vl_7b

Prints the statistics (also logged and written to ``<manifest>.stats.json``). A single-process train.py runs the
same selection itself when ``resolution=answer_divergence`` finds no cached result; a multi-process launch must not
(every rank would build a model before the process group exists, and a vLLM engine would open a 1-rank group that
Lightning then takes for its own), so it fails and prints this command with the run's overrides. The selection's
inputs are composed from the config by :mod:`lfpc.config` (the composition root), which this command calls.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from lfpc.config import load_samples, model_path, run_selection


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    result = run_selection(cfg, model_path(cfg), list(dict.fromkeys(load_samples(cfg.data))))  # a mix may repeat
    stats = result.stats.as_dict()
    print(json.dumps({"manifest": str(cfg.resolution.manifest), **stats}, indent=1))
    return stats


if __name__ == "__main__":
    main()
