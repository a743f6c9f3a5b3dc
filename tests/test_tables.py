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
    """stage2 on V* (all modes, 2 budgets) and HR-Bench 4K (pred); baseline on V* (pred, noise); deepeyes on V*
    (pred, noise) with its Table 7 subsets."""
    stage2_vstar = results_dir(tmp_path, "s2v", "stage2", [
        row("vstar", "pred", "Attr", 0.8, last_iou=0.4567), row("vstar", "pred", "Spatial", 0.6, last_iou=0.2),
        row("vstar", "pred", "overall", 0.72, last_iou=0.3, tool_calls=1.25, visual_tokens=1500.4, time_s=2.345),
        row("vstar", "gt", "overall", 0.9), row("vstar", "noise", "overall", 0.5),
        row("vstar", "direct", "overall", 0.4), row("vstar", "pred", "overall", 0.75, budget=16384)])
    stage2_hr = results_dir(tmp_path, "s2h", "stage2", [
        row("hrbench_4k", "pred", "FSP", 0.7), row("hrbench_4k", "pred", "FCP", 0.5),
        row("hrbench_4k", "pred", "overall", 0.6)])
    baseline = results_dir(tmp_path, "bv", "baseline", [
        row("vstar", "pred", "overall", 0.7), row("vstar", "noise", "overall", 0.68)])
    deepeyes = results_dir(tmp_path, "dv", "deepeyes", [
        row("vstar", "pred", "overall", 0.75), row("vstar", "noise", "overall", 0.7)],
        subsets=[{"benchmark": "vstar", "budget": 1024, "gt_test_coverage": 0.5, "gt_test_n": 8,
                  "gt_test_pred_accuracy": 0.25, "gt_test_gt_accuracy": 0.5, "noise_test_n": 0,
                  "noise_test_pred_accuracy": None, "noise_test_noise_accuracy": None}])
    return [baseline, stage2_vstar, stage2_hr, deepeyes]


def body(table, label: str, budget: int = 1024, setting: str | None = None) -> dict[str, str]:
    [cells] = [r for r in table.rows if r[0] == label and r[1] == str(budget)
               and (setting is None or r[2] == setting)]
    return dict(zip(table.headers, cells))


def test_table2_main_results_paper_layout_with_paper_rows_and_differences(dirs):
    table = build_table(2, load_results(dirs))
    assert table.headers == ["Model", "Budget", "HR-8K FSP", "HR-8K FCP", "HR-8K Overall", "HR-4K FSP", "HR-4K FCP",
                             "HR-4K Overall", "V* Attr", "V* Spatial", "V* Overall"]
    # our rows in label order, each followed by the paper's row and the difference; the paper's other rows follow
    assert [r[:2] for r in table.rows[:7]] == [
        ["baseline", "1024"], ["stage2", "1024"], ["Ours (paper)", "1024"], ["Δ ours - paper", "1024"],
        ["stage2", "16384"], ["Ours (paper)", "16384"], ["Δ ours - paper", "16384"]]
    ours = body(table, "stage2")
    assert [ours[h] for h in table.headers[5:]] == ["70.0", "50.0", "60.0", "80.0", "60.0", "72.0"]
    assert ours["HR-8K FSP"] == "–"                                      # not measured
    paper = table.rows[2]
    assert paper[2:] == ["83.3", "60.8", "72.1", "86.8", "63.7", "75.3", "82.6", "77.6", "80.6"]  # Table 2(a) Ours
    difference = dict(zip(table.headers, table.rows[3]))
    assert difference["V* Overall"] == "-8.6" and difference["HR-4K FSP"] == "-16.8" and difference["HR-8K FSP"] == ""
    # deepeyes (pred at 1,024) sits above its paper row; Mini-o3† (quoted, no run) follows the table, "-" as printed
    assert [r[0] for r in table.rows].index("DeepEyes [54] (paper)") == [r[0] for r in table.rows].index("deepeyes") + 1
    quoted = next(r for r in table.rows if r[0] == "Mini-o3† [13] (paper)")
    assert quoted[1] == "16384" and quoted[2:5] == ["-", "-", "73.3"]
    assert any(paper_numbers.PAPER in note for note in table.notes)
    assert any(note.startswith("Mini-o3† [13]: Result from Mini-o3 paper") for note in table.notes)


def test_table1_rows_per_crop_mode_and_table5_drop(dirs):
    results = load_results(dirs)
    t1 = build_table(1, results)
    assert t1.headers[:3] == ["Model", "Budget", "Setting"]
    settings = [r[2] for r in t1.rows if r[0] == "stage2" and r[1] == "1024"]
    assert settings == ["prediction", "Random Noise", "Ground Truth", "direct"]
    assert [body(t1, "stage2", setting=s)["V* Overall"] for s in settings] == ["72.0", "50.0", "90.0", "40.0"]
    # DeepEyes' paper rows at 1,024 (Table 1(b)) sit under its rows of the same crop mode
    names = [r[0] for r in t1.rows]
    noise = names.index("DeepEyes Random Noise (paper)")
    assert t1.rows[noise - 1][:3] == ["deepeyes", "1024", "Random Noise"] and t1.rows[noise][-1] == "74.8"
    t5 = build_table(5, results)
    assert body(t5, "stage2")["V* drop"] == "22.0"            # 72.0 - 50.0
    assert body(t5, "baseline")["V* drop"] == "2.0"           # 70.0 - 68.0
    assert body(t5, "stage2")["HR-4K drop"] == "–"            # no noise run on HR-Bench 4K
    assert body(t5, "Δ ours - paper")["V* drop"] == "-1.2"    # baseline 2.0 vs the paper's 3.2
    assert body(t5, "Baseline (paper)")["V* pred"] == "?"     # the paper prints the drop only


def test_table3_iou_x100_per_subtask_table6_cost_table7_subsets(dirs):
    results = load_results(dirs)
    t3 = build_table(3, results)
    assert t3.headers[2:7] == ["HR-8K FSP Acc", "HR-8K FSP IoU", "HR-8K FCP Acc", "HR-8K FCP IoU", "HR-8K Overall Acc"]
    stage2 = body(t3, "stage2")
    assert (stage2["V* Attr Acc"], stage2["V* Attr IoU"], stage2["V* Spatial IoU"]) == ("80.0", "45.7", "20.0")
    assert stage2["HR-4K FSP IoU"] == "–" and body(t3, "Stage-II (paper)")["HR-8K FCP IoU"] == "44.4"
    assert any("HR-Bench releases no GT boxes" in note and ".boxes.json" in note for note in t3.notes)
    t6 = build_table(6, results)
    assert [h for h in t6.headers if h.startswith("V*")] == []            # Table 6 is HR-Bench only
    assert body(t6, "Ours 1,024 (paper)")["HR-8K Time (s)"] == "2.80"
    t7 = build_table(7, results)
    assert body(t7, "deepeyes", setting="(a) prediction")["V* Acc"] == "25.0"
    assert body(t7, "deepeyes", setting="(a) GT")["V* Acc"] == "50.0"
    assert body(t7, "deepeyes", setting="(a) GT")["V* n"] == "8"
    assert body(t7, "DeepEyes GT (paper)", setting="(a) GT")["V* Acc"] == "60.3"
    empty = body(t7, "deepeyes", setting="(b) RandNoise")                   # an empty subset: n = 0, no accuracy
    assert (empty["V* Acc"], empty["V* n"]) == ("–", "0")


def test_tables_9_and_10_keep_the_paper_columns_only(dirs):
    results = load_results(dirs)
    assert build_table(9, results).headers[2:] == ["HR-8K FCP", "HR-4K FCP", "V* Spatial"]
    assert build_table(10, results).headers[2:] == ["HR-8K FSP Acc", "HR-8K FSP IoU", "HR-8K FCP Acc",
                                                    "HR-8K FCP IoU", "HR-8K Overall Acc",
                                                    "HR-8K Overall IoU no-crop=0"]


def test_render_writes_markdown_and_csv_and_cli(dirs, tmp_path, capsys):
    text = render(dirs, tmp_path / "tables", [2, 5])
    assert "### Table 2: Main results" in text and "### Table 5: Noise-crop drop" in text
    assert (tmp_path / "tables" / "table2.md").read_text().startswith("### Table 2")
    with (tmp_path / "tables" / "table5.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:5] == ["Model", "Budget", "HR-8K pred", "HR-8K noise", "HR-8K drop"]
    baseline = dict(zip(rows[0], next(r for r in rows if r[0] == "baseline")))
    assert (baseline["V* pred"], baseline["V* noise"], baseline["V* drop"]) == ("70.0", "68.0", "2.0")
    paper = dict(zip(rows[0], next(r for r in rows if r[0] == "Baseline (paper)")))
    assert paper["V* pred"] == "" and paper["V* drop"] == "3.2"   # cells the paper lacks stay empty
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
