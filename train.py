"""Train a crop-and-zoom policy with GRPO.  Examples:

    python train.py                                   # embedded default (mini model, pattern task, CPU)
    python train.py +stage=infogap                    # Stage I: information gap
    python train.py +stage=grounding init_from=outputs/<stage I run>/hf_model
    python train.py -m reward=iou,iou_nothresh,none   # one run per reward, sequentially
    python train.py +stage=infogap ckpt_path=<run>/checkpoints/last.ckpt hydra.run.dir=<run> trainer.max_steps=N
                                                      # resume in place: the run's own overrides and folder
                                                      # (anything else is refused; a SIGTERM prints this command)
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig

from lfpc.files import hydra_run_folder_lock
from lfpc.training.run import train


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    summary = train(cfg)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    with hydra_run_folder_lock(sys.argv[1:]):  # before Hydra writes the folder's .hydra/: one run per folder
        main()
