"""The paper's numbers (lfpc/evaluation/paper_numbers.py and the tables' ``paper:`` sections): every printed cell is
filled, in the printed columns, and the cells agree with each other as the paper's tables do (Overall from the
sub-tasks, rows the paper repeats across tables). A sample of cells is checked by hand against the paper."""

from __future__ import annotations

import pytest

from experiments.definitions import load
from lfpc.evaluation import paper_numbers
from lfpc.evaluation.paper_numbers import ACC_IOU_KEYS, ACC_KEYS, DROP_KEYS, OVERALL_KEYS, TIME_KEYS, PaperRow
from lfpc.evaluation.tables import LAYOUTS, Results

VSTAR_QUESTIONS = {"Attr": 115, "Spatial": 76}  # V*: 115 attribute and 76 spatial questions
PRINTED = {  # the paper's columns of each table, in its order
    1: ACC_KEYS, 2: ACC_KEYS, 3: ACC_IOU_KEYS, 4: ACC_KEYS, 5: DROP_KEYS, 6: TIME_KEYS, 7: OVERALL_KEYS, 8: ACC_KEYS,
    9: ("hrbench_8k/FCP", "hrbench_4k/FCP", "vstar/Spatial"),
    10: ("hrbench_8k/FSP", "hrbench_8k/FSP/iou", "hrbench_8k/FCP", "hrbench_8k/FCP/iou", "hrbench_8k/overall"),
    11: ("device_h",),
}
ROWS_PRINTED = {1: 12, 2: 12, 3: 3, 4: 4, 5: 2, 6: 5, 7: 4, 8: 2, 9: 3, 10: 3, 11: 5}


def rows(table: int) -> list[PaperRow]:
    """The paper rows of ``table``, wherever the project keeps them."""
    return paper_numbers.rows_of(table) or list(load(f"table{table}").paper)


def row(table: int, name: str, budget: int | None = None, variant: str | None = None) -> dict[str, float | None]:
    [found] = [r for r in rows(table) if r.name == name and budget in (None, r.budget)
               and variant in (None, r.variant)]
    return found.values


def test_every_table_has_all_its_printed_rows_and_cells():
    for table, expected in PRINTED.items():
        assert len(rows(table)) == ROWS_PRINTED[table], table
        for paper_row in rows(table):
            assert tuple(paper_row.values) == expected, (table, paper_row.name)
            dashes = [k for k, v in paper_row.values.items() if v is None]
            assert not dashes or paper_row.name == "Mini-o3† [13]", (table, paper_row.name)  # the one "-" row
            assert paper_row.table == table


def test_paper_cells_are_columns_of_the_tables_layout():
    for table, layout in LAYOUTS.items():
        keys = {c.key for b in layout.benchmarks for c in layout.columns(Results([]), b)}
        for paper_row in rows(table):
            assert set(paper_row.values) <= keys, (table, paper_row.name, set(paper_row.values) - keys)
            assert paper_row.variant in dict(layout.variants), (table, paper_row.name)


def test_overall_is_the_mean_over_the_questions_of_the_subtasks():
    # HR-Bench: FSP and FCP have as many questions; V*: 115 Attr, 76 Spatial; cells are rounded to 0.1. One printed
    # row disagrees with itself and is kept as printed: Table 10 "- IoU Reward", (79.0 + 63.7) / 2 = 71.35, Acc 71.2
    checked, off = 0, []
    for table in PRINTED:
        for paper_row in rows(table):
            v, means = paper_row.values, {}
            for bench in ("hrbench_8k", "hrbench_4k"):
                if v.get(f"{bench}/FSP") is not None and f"{bench}/overall" in v:
                    means[bench] = (v[f"{bench}/FSP"] + v[f"{bench}/FCP"]) / 2
            if v.get("vstar/Attr") is not None:
                means["vstar"] = sum(n * v[f"vstar/{s}"] for s, n in VSTAR_QUESTIONS.items()) / 191
            for bench, mean in means.items():
                checked += 1
                if abs(mean - v[f"{bench}/overall"]) > 0.1 + 1e-9:
                    off.append((table, paper_row.name, bench))
    assert checked == 32 * 3 + 3  # the sub-task rows of Tables 1-4 and 8 on three benchmarks, Table 10's on one
    assert off == [(10, "- IoU Reward", "hrbench_8k")]


def test_rows_the_paper_repeats_agree():
    ours = row(2, "Ours", 1024)
    for table, name in ((3, "Stage-II"), (4, "+ VP Data & L1 Reward"), (8, "Stage-II")):
        assert {k: v for k, v in row(table, name).items() if k in ACC_KEYS} == ours, table
    stage1 = {k: v for k, v in row(3, "Stage-I").items() if k in ACC_KEYS}
    assert row(4, "Stage-I") == stage1
    assert row(9, "Answer") == {k: stage1[k] for k in PRINTED[9]}
    vp = row(4, "+ VP Data")
    assert {k: v for k, v in row(10, "IoU Reward").items() if not k.endswith("iou")} == \
           {k: vp[k] for k in ("hrbench_8k/FSP", "hrbench_8k/FCP", "hrbench_8k/overall")}
    # Table 6: the compared methods' overall accuracy at 16,384 tokens (Table 2(b)), ours at 1,024 (Table 2(a))
    for name, table2 in (("CoF-sft", "CoF-sft [51]"), ("Pixel Reasoner", "Pixel Reasoner [39]"),
                         ("Mini-o3", "Mini-o3 [13]"), ("DeepEyes", "DeepEyes [54]"), ("Ours 1,024", "Ours")):
        budget = 1024 if name == "Ours 1,024" else 16384
        for bench in ("hrbench_8k", "hrbench_4k"):
            assert row(6, name)[f"{bench}/overall"] == row(2, table2, budget)[f"{bench}/overall"], name
    # Table 1's prediction rows on V* are Table 2's (its HR-Bench cells are whole percents: not the same run)
    for name, table2 in (("DeepEyes", "DeepEyes [54]"), ("CoF-sft", "CoF-sft [51]")):
        for budget in (1024, 16384):
            prediction = row(1, f"{name} prediction", budget)
            assert all(prediction[k] == row(2, table2, budget)[k] for k in ACC_KEYS if k.startswith("vstar"))
    stages = sum(row(11, name)["device_h"] for name in ("Stage-I", "Stage-II", "Offline Res. Selection"))
    assert stages == pytest.approx(row(11, "Total")["device_h"])


def test_sample_cells_as_printed_in_the_paper():
    assert row(1, "CoF-sft Random Noise", 16384)["vstar/Attr"] == 80.9
    assert row(1, "DeepEyes Ground Truth", 1024)["hrbench_4k/overall"] == 66.5
    assert row(2, "DeepEyes‡ [54]", 16384)["vstar/overall"] == 90.1
    assert row(2, "Pixel Reasoner [39]", 1024)["hrbench_4k/FCP"] == 61.8
    assert row(3, "Baseline")["vstar/Spatial/iou"] == 30.3 and row(3, "Stage-I")["hrbench_4k/FCP/iou"] == 46.5
    assert row(4, "+ Original Data")["hrbench_4k/overall"] == 72.3
    assert row(5, "Stage-I")["hrbench_4k/drop"] == 10.5
    assert row(6, "Mini-o3")["hrbench_8k/time_s"] == 27.8
    assert row(7, "DeepEyes RandNoise", variant="noise_test/noise")["hrbench_4k/overall"] == 80.8
    assert row(7, "DeepEyes prediction", variant="gt_test/pred")["vstar/overall"] == 55.6
    assert row(8, "Mix Data")["vstar/Spatial"] == 73.7
    assert row(9, "Random")["hrbench_4k/FCP"] == 64.0
    assert row(10, "- IoU Thresh")["hrbench_8k/FSP/iou"] == 29.3
    assert row(11, "DeepEyes")["device_h"] == 480.0


def test_table12_paper_columns_hold_the_printed_settings():
    paper = load("table12").paper_columns
    stage1, stage2 = paper["Paper Stage I"], paper["Paper Stage II"]
    assert (stage1["learning rate"], stage2["learning rate"], stage2["tau"]) == (1e-6, 5e-7, 0.9)
    for column in (stage1, stage2):
        assert (column["prompts / step"], column["rollouts / prompt"], column["PPO mini-batch (prompts)"],
                column["micro-batch / device"], column["max turns"], column["max tokens / turn"],
                column["devices"]) == (256, 16, 32, 2, 5, 2048, 8)
        assert (column["KL coef"], column["entropy coef"]) == (0.0, 0.0)
    assert stage1["reward weights acc/fmt/tool"] == "0.8/0.2/1.2"
