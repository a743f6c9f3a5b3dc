"""Evaluate a local checkpoint on HR-Bench 4K/8K, V* or the synthetic set (greedy, crop tool).  Examples:

    python eval.py                                              # tiny model + synthetic benchmark, CPU, < 1 min
    python eval.py benchmark=vstar eval.budgets=[1024,16384]    # both global-image token budgets
    python eval.py eval.modes=[pred,gt,noise,direct]            # the crop-substitution tests
    python eval.py model=qwen2_5_vl_7b init_from=outputs/<run>/hf_model label=stage1 benchmark=hrbench_8k
    python -m lfpc.evaluation.tables outputs/eval/*/*           # paper-style tables from results folders

See conf/eval.yaml for every setting and the paper protocol.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from lfpc.evaluation.run import evaluate
from lfpc.evaluation.tables import summary_markdown
from lfpc.files import hydra_run_folder_lock


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> dict:
    summary = evaluate(cfg)
    print(summary_markdown(summary["rows"]))
    print(f"results: {summary['output_dir']}")
    return summary


if __name__ == "__main__":
    with hydra_run_folder_lock(sys.argv[1:]):  # before Hydra writes the folder's .hydra/: one run per folder
        main()
