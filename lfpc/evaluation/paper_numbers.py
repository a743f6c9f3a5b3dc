"""The numbers the LFPC paper prints in its evaluation Tables 1, 2, 3, 5, 6 and 7, shown beside this project's rows.

The ablation and cost tables (4, 8, 9, 10, 11) keep theirs in the ``paper:`` section of their definition
(``experiments/tables/table<N>.yaml``), Table 12 in its ``paper_columns``. Units are the paper's: accuracy in
percent, IoU x100, time in seconds per question, training time in A100-hours.

A value's key is the column key of :mod:`lfpc.evaluation.tables`: ``<benchmark>/<sub-task>`` for accuracy
(``overall`` for the benchmark's Acc / Overall column), ``<benchmark>/<sub-task>/iou`` for IoU, ``<benchmark>/drop``
(Table 5), ``<benchmark>/time_s`` (Table 6). A key present with the value None is a cell the paper prints as "-";
a key absent is a cell the paper does not have.

A paper row sits under the result row with the same ``label``, token ``budget`` and ``variant`` (the row's crop mode
in Table 1, its subset and condition in Table 7); paper rows without such a result row follow the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

PAPER = ("Zhao et al., Learning to Focus and Precise Cropping: A Reinforcement Learning Framework with Information "
         "Gaps and Grounding Loss for MLLMs, arXiv:2603.27494")

ACC_KEYS = ("hrbench_8k/FSP", "hrbench_8k/FCP", "hrbench_8k/overall", "hrbench_4k/FSP", "hrbench_4k/FCP",
            "hrbench_4k/overall", "vstar/Attr", "vstar/Spatial", "vstar/overall")  # the paper's column order
ACC_IOU_KEYS = tuple(k for key in ACC_KEYS for k in ((key,) if key.endswith("overall") else (key, f"{key}/iou")))
OVERALL_KEYS = ("hrbench_8k/overall", "hrbench_4k/overall", "vstar/overall")
DROP_KEYS = ("hrbench_8k/drop", "hrbench_4k/drop", "vstar/drop")
TIME_KEYS = ("hrbench_8k/overall", "hrbench_8k/time_s", "hrbench_4k/overall", "hrbench_4k/time_s")


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: ``name`` as printed, the project ``label`` and token ``budget`` (None: any) of the
    result row it belongs under, the row ``variant`` (crop mode, subset test), its values and its footnote."""

    table: int
    label: str
    name: str
    budget: int | None = None
    values: dict[str, float | None] = field(default_factory=dict)
    variant: str | None = None
    note: str | None = None


def printed(keys: Sequence[str], cells: Sequence[float | None]) -> dict[str, float | None]:
    """A row's values from its cells in the paper's column order (``keys``); a cell per key."""
    if len(keys) != len(cells):
        raise ValueError(f"{len(cells)} cells for {len(keys)} columns {list(keys)}")
    return dict(zip(keys, cells))


MINI_O3_NOTE = ("Result from Mini-o3 paper, where it was obtained by setting temperature to 1.0 and averaging "
                "results over 32 runs for each question.")
DEEPEYES_NOTE = ("Result from DeepEyes paper, where they did not shuffle the order of options on the dataset, "
                 "unlike our evaluation.")
MODE_ROWS = (("pred", "prediction"), ("noise", "Random Noise"), ("gt", "Ground Truth"))  # Table 1 row order


def _table1(budget: int, models: Sequence[tuple[str, str, Sequence[Sequence[float]]]]) -> list[PaperRow]:
    """Table 1(a) (budget 16,384) or 1(b) (1,024): per model (label, name), its prediction / Random Noise / Ground
    Truth rows."""
    return [PaperRow(1, label, f"{name} {setting}", budget, printed(ACC_KEYS, cells), variant=mode)
            for label, name, model_rows in models for (mode, setting), cells in zip(MODE_ROWS, model_rows)]


def _table2(budget: int, rows: Sequence[tuple[str, str, Sequence[float | None], str | None]]) -> list[PaperRow]:
    return [PaperRow(2, label, name, budget, printed(ACC_KEYS, cells), note=note) for label, name, cells, note in rows]


PAPER_ROWS: tuple[PaperRow, ...] = (
    # Table 1 (Sec. 3): crop substitution on existing agents; (a) 16,384 global-image tokens, (b) 1,024
    *_table1(16384, (
        ("deepeyes", "DeepEyes", ((83.0, 53.0, 68.0, 92.0, 56.0, 74.0, 84.3, 88.2, 85.9),
                              (83.0, 54.0, 68.5, 94.0, 57.0, 75.5, 83.5, 88.2, 85.4),
                              (86.0, 53.0, 69.5, 93.0, 55.0, 74.0, 86.1, 89.5, 87.5))),
        ("cof_sft", "CoF-sft", ((87.0, 53.0, 70.0, 94.0, 52.0, 73.0, 90.4, 85.5, 88.5),
                            (85.0, 52.0, 68.5, 90.0, 53.0, 71.5, 80.9, 84.2, 82.2),
                            (89.0, 51.0, 70.0, 96.0, 54.0, 75.0, 91.3, 85.5, 89.0))))),
    *_table1(1024, (
        ("deepeyes", "DeepEyes", ((68.0, 59.0, 63.5, 78.0, 54.0, 66.0, 75.7, 76.3, 75.9),
                              (62.0, 57.0, 59.5, 73.0, 54.0, 63.5, 73.0, 77.6, 74.8),
                              (70.0, 59.0, 64.5, 79.0, 54.0, 66.5, 77.4, 77.6, 77.5))),
        ("cof_sft", "CoF-sft", ((68.0, 53.0, 60.5, 78.0, 54.0, 66.0, 73.0, 72.4, 72.8),
                            (55.0, 55.0, 55.0, 65.0, 55.0, 60.0, 65.2, 72.4, 68.1),
                            (77.0, 54.0, 65.5, 85.0, 57.0, 71.0, 87.0, 78.9, 83.8))))),
    # Table 2 (Sec. 5.2): main results; (a) 1,024 global-image tokens, (b) 16,384
    *_table2(1024, (
        ("cof_sft", "CoF-sft [51]", (66.0, 51.7, 58.9, 75.5, 56.5, 66.0, 73.0, 72.4, 72.8), None),
        ("pixel_reasoner", "Pixel Reasoner [39]", (62.8, 57.0, 59.9, 69.8, 61.8, 65.8, 73.1, 75.0, 73.9), None),
        ("mini_o3", "Mini-o3 [13]", (77.5, 54.5, 66.0, 82.0, 59.3, 70.7, 78.3, 82.9, 80.1), None),
        ("deepeyes", "DeepEyes [54]", (68.8, 55.2, 62.0, 73.0, 54.7, 63.9, 75.7, 76.3, 75.9), None),
        ("stage2", "Ours", (83.3, 60.8, 72.1, 86.8, 63.7, 75.3, 82.6, 77.6, 80.6), None))),
    *_table2(16384, (
        ("cof_sft", "CoF-sft [51]", (87.7, 51.0, 69.4, 92.2, 53.7, 73.0, 90.4, 85.5, 88.5), None),
        ("pixel_reasoner", "Pixel Reasoner [39]", (78.3, 55.5, 66.9, 85.8, 61.5, 73.6, 82.6, 86.8, 84.3), None),
        ("mini_o3", "Mini-o3 [13]", (82.0, 49.2, 65.6, 84.0, 54.0, 69.0, 87.8, 88.2, 88.0), None),
        ("mini_o3_quoted", "Mini-o3† [13]", (None, None, 73.3, None, None, 77.5, None, None, 88.2), MINI_O3_NOTE),
        ("deepeyes", "DeepEyes [54]", (84.3, 54.7, 69.5, 90.5, 55.2, 72.9, 84.3, 88.2, 85.9), None),
        ("deepeyes_quoted", "DeepEyes‡ [54]", (86.8, 58.5, 72.6, 91.3, 59.0, 75.1, 91.3, 88.2, 90.1), DEEPEYES_NOTE),
        ("stage2", "Ours", (87.7, 63.0, 75.4, 92.7, 60.0, 76.4, 91.3, 86.8, 89.5), None))),
    # Table 3 (Sec. 5.3): two-stage training at 1,024 tokens, Acc and IoU (x100) per sub-task
    PaperRow(3, "baseline", "Baseline", 1024, printed(ACC_IOU_KEYS, (
        65.2, 28.5, 56.8, 40.1, 61.0, 75.0, 30.3, 60.8, 45.6, 67.9, 72.2, 39.1, 72.4, 30.3, 72.3))),
    PaperRow(3, "stage1", "Stage-I", 1024, printed(ACC_IOU_KEYS, (
        77.7, 29.8, 62.0, 39.3, 69.9, 85.3, 32.3, 63.5, 46.5, 74.4, 80.0, 25.7, 75.0, 21.0, 78.0))),
    PaperRow(3, "stage2", "Stage-II", 1024, printed(ACC_IOU_KEYS, (
        83.3, 34.5, 60.8, 44.4, 72.1, 86.8, 37.8, 63.7, 51.0, 75.3, 82.6, 37.4, 77.6, 30.8, 80.6))),
    # Table 5 (Sec. 5.3): accuracy drop (points) when the crop is replaced by noise, 1,024 tokens
    PaperRow(5, "baseline", "Baseline", 1024, printed(DROP_KEYS, (4.5, 0.5, 3.2))),
    PaperRow(5, "stage1", "Stage-I", 1024, printed(DROP_KEYS, (18.5, 10.5, 11.0))),
    # Table 6 (Sec. 6): accuracy and time per question; the others at 16,384 tokens, ours at 1,024
    *(PaperRow(6, label, name, budget, printed(TIME_KEYS, cells)) for label, name, budget, cells in (
        ("cof_sft", "CoF-sft", 16384, (69.4, 6.0, 73.0, 5.5)),
        ("pixel_reasoner", "Pixel Reasoner", 16384, (66.9, 5.0, 73.6, 8.4)),
        ("mini_o3", "Mini-o3", 16384, (65.6, 27.8, 69.0, 21.4)),
        ("deepeyes", "DeepEyes", 16384, (69.5, 12.4, 72.9, 9.3)),
        ("stage2", "Ours 1,024", 1024, (72.1, 2.8, 75.3, 2.6)))),
    # Table 7 (supplementary Sec. 9): DeepEyes at 1,024 tokens; (a) GT test, (b) noise test
    *(PaperRow(7, "deepeyes", name, 1024, printed(OVERALL_KEYS, cells), variant=variant) for variant, name, cells in (
        ("gt_test/pred", "DeepEyes prediction", (41.7, 47.0, 55.6)),
        ("gt_test/gt", "DeepEyes GT", (50.0, 53.0, 60.3)),
        ("noise_test/pred", "DeepEyes prediction", (100.0, 100.0, 100.0)),
        ("noise_test/noise", "DeepEyes RandNoise", (100.0, 80.8, 100.0)))),
)

TABLE_NOTES: dict[int, str] = {
    1: "Paper Table 1: (a) 16,384 and (b) 1,024 global-image tokens; crops from the original image. Its HR-Bench "
       "cells are whole percents (one option order per question, unlike Table 2).",
    2: "Paper Table 2: all models 7B; trajectory-free (no SFT trajectories): DeepEyes and Ours. Options shuffled.",
    7: "Paper Table 7 (Sec. 9): (a) questions whose predicted crop poorly covers the GT box, (b) questions answered "
       "wrongly without the tool but right with cropping; accuracy on each subset.",
}


def rows_of(table: int) -> list[PaperRow]:
    """The paper rows of ``table`` in the paper's order."""
    return [row for row in PAPER_ROWS if row.table == table]
