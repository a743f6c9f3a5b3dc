"""Paper-style tables from results folders: layouts, values, paper rows, markdown and CSV output; bootstrap
intervals over test questions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lfpc.evaluation import paper_numbers
from lfpc.evaluation.bootstrap import Interval, bootstrap_mean, bootstrap_paired_difference
from lfpc.evaluation.tables import build_table, load_results, main, render


def row(benchmark: str, mode: str, subtask: str, accuracy: float, budget: int = 1024, **metrics) -> dict:
    values = {"num_questions": 10, "first_iou": None, "last_iou": None, "first_coverage": None,
              "last_coverage": None, "tool_calls": None, "crops": None, "visual_tokens": None, "time_s": None}
    values.update(metrics)
    return {"benchmark": benchmark, "budget": budget, "mode": mode, "subtask": subtask, "accuracy": accuracy,
            **values}


def results_dir(root: Path, name: str, label: str, rows: list[dict], subsets: list[dict] = ()) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"label": label, "model": "/m", "rows": rows,
                                                     "subsets": list(subsets)}))
    return folder


@pytest.fixture()
def dirs(tmp_path):
    """stage2 on V* (all modes, 2 budgets) and HR-Bench 4K (pred); baseline on V* (pred, noise)."""
    stage2_vstar = results_dir(tmp_path, "s2v", "stage2", [
        row("vstar", "pred", "Attr", 0.8), row("vstar", "pred", "Spatial", 0.6),
        row("vstar", "pred", "overall", 0.72, last_iou=0.4567, tool_calls=1.25, visual_tokens=1500.4, time_s=2.345),
        row("vstar", "gt", "overall", 0.9), row("vstar", "noise", "overall", 0.5),
        row("vstar", "direct", "overall", 0.4), row("vstar", "pred", "overall", 0.75, budget=16384)],
        subsets=[{"benchmark": "vstar", "budget": 1024, "gt_test_accuracy": 0.25, "gt_test_n": 8,
                  "noise_test_accuracy": None, "noise_test_n": 0}])
    stage2_hr = results_dir(tmp_path, "s2h", "stage2", [
        row("hrbench_4k", "pred", "FSP", 0.7), row("hrbench_4k", "pred", "FCP", 0.5),
        row("hrbench_4k", "pred", "overall", 0.6)])
    baseline = results_dir(tmp_path, "bv", "baseline", [
        row("vstar", "pred", "overall", 0.7), row("vstar", "noise", "overall", 0.68)])
    return [baseline, stage2_vstar, stage2_hr]


def body(table, label: str, budget: int = 1024) -> dict[str, str]:
    [cells] = [r for r in table.rows if r[0] == label and r[1] == str(budget)]
    return dict(zip(table.headers, cells))


def test_table2_main_results_layout_and_values(dirs):
    table = build_table(2, load_results(dirs))
    assert table.headers == ["Model", "Budget", "V* Attr", "V* Spatial", "V* overall",
                             "HR-4K FSP", "HR-4K FCP", "HR-4K overall"]
    # rows in the order of the labels on the command line, budgets ascending, paper rows after theirs
    assert [r[:2] for r in table.rows] == [["baseline", "1024"], ["stage2", "1024"], ["LFPC (paper)", "1024"],
                                           ["stage2", "16384"], ["LFPC (paper)", "16384"]]
    assert list(body(table, "stage2").values())[2:] == ["80.0", "60.0", "72.0", "70.0", "50.0", "60.0"]
    assert body(table, "stage2", 16384)["V* overall"] == "75.0" and body(table, "stage2", 16384)["V* Attr"] == "–"
    assert body(table, "baseline")["V* Attr"] == "–" and body(table, "baseline")["V* overall"] == "70.0"
    assert set(body(table, "LFPC (paper)").values()) - {"LFPC (paper)", "1024"} == {"?"}  # empty paper slots
    assert any(paper_numbers.PAPER in note and paper_numbers.STATUS in note for note in table.notes)


def test_table1_and_table5_crop_tests(dirs):
    results = load_results(dirs)
    t1 = body(build_table(1, results), "stage2")
    assert [t1[f"V* {m}"] for m in ("pred", "GT", "noise", "direct")] == ["72.0", "90.0", "50.0", "40.0"]
    t5 = build_table(5, results)
    assert body(t5, "stage2")["V* drop"] == "22.0"            # 72.0 - 50.0
    assert body(t5, "baseline")["V* drop"] == "2.0"           # 70.0 - 68.0
    assert body(t5, "stage2")["HR-4K drop"] == "–"            # no noise run on HR-Bench 4K
    assert "Baseline (paper)" in [r[0] for r in t5.rows] and "Stage II (paper)" in [r[0] for r in t5.rows]


def test_tables_3_6_7_cost_iou_and_subsets(dirs):
    results = load_results(dirs)
    t3 = body(build_table(3, results), "stage2")
    assert t3["V* Acc"] == "72.0" and t3["V* IoU"] == "0.457" and t3["HR-4K IoU"] == "–"
    t6 = body(build_table(6, results), "stage2")
    assert (t6["V* s/q"], t6["V* calls/q"], t6["V* vis. tok/q"]) == ("2.35", "1.25", "1500")
    t7 = body(build_table(7, results), "stage2")
    assert (t7["V* GT test"], t7["V* GT n"], t7["V* noise test"], t7["V* noise n"]) == ("25.0", "8", "–", "0")


def test_render_writes_markdown_and_csv_and_cli(dirs, tmp_path, capsys):
    text = render(dirs, tmp_path / "tables", [2, 5])
    assert "### Table 2: Main results" in text and "### Table 5: Noise-crop drop" in text
    assert (tmp_path / "tables" / "table2.md").read_text().startswith("### Table 2")
    with (tmp_path / "tables" / "table5.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:5] == ["Model", "Budget", "V* pred", "V* noise", "V* drop"]
    assert rows[1][:5] == ["baseline", "1024", "70.0", "68.0", "2.0"]
    paper = next(r for r in rows if r[0] == "Baseline (paper)")
    assert paper[2:] == [""] * (len(rows[0]) - 2)             # empty paper slots stay empty, never invented
    main([str(d) for d in dirs] + ["--out", str(tmp_path / "cli"), "--tables", "6"])
    assert "### Table 6" in capsys.readouterr().out and (tmp_path / "cli" / "table6.csv").is_file()


def test_missing_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.json.*run eval.py"):
        load_results([tmp_path])


# ----------------------------------------------------------------------------------------------------------------
# Bootstrap intervals over test questions (lfpc/evaluation/bootstrap.py), checked by properties and hand cases

def test_bootstrap_degenerate_and_hand_computed_cases():
    assert bootstrap_mean([0.7] * 30) == Interval(0.7, 0.7, 0.7)      # every resample has mean 0.7
    assert bootstrap_mean([None, 0.25, None, 0.25]) == Interval(0.25, 0.25, 0.25)  # None: undefined, left out
    assert bootstrap_mean([]) is None and bootstrap_mean([None, None]) is None
    # {0, 1}: a resampled mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4, so the 2.5th / 97.5th percentiles
    # of the resampled means are 0 and 1
    assert bootstrap_mean([0.0, 1.0]) == Interval(0.5, 0.0, 1.0)
    assert bootstrap_mean([None, 0.2, 0.4]).value == pytest.approx(0.3)
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean([0.0, 1.0], level=95)


def test_bootstrap_interval_holds_the_mean_shrinks_with_more_questions_and_is_seeded():
    rng = np.random.default_rng(1)
    few, many = (rng.random(20) < 0.6).astype(float), (rng.random(2000) < 0.6).astype(float)
    intervals = [bootstrap_mean(list(values)) for values in (few, many)]
    for values, interval in zip((few, many), intervals):
        assert interval.low <= interval.value <= interval.high and interval.value == pytest.approx(values.mean())
    # the width goes as 1/sqrt(n): 100x the questions, ~1/10 the width
    assert intervals[1].high - intervals[1].low < (intervals[0].high - intervals[0].low) / 5
    assert bootstrap_mean(list(few), seed=3) == bootstrap_mean(list(few), seed=3)


def test_bootstrap_coverage_is_near_the_level():
    # 200 test sets of 100 questions answered right with probability 0.3: about 95% of the intervals hold 0.3
    rng = np.random.default_rng(7)
    hits = sum(interval.low <= 0.3 <= interval.high for interval in
               (bootstrap_mean(list((rng.random(100) < 0.3).astype(float)), resamples=500, seed=k) for k in range(200)))
    assert 0.88 <= hits / 200 <= 0.995


def test_paired_drop_resamples_questions_in_pairs():
    pred = {f"q{i}": float(i < 50) for i in range(100)}
    assert bootstrap_paired_difference(pred, dict(pred)) == Interval(0.0, 0.0, 0.0)  # same answers: no drop
    # the noise crop breaks 5 of the 50 right answers: drop 5 points; every question's drop is >= 0, so with the
    # questions paired no resample can show a negative drop (unpaired resampling of the two modes would)
    noise = {q: 0.0 if q in ("q0", "q1", "q2", "q3", "q4") else v for q, v in pred.items()}
    drop = bootstrap_paired_difference(pred, noise)
    assert drop.value == pytest.approx(0.05) and 0.0 <= drop.low < drop.value < drop.high < 0.15
    # only questions evaluated in both modes count
    assert bootstrap_paired_difference({"a": 1.0, "b": 1.0}, {"a": 0.0}) == Interval(1.0, 1.0, 1.0)
    assert bootstrap_paired_difference({"a": 1.0}, {"b": 0.0}) is None
