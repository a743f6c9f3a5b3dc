"""The numbers the LFPC paper reports, shown beside this project's rows in the paper-style tables.

STATUS: EMPTY. The paper's tables could not be retrieved with the (offline) search tools available when this file
was written, so every value below is None and renders as "?". Nothing here is invented: fill the slots in from the
paper, in the units it prints (accuracy and IoU as printed, time in seconds per question). A value's key is the
column key of :mod:`lfpc.evaluation.tables` (e.g. ``"vstar/Attr"``, ``"hrbench_8k/overall"``, ``"vstar/noise"``).

A slot is shown under a result row whose label (``label=...`` at evaluation) equals the slot's ``label`` and whose
budget equals the slot's ``budget`` (None: any budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAPER = ("Zhao et al., Learning to Focus and Precise Cropping: A Reinforcement Learning Framework with Information "
         "Gaps and Grounding Loss for MLLMs, CVPR 2026, arXiv:2603.27494")
STATUS = "EMPTY: not retrieved offline; fill in lfpc/evaluation/paper_numbers.py from the paper"


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: ``name`` as printed, the project ``label`` it corresponds to, its token budget."""

    table: int
    label: str
    name: str
    budget: int | None = None
    values: dict[str, float | None] = field(default_factory=dict)


PAPER_ROWS: tuple[PaperRow, ...] = (
    # Table 1: crop substitution tests on an existing agent model
    PaperRow(1, "deepeyes", "DeepEyes"),
    # Table 2: main results at 1,024 and 16,384 global-image tokens
    *(PaperRow(2, label, name, budget) for budget in (1024, 16384)
      for label, name in (("qwen2.5-vl-7b", "Qwen2.5-VL-7B"), ("deepeyes", "DeepEyes"), ("stage2", "LFPC"))),
    # Tables 3, 5 and 7: baseline vs Stage I vs Stage II
    *(PaperRow(table, label, name) for table in (3, 5, 7)
      for label, name in (("baseline", "Baseline"), ("stage1", "Stage I"), ("stage2", "Stage II"))),
    # Table 6: accuracy and time per question
    PaperRow(6, "deepeyes", "DeepEyes"),
    PaperRow(6, "stage2", "LFPC"),
)


def paper_rows(table: int, label: str, budget: int) -> list[PaperRow]:
    """The paper rows of ``table`` that correspond to the result row (``label``, ``budget``)."""
    return [r for r in PAPER_ROWS if r.table == table and r.label == label and r.budget in (None, budget)]
