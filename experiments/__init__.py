"""One sweep per paper table and figure: declarative run definitions, one sequential runner, result collectors.

    python -m experiments list
    python -m experiments run table10 [--size smoke|mini|paper] [--launcher local|slurm] [--dry-run] [--out DIR]
    python -m experiments collect table10 experiments_out/table10/smoke [--out DIR]
    python -m experiments run miniature     # the paper in miniature (~1 h on 2 CPU cores), ends with RESULTS.md

Each definition (``experiments/tables/<name>.yaml``) lists ``train.py`` steps (Hydra multiruns: comma-separated
values sweep) and ``eval.py`` steps; ``--size`` picks the scale (``conf/size/``), the same runs either way.
"""
