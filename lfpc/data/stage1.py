"""Build the Stage I training file from the converted sources and record its make-up (paper Sec. 5.1).

    python -m lfpc.data.stage1 [out=PATH] [sources.<name>.count=N] [sources.<name>.path=PATH] [seed=N]

The counts per source come from ``conf/stage1_data.yaml`` (overridable as ``key=value``); each source's rows are
drawn without replacement (:func:`lfpc.data.mix.mix_by_ratio` with the counts as ratios), shuffled together and
written to ``out``, with ``out.mix.json`` listing per source its file, its rows, the rows drawn and their share.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from lfpc import PROJECT_ROOT
from lfpc.data.mix import mix_by_ratio
from lfpc.data.records import DatasetError, check_samples, load_jsonl, write_jsonl
from lfpc.files import write_json

CONFIG = PROJECT_ROOT / "conf" / "stage1_data.yaml"


def stage1_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/stage1_data.yaml`` with ``key=value`` overrides applied."""
    return OmegaConf.merge(OmegaConf.load(CONFIG), OmegaConf.from_dotlist(list(overrides)))


def build_stage1(cfg: DictConfig) -> dict:
    """Draw each source's count (null: all rows; 0: left out), write the shuffled mix to ``cfg.out`` and its
    make-up to ``<out>.mix.json``; return the make-up."""
    drawn = []
    for name, source in cfg.sources.items():
        if source.count == 0:
            continue
        samples = load_jsonl(source.path)
        count = len(samples) if source.count is None else int(source.count)
        if not 0 < count <= len(samples):
            raise DatasetError(f"{CONFIG.name}: sources.{name}.count is {source.count}, but {source.path} holds "
                               f"{len(samples)} rows; give a count from 1 to {len(samples)}, or null for all")
        drawn.append((name, samples, count, str(source.path)))
    if not drawn:
        raise DatasetError(f"{CONFIG.name}: every source has count 0; the Stage I data would be empty")
    total = sum(count for _, _, count, _ in drawn)
    mixed = check_samples(mix_by_ratio([(n, s, c) for n, s, c, _ in drawn], total, seed=cfg.seed),
                          f"the Stage I mix of {[n for n, *_ in drawn]}")
    out = Path(cfg.out)
    write_jsonl(mixed, out)
    make_up = {"out": str(out), "rows": len(mixed), "seed": cfg.seed,
               "sources": {n: {"path": p, "rows": len(s), "drawn": c, "share": c / total} for n, s, c, p in drawn}}
    write_json(f"{out}.mix.json", make_up)
    return make_up


def main(argv: Sequence[str] | None = None) -> None:
    """Build the Stage I file from ``conf/stage1_data.yaml`` and the command line's overrides; print its make-up."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    print(json.dumps(build_stage1(stage1_config(args)), indent=1))


if __name__ == "__main__":
    main()
