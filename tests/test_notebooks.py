"""analysis/: log readers (CSV, wandb offline), dynamics and crop-substitution helpers, and both notebooks executed
headless on the logs and eval results of a real tiny training run."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from wandb.proto import wandb_internal_pb2

from analysis.dynamics import (final_values, load_metrics, moving_average, parse_runs, plot_dynamics,
                               read_csv_metrics, read_wandb_metrics)
from analysis.substitution import answer_flips, mode_accuracy, result_folders
from analysis.wandb_log import BLOCK, HEADER, read_history

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# Readers on hand-made logs

def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)


def test_csv_versions_of_a_resumed_run_become_one_row_per_grpo_step(tmp_path):
    write_csv(tmp_path / "csv" / "version_0" / "metrics.csv",
              [{"step": 7, "reward/total": 0.5}, {"step": 15, "reward/total": 0.7, "rollout/iou": 0.2}])
    # version_10 sorts after version_2 numerically, not as text; step 15 was logged again after the resume
    write_csv(tmp_path / "csv" / "version_2" / "metrics.csv", [{"step": 15, "reward/total": 0.9},
                                                               {"step": 23, "reward/total": 1.0}])
    write_csv(tmp_path / "csv" / "version_10" / "metrics.csv", [{"step": 31, "reward/total": 2.0, "rollout/iou": 0.6},
                                                                {"step": 31, "train/loss": 3.0}])  # not a step row
    frame = read_csv_metrics(tmp_path)
    assert list(frame.index) == [1, 2, 3, 4] and list(frame["global_step"]) == [7, 15, 23, 31]
    assert list(frame["reward/total"]) == [0.5, 0.9, 1.0, 2.0]  # the later log of step 15 wins
    # last 2 of reward: (1.0 + 2.0) / 2 = 1.5; rollout/iou logged only at step 31 (the resumed step 15 lacks it)
    assert final_values(frame, ["reward/total", "rollout/iou", "rollout/overlap"], last=2) == \
        {"reward/total": 1.5, "rollout/iou": 0.6, "rollout/overlap": None}
    with pytest.raises(FileNotFoundError, match="no wandb offline run"):
        load_metrics(tmp_path, "wandb")


def wandb_file(path: Path, rows: list[dict], pad: int) -> None:
    """A wandb transaction log holding ``rows`` as history records, written in LevelDB log framing with ``pad``
    bytes of filler records first so that the history records straddle a 32 KiB block boundary."""
    def record(**fields) -> bytes:
        message = wandb_internal_pb2.Record(**fields)
        return message.SerializeToString()

    def history(row: dict) -> bytes:
        items = [wandb_internal_pb2.HistoryItem(key=k, value_json=json.dumps(v)) for k, v in row.items()]
        return record(history=wandb_internal_pb2.HistoryRecord(item=items))

    payloads = [record(num=1, output_raw=wandb_internal_pb2.OutputRawRecord(line="x" * pad)), *map(history, rows)]
    data = bytearray(HEADER)
    for payload in payloads:
        first = True
        while True:
            room = BLOCK - len(data) % BLOCK
            if room < 7:
                data += b"\0" * room
                continue
            chunk, payload = payload[:room - 7], payload[room - 7:]
            kind = (1 if first else 4) if not payload else (2 if first else 3)
            data += struct.pack("<IHB", zlib.crc32(chunk, zlib.crc32(bytes([kind]))), len(chunk), kind) + chunk
            first = False
            if not payload:
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def test_wandb_reader_reassembles_records_across_blocks(tmp_path):
    rows = [{"trainer/global_step": s, "reward/total": 0.25 * s, "note": "y" * 20000} for s in range(3)]
    run = tmp_path / "run"
    wandb_file(run / "wandb" / "offline-run-1" / "run-a.wandb", rows, pad=BLOCK - 200)
    path = run / "wandb" / "offline-run-1" / "run-a.wandb"
    assert path.stat().st_size > 2 * BLOCK  # the history records span block boundaries
    assert read_history(path) == rows
    frame = read_wandb_metrics(run)
    assert list(frame["reward/total"]) == [0.0, 0.25, 0.5] and list(frame.index) == [1, 2, 3]
    path.write_bytes(path.read_bytes()[:-5])  # a run still writing: its last record is left out
    assert read_history(path) == rows[:2]
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_history(path)


def test_moving_average_overlay_matches_a_hand_computed_mean():
    frame = pd.DataFrame({"reward/total": [1.0, 3.0, None, 2.0, 6.0, 4.0]}, index=pd.RangeIndex(1, 7, name="grpo_step"))
    # window 3 over the logged values 1, 3, 2, 6, 4 (step 3 not logged): 1, (1+3)/2, (1+3+2)/3, (3+2+6)/3, (2+6+4)/3
    expected = {1: 1.0, 2: 2.0, 4: 2.0, 5: 11 / 3, 6: 4.0}
    assert moving_average(frame["reward/total"], 3).to_dict() == pytest.approx(expected)
    metrics = {"reward/total": "Reward"}
    figure = plot_dynamics({"run": frame}, metrics, smooth=3)
    raw, smoothed = figure.axes[0].get_lines()
    assert list(raw.get_xdata()) == [1, 2, 4, 5, 6] and list(raw.get_ydata()) == [1.0, 3.0, 2.0, 6.0, 4.0]
    assert list(smoothed.get_xdata()) == list(expected)
    assert smoothed.get_ydata() == pytest.approx(list(expected.values()))
    assert smoothed.get_label() == "run (mean of 3)" and smoothed.get_color() == raw.get_color()
    assert len(plot_dynamics({"run": frame}, metrics).axes[0].get_lines()) == 1  # off by default
    with pytest.raises(ValueError, match="window"):
        moving_average(frame["reward/total"], 0)


def test_parse_runs():
    assert parse_runs("Baseline=a/b; Stage I = c ;") == {"Baseline": Path("a/b"), "Stage I": Path("c")}
    assert parse_runs("") == {}
    with pytest.raises(ValueError, match="Name=run folder"):
        parse_runs("just/a/path")


def eval_folder(root: Path, label: str, records: list[dict]) -> Path:
    """A results folder with records (id, mode, correct) and the matching overall metric rows."""
    root.mkdir(parents=True)
    with (root / "records.jsonl").open("w") as handle:
        for r in records:
            handle.write(json.dumps({"key": f"{r['id']}|{r['mode']}|64", "benchmark": "synthetic", "budget": 64,
                                     **r}) + "\n")
    rows = []
    for mode in ("direct", "noise", "pred"):  # deliberately not in paper order
        picked = [r["correct"] for r in records if r["mode"] == mode]
        rows.append({"benchmark": "synthetic", "budget": 64, "mode": mode, "subtask": "overall",
                     "num_questions": len(picked), "accuracy": sum(picked) / len(picked)})
    plan = {"questions": list(dict.fromkeys(r["id"] for r in records)), "modes": ["direct", "noise", "pred"],
            "budgets": [64]}
    (root / "metrics.json").write_text(json.dumps({"label": label, "plan": plan, "rows": rows, "subsets": []}))
    return root


def test_crop_substitution_helpers(tmp_path):
    outcomes = {"q1": (True, True, False), "q2": (True, False, False), "q3": (False, True, True),
                "q4": (False, False, True)}  # (pred, noise, direct) correct?
    records = [{"id": q, "mode": mode, "correct": ok} for q, oks in outcomes.items()
               for mode, ok in zip(("pred", "noise", "direct"), oks)]
    folder = eval_folder(tmp_path / "eval" / "m[x=1]" / "synthetic", "m", records)
    assert result_folders(f"{tmp_path}/eval/*/*") == [folder] == result_folders(str(folder))
    # pred right & noise right: q1; pred right & noise wrong: q2; pred wrong & noise right: q3; both wrong: q4
    assert answer_flips(folder).to_numpy().tolist() == [[1, 1], [1, 1]]
    with (folder / "records.jsonl").open("a") as handle:  # a record of an earlier run on a question since removed
        for mode in ("pred", "noise"):
            handle.write(json.dumps({"key": f"gone|{mode}|64", "id": "gone", "mode": mode, "correct": True,
                                     "benchmark": "synthetic", "budget": 64}) + "\n")
    assert answer_flips(folder).to_numpy().tolist() == [[1, 1], [1, 1]]  # not counted
    frame = mode_accuracy([folder])
    assert list(frame["mode"]) == ["pred", "noise", "direct"]  # paper order
    assert list(frame["accuracy"]) == [50.0, 50.0, 50.0]       # 2 of 4 correct in every mode


# ----------------------------------------------------------------------------------------------------------------
# Both notebooks on a real tiny run

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """A real 2-step smoke training run (CSV + wandb offline logs) and its evaluation in every crop mode."""
    root = tmp_path_factory.mktemp("tiny_run")
    cache = tmp_path_factory.getbasetemp() / "experiments-cache"  # shared with test_experiments' smoke runs
    env = {**os.environ, "WANDB_MODE": "offline", "LFPC_CACHE": str(cache)}
    for args in (["train.py", "size=smoke", "logger=default", "trainer.max_steps=2", f"hydra.run.dir={root / 'run'}"],
                 ["eval.py", "+size/eval=smoke", f"init_from={root / 'run' / 'hf_model'}", "label=tiny",
                  "eval.modes=[pred,gt,noise,direct]", f"hydra.run.dir={root / 'eval' / 'synthetic'}"]):
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"run": root / "run", "eval": root / "eval" / "synthetic", "root": root}


@pytest.mark.slow
def test_csv_and_wandb_logs_of_a_real_run_agree(tiny_run):
    from_csv, from_wandb = read_csv_metrics(tiny_run["run"]), read_wandb_metrics(tiny_run["run"])
    assert list(from_csv.index) == list(from_wandb.index) == [1, 2]
    for key in ("global_step", "reward/total", "rollout/tool_calls", "rollout/response_tokens", "time/rollout"):
        assert from_csv[key].tolist() == pytest.approx(from_wandb[key].tolist()), key


def execute(notebook: str, env: dict[str, str]) -> nbformat.NotebookNode:
    """Run a notebook as Jupyter does: the kernel starts in the notebook's folder (``analysis/``), with the
    environment of the test process plus ``env`` (the notebook's parameters) and without PYTHONPATH."""
    nb = nbformat.read(ROOT / "analysis" / notebook, as_version=4)
    kernel_env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **env}
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "analysis")}}).execute(env=kernel_env)
    return nb


def images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


@pytest.mark.slow
def test_training_dynamics_notebook_writes_figures_5_and_6(tiny_run):
    run, figures = tiny_run["run"], tiny_run["root"] / "figures"
    nb = execute("training_dynamics.ipynb", {
        "LFPC_FIGURE5_RUNS": f"Baseline={run};Stage I={run}", "LFPC_FIGURE6_RUNS": f"with={run};without={run}",
        "LFPC_METRICS_SOURCE": "wandb", "LFPC_FIGURES_DIR": str(figures)})
    assert images(nb) == 2
    for name in ("figure5", "figure6"):
        assert (figures / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        plotted = pd.read_csv(figures / f"{name}.csv")
        # two curves of the same 2-step run: reward and tool calls are logged at every step
        assert len(plotted[plotted["metric"] == "reward/total"]) == 4
        assert set(plotted["grpo_step"]) == {1, 2}


@pytest.mark.slow
def test_crop_substitution_notebook_writes_its_figures(tiny_run):
    figures = tiny_run["root"] / "substitution"
    nb = execute("crop_substitution.ipynb", {"LFPC_EVAL_RESULTS": str(tiny_run["eval"]),
                                             "LFPC_FIGURES_DIR": str(figures)})
    assert images(nb) == 2
    for name in ("crop_substitution", "crop_flips"):
        assert (figures / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    accuracy = mode_accuracy([tiny_run["eval"]])
    assert list(accuracy["mode"]) == ["pred", "gt", "noise", "direct"] and set(accuracy["questions"]) == {2}
    assert int(answer_flips(tiny_run["eval"]).to_numpy().sum()) == 2  # both questions ran in pred and noise
