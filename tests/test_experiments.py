"""experiments/: every table/figure definition composes with Hydra at both sizes (the miniature also at its own),
the plan and the collectors give hand-checked results on fabricated run folders, the miniature's report renders,
and table10 runs end to end at the smoke size."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import definitions
from experiments.collect import collect, cost_table, hyperparameter_table
from experiments.definitions import Definition, TrainStep, load
from experiments.miniature import check_targets, collect_miniature, results_markdown
from experiments.runner import check_outputs, code_version, expand_sweeps, finished, load_manifest, override, plan

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


# evaluations at one budget (the others at 1,024 and 16,384): Table 6 compares the others at 16,384 with ours at
# 1,024 (paper Sec. 6), Table 7 is at 1,024 (paper Sec. 9)
PAPER_BUDGETS = {**{("table6", method): [16384] for method in ("deepeyes", "cof_sft", "pixel_reasoner", "mini_o3")},
                 ("table6", "stage2"): [1024], ("table7", "deepeyes"): [1024]}
# a compared method's checkpoint, prompt preset and turn cap at paper size (conf/model/<label>.yaml)
COMPARED = {"deepeyes": ("/models/DeepEyes-7B", "deepeyes", 10), "cof_sft": ("/models/CoF-sft-model-7b", "cof_sft", 5),
            "pixel_reasoner": ("/models/PixelReasoner-RL-v1", "pixel_reasoner", 4),
            "mini_o3": ("/models/Mini-o3-7B-v1", "mini_o3", 11)}


def composed(config_name: str, overrides: list[str]):
    """The resolved config of one job (``output_dir``/``cache_dir`` set: they need a Hydra run otherwise)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=[*overrides, "output_dir=/tmp/out", "cache_dir=/tmp/cache"])
    return OmegaConf.to_container(cfg, resolve=True)


# ----------------------------------------------------------------------------------------------------------------
# Definitions and plans

def test_every_paper_table_and_figure_has_a_definition():
    assert definitions.names() == [f"table{n}" for n in range(1, 13)] + ["figure5", "figure6", "miniature"]


@pytest.mark.parametrize("name", definitions.names())
def test_definition_composes_at_smoke_and_paper_size(name, tmp_path):
    definition = load(name)
    for size in ("smoke", "paper"):
        commands = plan(definition, size, tmp_path)
        assert commands, f"{name} plans no command at size {size}"
        for command in commands:
            for job in command.jobs:
                cfg = composed(command.config_name, list(job.overrides))
                if command.kind == "select":  # the offline selection of a job that trains on it
                    assert cfg["resolution"]["strategy"] == "answer_divergence"
                elif command.kind == "train" and size == "smoke":  # the embedded default, cut to one GRPO step
                    assert cfg["model"]["build_tiny"] and cfg["trainer"]["max_steps"] == 1
                    assert cfg["grpo"]["group_size"] == 2 and not cfg["logger"]["wandb"]
                elif command.kind == "train":  # paper Sec. 4: 8 GPUs, 16 rollouts x 256 prompts (32 per rank)
                    assert cfg["trainer"]["devices"] == 8 and cfg["grpo"]["group_size"] == 16
                    assert cfg["grpo"]["prompts_per_step"] == 256 and cfg["grpo"]["mini_batch_size"] == 32 * 16
                    assert cfg["data"]["path"].endswith(".jsonl") or cfg["data"]["kind"] == "mix"
                elif size == "smoke":
                    assert cfg["benchmark"]["name"] == "synthetic" and cfg["eval"]["limit"] == 2
                else:
                    assert not cfg["model"]["build_tiny"]
                    assert cfg["eval"]["budgets"] == PAPER_BUDGETS.get((name, job.label), [1024, 16384])
                if command.kind == "eval" and name == "table6":  # time per question: one question at a time
                    assert cfg["eval"]["batch_size"] == 1
                if command.kind == "eval" and size == "paper" and job.label in COMPARED:  # its own prompt
                    assert (cfg["model"]["path"], cfg["episode"]["prompt"], cfg["episode"]["max_turns"]) == \
                        COMPARED[job.label]
                elif command.kind == "eval":
                    assert cfg["episode"]["prompt"] == "lfpc"
                if command.kind == "eval":
                    assert cfg["label"] == job.label


def test_miniature_composes_at_its_mini_size(tmp_path):
    definition = load("miniature")
    assert definition.size == "mini" and definition.report == "RESULTS.md"
    commands = plan(definition, definition.size, tmp_path, python="python")
    table10 = [f"table10[reward={reward}]" for reward in ("iou", "iou_nothresh", "none")]
    assert [(c.kind, c.name) for c in commands] == [
        ("train", "baseline"), ("train", "stage1"), ("train", "stage2"), ("train", "table10"),
        ("eval", "baseline"), ("eval", "stage1"), ("eval", "stage2"), *(("eval", label) for label in table10)]
    stages = []
    for command in commands[:4]:
        for job in command.jobs:
            cfg = composed("config", list(job.overrides))
            # the shipped mini model (composing does not need it on disk), 100 GRPO steps per stage (40 for each
            # reward of Table 10), CSV logs only
            assert cfg["model"]["path"].endswith("models/mini") and not cfg["model"]["build_tiny"]
            assert cfg["data"]["task"] == "patterns" and cfg["grpo"]["group_size"] == 8
            assert cfg["trainer"]["max_steps"] == (40 if command.name == "table10" else 100)
            assert cfg["logger"] == {"csv": True, "wandb": False}
            stages.append((cfg["stage"], cfg["resolution"]["strategy"], cfg["reward"]["iou_mode"],
                           cfg["reward"]["use_l1"], cfg["init_from"]))
    from_stage1 = str(tmp_path / "train/stage1/hf_model")
    assert stages == [("baseline", "original", "none", False, None),
                      ("infogap", "answer_divergence", "none", False, None),
                      ("grounding", "original", "thresh", True, from_stage1),  # the paper's full reward (Table 4)
                      ("grounding", "original", "thresh", False, from_stage1),  # Table 10's three rewards
                      ("grounding", "original", "nothresh", False, from_stage1),
                      ("grounding", "original", "none", False, from_stage1)]
    for command in commands[4:]:
        [job] = command.jobs
        cfg = composed("eval", list(job.overrides))
        folder = command.name.replace("[", "/").rstrip("]")  # a sweep job: train/<step>/<its overrides>
        assert cfg["label"] == command.name and cfg["init_from"] == str(tmp_path / f"train/{folder}/hf_model")
        assert cfg["benchmark"]["name"] == "patterns" and cfg["eval"]["budgets"] == [16, 256]
        modes = ["pred"] if command.name in table10 else ["pred", "gt", "noise", "direct"]
        assert cfg["eval"]["modes"] == modes and cfg["eval"]["limit"] is None
        assert cfg["model"]["path"].endswith("models/mini")


def test_size_paper_picks_each_stages_data():
    assert composed("config", ["size=paper", "+stage=infogap"])["data"]["path"] == "/data/lfpc/stage1.jsonl"
    assert composed("config", ["size=paper", "+stage=grounding"])["data"]["path"] == \
        "/data/lfpc/stage2_grounding.jsonl"


def test_experiment_config_fixes_the_stage_and_the_sweep_varies_the_reward():
    cfg = composed("config", ["experiment=table10", "reward=iou_nothresh"])
    assert cfg["stage"] == "grounding" and cfg["lr_scale"] == 0.5 and cfg["reward"]["iou_mode"] == "nothresh"
    assert composed("config", ["experiment=table10"])["reward"]["use_l1"]  # Stage II default: iou_l1


def test_expand_sweeps_follows_hydra_job_order_and_names():
    jobs = expand_sweeps(["size=smoke", "reward=a,b", "+stage=x,y"])
    # product in override order; folder = sorted swept overrides joined by "," ("+" sorts before "r")
    assert jobs == [("+stage=x,reward=a", ("size=smoke", "reward=a", "+stage=x")),
                    ("+stage=y,reward=a", ("size=smoke", "reward=a", "+stage=y")),
                    ("+stage=x,reward=b", ("size=smoke", "reward=b", "+stage=x")),
                    ("+stage=y,reward=b", ("size=smoke", "reward=b", "+stage=y"))]
    assert expand_sweeps(["size=smoke", "+stage=infogap"]) == [(None, ("size=smoke", "+stage=infogap"))]


def test_table10_plan(tmp_path):
    commands = plan(load("table10"), "smoke", tmp_path, python="python")
    assert [(c.kind, c.name) for c in commands] == [
        ("train", "stage1"), ("train", "stage2"), ("eval", "stage2[reward=iou]"),
        ("eval", "stage2[reward=iou_nothresh]"), ("eval", "stage2[reward=none]")]
    stage2 = commands[1]
    assert stage2.argv[:6] == ("python", "train.py", "-m", "size=smoke", "experiment=table10",
                               "reward=iou,iou_nothresh,none")
    assert f"init_from={tmp_path}/train/stage1/hf_model" in stage2.argv
    assert "hydra.job.config.override_dirname.exclude_keys=[experiment,init_from,size]" in stage2.argv
    assert [j.dir for j in stage2.jobs] == [tmp_path / "train" / "stage2" / f"reward={r}"
                                            for r in ("iou", "iou_nothresh", "none")]
    evaluation = commands[2]
    assert "label='stage2[reward=iou]'" in evaluation.argv and "benchmark=synthetic" in evaluation.argv
    assert f"init_from='{tmp_path}/train/stage2/reward=iou/hf_model'" in evaluation.argv
    assert [j.dir for j in evaluation.jobs] == [tmp_path / "eval" / "stage2[reward=iou]" / "synthetic"]


def test_paper_size_goes_to_slurm_and_the_paper_benchmarks(tmp_path):
    commands = plan(load("table1"), "paper", tmp_path)
    benchmarks = ["benchmark=vstar", "benchmark=hrbench_4k,hrbench_8k"]
    assert [c.argv[c.argv.index("-m") + 2] for c in commands] == benchmarks * 2  # DeepEyes, then CoF-sft
    assert all("hydra/launcher=slurm_1gpu" in c.argv for c in commands)
    train = [c for c in plan(load("table9"), "paper", tmp_path) if c.kind == "train"]
    assert all("hydra/launcher=slurm_8gpu" in c.argv for c in train)
    assert len(plan(load("table1"), "smoke", tmp_path)) == 2  # smoke has no benchmark without GT boxes
    assert not any("launcher" in a for c in plan(load("table9"), "paper", tmp_path, launcher="local") for a in c.argv)


def test_override_quotes_only_what_hydra_cannot_parse():
    assert override("init_from", "/a/b-c_d.1/hf_model") == "init_from=/a/b-c_d.1/hf_model"
    assert override("label", "stage2[reward=iou]") == "label='stage2[reward=iou]'"
    with pytest.raises(ValueError, match="quote"):
        override("label", "it's")


def test_bad_definitions_fail_with_the_file_and_the_reason(tmp_path):
    (tmp_path / "unknown.yaml").write_text("title: t\ncollector: eval\ntrain: [{name: a, override: [x=1]}]\n")
    with pytest.raises(ValueError, match=r"unknown.yaml: train\[0\]: unknown keys \['override'\]"):
        load("unknown", tmp_path)
    (tmp_path / "dangling.yaml").write_text("title: t\ncollector: eval\neval: [{of: nope}]\n")
    with pytest.raises(ValueError, match="'of: nope' names no train step"):
        load("dangling", tmp_path)
    (tmp_path / "ref.yaml").write_text("title: t\ncollector: eval\ntrain:\n  - {name: a, overrides: ['reward=x,y']}\n"
                                       "  - {name: b, overrides: ['init_from={run:a}/hf_model']}\n")
    with pytest.raises(ValueError, match=r"\{run:a\} must name an earlier train step with a single job"):
        plan(load("ref", tmp_path), "smoke", tmp_path)
    with pytest.raises(ValueError, match="no experiment definition 'missing'"):
        load("missing", tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# Collectors on fabricated run folders

def write_job(folder: Path, overrides: list[str], rows: list[dict], num: int = 0) -> Path:
    """A training job folder: the real composed config, a hydra.yaml with the job number, metrics.csv rows."""
    (folder / ".hydra").mkdir(parents=True)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose("config", overrides=overrides)))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    (folder / "csv" / "version_0").mkdir(parents=True)
    keys = sorted({k for row in rows for k in row})
    with (folder / "csv" / "version_0" / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "summary.json").write_text("{}")
    return folder


def write_eval(folder: Path, label: str, accuracy: float, last_iou: float | None) -> None:
    folder.mkdir(parents=True)
    row = {"benchmark": "synthetic", "budget": 64, "mode": "pred", "subtask": "overall", "num_questions": 4,
           "accuracy": accuracy, "first_iou": last_iou, "last_iou": last_iou, "first_coverage": None,
           "last_coverage": None, "tool_calls": 1.0, "crops": 1.0, "visual_tokens": 80.0, "time_s": 0.5}
    (folder / "metrics.json").write_text(json.dumps({"label": label, "rows": [row], "subsets": []}))


def markdown_headers(text: str) -> list[str]:
    return [c.strip() for c in next(line for line in text.splitlines() if line.startswith("| ")).strip("|").split("|")]


def markdown_rows(text: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_ablation_table_from_fabricated_runs(tmp_path):
    runs = tmp_path / "runs"
    write_job(runs / "train" / "stage1", ["+stage=infogap"], [{"step": 0, "reward/total": 0.5}])
    # written out of sweep order: rows must follow the job numbers (iou, iou_nothresh, none)
    for num, reward in [(2, "none"), (0, "iou"), (1, "iou_nothresh")]:
        rows = [{"step": s, "reward/total": s + num, "rollout/iou": (0.2 if s == 4 else 0.4 if s == 5 else "")}
                for s in range(6)]
        write_job(runs / "train" / "stage2" / f"reward={reward}", ["experiment=table10", f"reward={reward}"], rows,
                  num)
        write_eval(runs / "eval" / f"stage2[reward={reward}]" / "synthetic", f"stage2[reward={reward}]",
                   accuracy=0.25 * (num + 1), last_iou=None if reward == "none" else 0.125)
    text = collect(load("table10"), runs)
    assert (runs / "results" / "table10.md").read_text().strip() == text.strip()
    table, headers = markdown_rows(text), markdown_headers(text)
    # our rows in sweep order; the paper's rows (Table 10, 1,024 tokens) follow: no row of ours at that budget
    assert list(table) == ["stage2[reward=iou]", "stage2[reward=iou_nothresh]", "stage2[reward=none]",
                           "IoU Reward (paper)", "- IoU Thresh (paper)", "- IoU Reward (paper)"]
    # the paper's Table 10 columns (HR-Bench 8K only), then the benchmarks found (synthetic), then training metrics
    assert headers[:7] == ["Model", "Budget", "HR-8K FSP Acc", "HR-8K FSP IoU", "HR-8K FCP Acc", "HR-8K FCP IoU",
                           "HR-8K Overall Acc"]
    # reward=iou (num 0): reward/total = step -> last 5 steps 1..5, mean 3; rollout/iou logged at steps 4, 5:
    # (0.2 + 0.4) / 2 = 0.3; accuracy 0.25 -> 25.0 %
    iou = dict(zip(headers[1:], table["stage2[reward=iou]"]))
    assert (iou["Budget"], iou["Synthetic Overall Acc"], iou["train reward/total"], iou["train rollout/iou"],
            iou["train reward/iou"]) == ("64", "25.0", "3.000", "0.300", "–")
    # reward=none (num 2): reward/total = step + 2 -> mean 5; accuracy 0.75
    none = dict(zip(headers[1:], table["stage2[reward=none]"]))
    assert (none["Synthetic Overall Acc"], none["train reward/total"]) == ("75.0", "5.000")
    paper = dict(zip(headers[1:], table["- IoU Thresh (paper)"]))
    assert (paper["Budget"], paper["HR-8K FCP IoU"], paper["Synthetic Overall Acc"]) == ("1024", "39.0", "?")
    with open(runs / "results" / "table10.csv") as handle:
        assert next(csv.reader(handle))[:3] == ["Model", "Budget", "HR-8K FSP Acc"]


def test_eval_tables_are_rendered_by_lfpc_evaluation_tables(tmp_path):
    runs = tmp_path / "runs"
    for step, accuracy in (("baseline", 0.25), ("stage1", 0.5), ("stage2", 0.75)):
        write_job(runs / "train" / step, [f"+stage={'baseline' if step == 'baseline' else 'infogap'}"], [{"step": 0}])
        write_eval(runs / "eval" / step / "synthetic", step, accuracy, 0.5)
    text = collect(load("table3"), runs, tmp_path / "tables")
    table, headers = markdown_rows(text), markdown_headers(text)
    stage1, stage2 = (dict(zip(headers[1:], table[label])) for label in ("stage1", "stage2"))
    assert (stage1["Synthetic Overall Acc"], stage2["Synthetic Overall Acc"]) == ("50.0", "75.0")
    assert table["Stage-II (paper)"][:3] == ["1024", "83.3", "34.5"]      # paper Table 3, IoU x100
    assert (tmp_path / "tables" / "table3.csv").is_file()
    with pytest.raises(FileNotFoundError, match="no eval results of table1"):
        collect(load("table1"), runs)


def test_cost_and_hyperparameters_from_fabricated_runs(tmp_path):
    definition = Definition("table11", "Training cost", "cost", train=(TrainStep("stage1"),))
    steps = [{"step": s, "reward/total": 0.0, "time/sync": 1.0, "time/rollout": 6.0, "time/update": 3.0}
             for s in (7, 15)]
    job = write_job(tmp_path / "train" / "stage1", ["size=paper", "+stage=grounding"], steps)
    start = 1_700_000_000
    os.utime(job / ".hydra" / "config.yaml", (start, start))
    os.utime(job / "summary.json", (start + 7200, start + 7200))
    # the job's own call found the manifest complete (seconds 0); computing it took 900 s on one device
    (job / "resolution_stats.json").write_text(json.dumps({"seconds": 0.0, "total_seconds": 900.0, "devices": 1,
                                                           "cached": 10, "never_diverged": 5, "total": 10,
                                                           "never_diverged_fraction": 0.5,
                                                           "never_diverged_policy": "hardest"}))
    cost = {row[0]: row[1:] for row in cost_table(dataclasses.replace(definition, paper=load("table11").paper),
                                                  tmp_path).rows}
    # 8 GPUs; 2 GRPO steps of 1 + 6 + 3 = 10 s, rollout 6/10 = 60 %; wall 7200 s = 2 h; 2 h x 8 = 16 GPU-hours
    assert cost["stage1"] == ["gpu", "8", "2", "10.00", "60.0", "2.00", "16.00"]
    # its offline resolution selection took 900 s on one GPU: 0.25 h, 0.25 GPU-hours (paper Table 11: 2.5)
    assert cost["stage1: resolution selection"] == ["gpu", "1", "–", "–", "–", "0.25", "0.25"]
    assert cost["Offline Res. Selection (paper)"][-1] == "2.50" and cost["Stage-I (paper)"][-1] == "320.00"
    assert cost["DeepEyes (paper)"][-1] == "480.00" and cost["Total (paper)"][-1] == "418.50"  # no run of theirs

    table = hyperparameter_table(Definition("table12", "Hyper-parameters", "hyperparameters",
                                            train=(TrainStep("stage1"),),
                                            paper_columns={"Paper": {"learning rate": 5e-7}}), tmp_path)
    values = {row[0]: row[1:] for row in table.rows}
    # grpo=paper per rank: 32 prompts, mini-batch 64 trajectories of 16 rollouts, lr 1e-6 x Stage II lr_scale 0.5
    assert values["prompts / step"] == ["256", "?"]                  # 32 x 8
    assert values["PPO mini-batch (prompts)"] == ["32", "?"]         # 64 x 8 / 16
    assert values["learning rate"] == ["5e-07", "5e-07"]
    assert values["grounding reward"] == ["thresh + L1", "?"] and values["devices"] == ["8", "?"]
    # the per-turn cap is Table 12's "single response max tokens"; the episode cap is a row of its own
    assert values["max tokens / turn"] == ["2048", "?"] and values["max response tokens / episode"] == ["20480", "?"]
    assert values["dual-clip c"] == ["3", "?"]  # verl's clip_ratio_c, always on in DeepEyes' framework
    paper = {row[0]: row[-2:] for row in hyperparameter_table(load("table12"), tmp_path / "none").rows}
    assert paper["max tokens / turn"] == ["2048", "2048"] and paper["max response tokens / episode"] == ["?", "?"]


def test_figure_collector_plots_the_named_runs(tmp_path):
    definition = Definition("figure5", "Dynamics", "figure", train=(TrainStep("a"), TrainStep("b")),
                            groups={"A": "a", "B": "b"})
    write_job(tmp_path / "train" / "a", [], [{"step": s, "reward/total": s, "rollout/iou": 0.5} for s in range(3)])
    write_job(tmp_path / "train" / "b", [], [{"step": s, "reward/total": 1.0} for s in range(2)])
    collect(definition, tmp_path)
    png = tmp_path / "results" / "figure5.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(png.with_suffix(".csv")) as handle:
        plotted = list(csv.DictReader(handle))
    # run a: 3 steps of reward + 3 of rollout/iou; run b: 2 steps of reward
    assert len(plotted) == 8 and {r["metric"] for r in plotted if r["run"] == "B"} == {"reward/total"}


# ----------------------------------------------------------------------------------------------------------------
# The paper in miniature: collector on fabricated runs, report renderer on a fabricated summary

def budget_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """A markdown table's body rows keyed by (model, budget), its first two cells."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return {(cells[0], cells[1]): cells[2:] for cells in rows[1:]}


def write_records(folder: Path, label: str, by_budget: dict[int, dict[str, list]]) -> None:
    """An eval results folder: metrics.json (the label) and records.jsonl, per budget ``{"pred": [correct...],
    "noise": [correct...], "iou": [last IoU of the pred crop or None...]}`` over questions q0, q1, ..."""
    folder.mkdir(parents=True)
    questions = [f"q{i}" for i in range(max(len(m["pred"]) for m in by_budget.values()))]
    plan = {"questions": questions, "modes": ["pred", "noise"], "budgets": list(by_budget)}
    (folder / "metrics.json").write_text(json.dumps({"label": label, "plan": plan, "rows": [], "subsets": []}))
    lines = []
    for budget, modes in by_budget.items():
        for mode in ("pred", "noise"):
            for i, correct in enumerate(modes[mode]):
                iou = modes["iou"][i] if mode == "pred" else None
                lines.append({"key": f"q{i}|{mode}|{budget}", "id": f"q{i}", "benchmark": "patterns", "mode": mode,
                              "budget": budget, "correct": bool(correct), "last_iou": iou,
                              "options": ["red", "green", "blue", "grey"]})
    (folder / "records.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_miniature_collector_tables_targets_and_figures_from_fabricated_runs(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    for step, stage in (("baseline", "baseline"), ("stage1", "infogap"), ("stage2", "grounding")):
        # Stage II's crops shrink (area 0.4 -> 0.1 by quarters of 8 steps) while B1 coverage falls 0.9 -> 0.88
        write_job(runs / "train" / step, [f"+stage={stage}"],
                  [{"step": s, "reward/total": s / 4, "reward/acc": s / 8, "rollout/tool_calls": 1.0,
                    "rollout/iou": 0.25, "time/rollout": 10.0,
                    "rollout/bbox_ratio": 0.4 - 0.1 * (s // 2), "rollout/overlap": 0.9 - 0.01 * (s // 3)}
                   for s in range(8)])
    # Table 10: IoU 0.3 > 0.2 > 0.1 holds; accuracy 2/4, 3/4, 1/4: conditional > unconditional does not
    for num, (reward, correct, iou) in enumerate([("iou", [1, 1, 0, 0], 0.3), ("iou_nothresh", [1, 1, 1, 0], 0.2),
                                                  ("none", [1, 0, 0, 0], 0.1)]):
        write_job(runs / "train" / "table10" / f"reward={reward}", ["experiment=table10", f"reward={reward}"],
                  [{"step": 0, "reward/total": 1.0}], num)
        label = f"table10[reward={reward}]"
        write_records(runs / "eval" / label / "patterns", label,
                      {16: {"pred": correct, "noise": correct, "iou": [iou] * 4}})
    # 4 questions; at 16 tokens: baseline right on 1 (noise too), Stage I on 3 (noise on 1), Stage II on all 4
    low = {"baseline": {"pred": [1, 0, 0, 0], "noise": [1, 0, 0, 0], "iou": [0.5, None, 0.5, 0.5]},
           "stage1": {"pred": [1, 1, 1, 0], "noise": [0, 0, 1, 0], "iou": [0.2] * 4},
           "stage2": {"pred": [1, 1, 1, 1], "noise": [1, 1, 1, 1], "iou": [0.22] * 4}}
    high = {"pred": [1, 1, 1, 1], "noise": [1, 1, 1, 1], "iou": [None] * 4}
    for label, modes in low.items():
        write_records(runs / "eval" / label / "patterns", label, {16: modes, 256: high})
    report = ROOT / "RESULTS.md"
    before = report.stat().st_mtime_ns if report.exists() else None
    text = collect_miniature(load("miniature"), runs, out)

    table3 = budget_rows((out / "table3.md").read_text())  # (model, budget): N, Acc, IoU x100, N cropped
    # baseline right on 1 of 4: a resampled accuracy is 0 with probability (3/4)^4 = 32%, >= 3/4 with 5.1%, 1 with
    # 0.4%, so the 2.5th / 97.5th percentiles are 0 and 75; all-equal values (IoU 0.5 on its 3 cropped questions,
    # Stage I's IoU, Stage II's accuracy) give zero-width intervals; no crop at 256 tokens: no IoU
    assert table3[("Baseline", "16")] == ["4", "25.0 [0.0, 75.0]", "50.0 [50.0, 50.0]", "3"]
    assert table3[("Stage I", "16")][2:] == ["20.0 [20.0, 20.0]", "4"]
    assert table3[("Stage II", "16")][1] == "100.0 [100.0, 100.0]" and table3[("Stage II", "256")][2:] == ["–", "0"]
    summary = json.loads((out / "miniature.json").read_text())
    [stage1_low, _] = summary["models"][1]["rows"]
    table10 = budget_rows((out / "table10.md").read_text())  # (model, budget): Acc, IoU x100, N cropped
    assert list(table10) == [("Stage II, conditional IoU", "16"), ("Stage II, IoU without threshold", "16"),
                             ("Stage II, no IoU reward", "16")]
    assert table10[("Stage II, IoU without threshold", "16")] == ["75.0 [25.0, 100.0]", "20.0 [20.0, 20.0]", "4"]
    assert ("Stage II, conditional IoU", "16") not in budget_rows((out / "table3.md").read_text())
    # first / last quarter (2 of 8 steps): area 0.4 -> 0.1, coverage 0.9 -> 0.88
    assert summary["dynamics"]["stage2"]["rollout/bbox_ratio"] == pytest.approx([0.4, 0.1])
    assert summary["dynamics"]["stage2"]["rollout/overlap"] == pytest.approx([0.9, 0.88])
    assert stage1_low["budget"] == 16 and stage1_low["drop"]["value"] == pytest.approx(50.0)  # 75 - 25, paired
    assert stage1_low["drop"]["low"] <= 50.0 <= stage1_low["drop"]["high"]
    assert budget_rows((out / "table5.md").read_text())[("Stage II", "16")][2] == "0.0 [0.0, 0.0]"
    # targets at 16 tokens: +50 points (>= 10) MET; drop 50 >= max(10, 2 x 0) MET; IoU 22 - 20 = +2 < 10 NOT MET;
    # Stage I right on 3 of 4: a resample is <= 1/4 right with probability 4 (3/4)(1/4)^3 + (1/4)^4 = 5.1% > 2.5%,
    # so its interval starts at 25.0, not above chance (1/4 with four options) -> NOT MET
    assert stage1_low["chance"] == pytest.approx(25.0) and stage1_low["acc"]["pred"]["low"] == pytest.approx(25.0)
    # at 256 tokens both are right on all: Stage I loses 0 points (<= 5) MET; Table 10: accuracy 50 < 75 NOT MET;
    # Figure 6: area falls, coverage falls 0.02 <= 0.05 MET
    assert [t.status for t in check_targets(summary)] == ["MET", "MET", "NOT MET", "NOT MET", "MET", "NOT MET", "MET"]
    assert "NOT MET      Stage II IoU at 16 tokens >= Stage I + 10 points" in text
    assert "conditional IoU > IoU without threshold: holds; IoU without threshold > no IoU reward: holds)" in text
    assert "conditional IoU > IoU without threshold: no; IoU without threshold > no IoU reward: holds)" in text
    assert "crop area / image area 0.400 -> 0.100; B1 coverage 0.900 -> 0.880" in text
    for name in ("figure5", "figure6"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "figure6.csv") as handle:
        assert {(r["run"], r["metric"]) for r in csv.DictReader(handle)} >= {("Stage II", "reward/acc"),
                                                                            ("Stage I", "rollout/iou")}
    assert summary["runs"][0] == {"label": "baseline", "grpo_steps": 8, "step_s": 10.0}
    # no manifest of mini-size runs: the report stays in the results folder, the repository's RESULTS.md untouched
    assert (out / "RESULTS.md").read_text().startswith("# The paper in miniature")
    assert (report.stat().st_mtime_ns if report.exists() else None) == before
    assert summary["command"] == f"python -m experiments run miniature --out {runs}"


def test_miniature_report_renders_a_fabricated_summary(tmp_path):
    def cell(value: float, half: float = 5.0) -> dict:
        return {"value": value, "low": value - half, "high": value + half}

    def row(budget: int, acc: float, noise: float, iou: float | None) -> dict:
        return {"benchmark": "patterns", "budget": budget, "n": 200, "iou_n": 150,
                "acc": {"pred": cell(acc), "gt": cell(90.0), "noise": cell(noise), "direct": None},
                "iou": None if iou is None else cell(iou), "drop": cell(acc - noise, 4.0)}

    models = [("baseline", "Baseline", 40.0, 38.0, 30.0), ("stage1", "Stage I", 55.0, 30.0, 25.0),
              ("stage2", "Stage II", 54.0, 29.0, 33.0)]
    summary = {
        "title": "The paper in miniature", "benchmark": "patterns", "n": 200, "budgets": [16, 256],
        "resamples": 2000, "level": 0.95, "seed": 0,
        "models": [{"label": label, "name": name, "rows": [row(16, acc, noise, iou), row(256, 90.0, 88.0, None)]}
                   for label, name, acc, noise, iou in models],
        "figures": {"figure5": {"title": "Figure 5 (miniature)", "png": str(tmp_path / "r" / "figure5.png"),
                                "csv": str(tmp_path / "r" / "figure5.csv")}},
        "runs": [{"label": "stage1", "grpo_steps": 40, "step_s": 12.5}],
        "commands": [{"kind": "train", "name": "stage1", "wall_s": 600.0}, {"kind": "eval", "name": "stage1",
                                                                           "wall_s": 300.0}],
        "command": "python -m experiments run miniature", "machine": "2 CPU cores (nproc), Test CPU",
        "date": "2026-01-02", "code": "8ce60e0",
    }
    text = results_markdown(summary, base=tmp_path)
    assert "* Command: `python -m experiments run miniature`" in text
    assert "* Machine: 2 CPU cores (nproc), Test CPU" in text and "* Date: 2026-01-02" in text
    assert "* Code: 8ce60e0" in text
    assert "* Wall time of the runs: 15.0 min" in text                    # 600 s + 300 s
    # Stage I +15 points (>= 10); drop 25 >= max(10, 2 x 2); Stage II IoU +8 (< 10) and accuracy 54 < 55
    assert "* **MET** Stage I accuracy at 16 tokens >= baseline + 10 points (Table 3): Stage I 55.0 [50.0, 60.0] " \
           "vs Baseline 40.0 [35.0, 45.0]: +15.0 points" in text
    assert "* **MET** Stage I noise drop at 16 tokens" in text and "needs >= 10.0" in text
    assert "* **NOT MET** Stage II IoU at 16 tokens" in text and "accuracy Stage II 54.0 [49.0, 59.0] vs " \
           "Stage I 55.0 [50.0, 60.0]: -1.0" in text
    assert "| Stage I | 16 | 200 | 55.0 [50.0, 60.0] | 25.0 [20.0, 30.0] | 150 |" in text   # Table 3
    assert "| Stage I | 16 | 55.0 [50.0, 60.0] | 30.0 [25.0, 35.0] | 25.0 [21.0, 29.0] |" in text  # Table 5
    assert "| Baseline | 256 | 90.0 [85.0, 95.0] | 90.0 [85.0, 95.0] | 88.0 [83.0, 93.0] | – |" in text  # Table 1
    assert "![figure5](r/figure5.png)" in text and "`r/figure5.csv`" in text
    assert "| stage1 | 40 | 12.50 |" in text and "| train stage1 | 10.0 |" in text


def test_each_command_records_the_commit_of_its_code(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    assert code_version(tmp_path) == "unknown (not a git checkout)"
    git("init", "-q")
    (tmp_path / "train.py").write_text("print(1)\n")
    git("add", "train.py")
    git("commit", "-q", "-m", "first")
    commit = git("log", "-1", "--format=%h")
    assert len(commit) >= 7 and code_version(tmp_path) == commit
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert code_version(tmp_path) == commit
    (tmp_path / "train.py").write_text("print(2)\n")
    assert code_version(tmp_path) == f"{commit} + uncommitted changes"


def test_a_collapsed_run_is_refused_as_an_input_of_later_steps(tmp_path):
    stage1 = plan(load("table10"), "smoke", tmp_path, python="python")[0]
    stage1.jobs[0].dir.mkdir(parents=True)
    summary = stage1.jobs[0].dir / "summary.json"
    summary.write_text(json.dumps({"grpo_steps": 1}))
    check_outputs(stage1)
    summary.write_text(json.dumps({"grpo_steps": 1, "stopped_on_alarm": "collapse alarm at GRPO step 1: ..."}))
    with pytest.raises(RuntimeError, match=r"was stopped on a collapse alarm at GRPO step 1: \.\.\.; its model is not"):
        check_outputs(stage1)


def test_a_manifest_entry_without_status_is_rerun_and_a_garbled_manifest_is_named(tmp_path):
    command = plan(load("table10"), "smoke", tmp_path, python="python")[0]
    entry = {"kind": "train", "name": "stage1", "argv": list(command.argv)}  # what a Ctrl-C left before the fix
    (tmp_path / "manifest.json").write_text(json.dumps({"commands": [entry, "junk"]}))
    assert not finished(load_manifest(tmp_path), command)
    (tmp_path / "manifest.json").write_text(json.dumps({"commands": [{**entry, "status": "ok"}]}))
    assert not finished(load_manifest(tmp_path), command)  # recorded, but its run folder is gone: run it again
    command.jobs[0].dir.mkdir(parents=True)
    (command.jobs[0].dir / "summary.json").write_text(json.dumps({"grpo_steps": 1}))
    assert finished(load_manifest(tmp_path), command)
    (tmp_path / "manifest.json").write_text('{"commands": [')
    with pytest.raises(ValueError, match=rf"{tmp_path / 'manifest.json'}: not a JSON manifest"):
        load_manifest(tmp_path)


@pytest.mark.slow
def test_ctrl_c_records_the_command_as_interrupted_and_a_rerun_runs_it_again(tmp_path):
    out = tmp_path / "table10"
    log = out / "logs" / "01-train-stage1.log"

    def interrupt_the_first_command() -> str:
        proc = subprocess.Popen([sys.executable, "-m", "experiments", "run", "table10", "--size", "smoke", "--out",
                                 str(out)], cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not log.exists():  # the runner started train stage1
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode != 0 and "KeyboardInterrupt" in stderr, stderr[-3000:]
        return stdout

    assert "[1/5] train stage1: running" in interrupt_the_first_command()
    entries = load_manifest(out)["commands"]
    assert [(e["name"], e["status"]) for e in entries] == [("stage1", "interrupted")]
    log.unlink()
    assert "[1/5] train stage1: running" in interrupt_the_first_command()  # rerun: KeyError 'status' before the fix
    assert [(e["name"], e["status"]) for e in load_manifest(out)["commands"]] == [("stage1", "interrupted")]
    assert not list(out.glob(".manifest.json.*"))  # the temporary file of the atomic write is gone


# ----------------------------------------------------------------------------------------------------------------
# End to end: table10 at the smoke size, as a user runs it

@pytest.mark.slow
def test_table10_smoke_runs_end_to_end_and_resumes(tmp_path_factory, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline",
           "LFPC_CACHE": str(tmp_path_factory.getbasetemp() / "experiments-cache")}  # shared with test_notebooks

    def cli(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "experiments", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    out = tmp_path / "table10"
    cli("run", "table10", "--size", "smoke", "--out", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["status"] for c in manifest["commands"]] == ["ok"] * 5
    assert {c["code"] for c in manifest["commands"]} == {code_version()}
    for reward, mode in (("iou", "thresh"), ("iou_nothresh", "nothresh"), ("none", "none")):
        job = out / "train" / "stage2" / f"reward={reward}"  # Hydra named the job folders as planned
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["reward"]["iou_mode"] == mode and config["init_from"] == str(out / "train/stage1/hf_model")
        assert json.loads((job / "summary.json").read_text())["grpo_steps"] == 1

    text = cli("collect", "table10", str(out))
    table, headers = markdown_rows(text), markdown_headers(text)
    for reward in ("iou", "iou_nothresh", "none"):
        row = dict(zip(headers[1:], table[f"stage2[reward={reward}]"]))
        assert row["Budget"] == "64"                        # evaluated at the synthetic budget
        assert row["Synthetic Overall Acc"] != "–"          # accuracy measured
    hyper = markdown_rows(cli("collect", "table12", str(out)))
    assert hyper["GRPO steps"][:4] == ["1"] * 4 and hyper["stage"][:2] == ["infogap", "grounding"]
    assert set(markdown_rows(cli("collect", "table11", str(out)))) >= {"stage1", "stage2[reward=none]"}

    assert cli("run", "table10", "--out", str(out)).count("done before, skipped") == 5


def test_table9_and_table11_report_the_never_diverged_share_of_the_selection(tmp_path):
    runs = tmp_path / "runs"
    jobs = [("stage1", "resolution=hard", None), ("stage1", "resolution=answer_divergence", (22, 100, "hardest")),
            ("stage1_never_diverged", "resolution.never_diverged=drop", (22, 100, "drop"))]
    for num, (step, sweep, stats) in enumerate(jobs):
        overrides = ["experiment=table9", *(["resolution=answer_divergence"] if stats else []), sweep]
        job = write_job(runs / "train" / step / sweep, overrides, [{"step": 0, "reward/total": 0.5}], num)
        if stats:
            (job / "resolution_stats.json").write_text(json.dumps(
                {"seconds": 60.0, "never_diverged": stats[0], "total": stats[1],
                 "never_diverged_fraction": stats[0] / stats[1], "never_diverged_policy": stats[2]}))
        write_eval(runs / "eval" / f"{step}[{sweep}]" / "synthetic", f"{step}[{sweep}]", 0.5, None)
    text = collect(load("table9"), runs)
    table, headers = markdown_rows(text), markdown_headers(text)
    share = headers[1:].index("never diverged (%)")
    assert table["stage1[resolution=answer_divergence]"][share] == "22.0"        # 22 of 100 samples
    assert table["stage1_never_diverged[resolution.never_diverged=drop]"][share] == "22.0"
    assert table["stage1[resolution=hard]"][share] == "–"                         # no selection ran
    assert "resolution.never_diverged" in text
    cost = cost_table(Definition("table11", "Training cost", "cost", train=(TrainStep("stage1"),)), runs)
    assert any("stage1[resolution=answer_divergence]: 22/100 (22.0%) -> hardest" in note for note in cost.notes)


def test_table11_compares_the_measured_stage_ratio_with_the_papers(tmp_path):
    start = 1_700_000_000
    for step, stage, hours in (("stage1", "infogap", 4.0), ("stage2", "grounding", 2.0)):
        job = write_job(tmp_path / "train" / step, ["size=paper", f"+stage={stage}"],
                        [{"step": 0, "reward/total": 0.0}])
        os.utime(job / ".hydra" / "config.yaml", (start, start))
        os.utime(job / "summary.json", (start + hours * 3600, start + hours * 3600))
    definition = load("table11")
    table = cost_table(definition, tmp_path)
    # 2 h x 8 GPUs over 4 h x 8 GPUs = 0.50; the paper's 96 / 320 A100-hours = 0.30
    assert "Stage II : Stage I device-hours: measured 0.50 (stage2 / stage1); paper 0.30 (96 / 320 A100-h)." \
        in table.notes


def test_paper_size_names_the_step_count_of_each_stage():
    grounding = composed("config", ["size=paper", "+stage=grounding"])
    assert grounding["trainer"]["max_steps"] == grounding["paper_steps"]["grounding"] == 80
    shorter = composed("config", ["size=paper", "+stage=grounding", "paper_steps.grounding=24"])
    assert shorter["trainer"]["max_steps"] == 24
    stage1 = composed("config", ["size=paper", "+stage=infogap", "paper_steps.grounding=24"])
    assert stage1["trainer"]["max_steps"] == 80


def test_hrbench_runs_the_gt_mode_once_its_box_file_exists(tmp_path, monkeypatch):
    for variable, name in (("LFPC_HRBENCH_8K", "hr_bench_8k"), ("LFPC_HRBENCH_4K", "hr_bench_4k")):
        monkeypatch.setenv(variable, str(tmp_path / f"{name}.tsv"))
    (tmp_path / "hr_bench_8k.boxes.json").write_text("{}")  # the 8K boxes only (the paper's were not released)
    commands = plan(load("table7"), "paper", tmp_path / "runs")
    modes = {c.argv[c.argv.index("-m") + 2]: next(a for a in c.argv if a.startswith("eval.modes")) for c in commands}
    assert modes == {"benchmark=vstar,hrbench_8k": "eval.modes=[pred,gt,noise,direct]",
                     "benchmark=hrbench_4k": "eval.modes=[pred,noise,direct]"}
    (tmp_path / "hr_bench_4k.boxes.json").write_text("{}")
    assert [c.argv[c.argv.index("-m") + 2] for c in plan(load("table1"), "paper", tmp_path / "runs")] == \
        ["benchmark=vstar,hrbench_4k,hrbench_8k"] * 2  # DeepEyes, CoF-sft: every benchmark in the gt mode


def test_paper_size_runs_each_stage1_selection_as_its_own_single_process_step(tmp_path):
    commands = plan(load("table9"), "paper", tmp_path, python="python")
    selections = [c for c in commands if c.kind == "select"]
    # Table 9 sweeps hard, random, answer_divergence, then never_diverged=original,drop: 3 jobs train on a selection
    assert [c.name for c in selections] == ["stage1[resolution=answer_divergence]",
                                            "stage1_never_diverged[resolution.never_diverged=original]",
                                            "stage1_never_diverged[resolution.never_diverged=drop]"]
    first = selections[0].argv
    assert first[:5] == ("python", "-m", "lfpc.resolution.select", "-m", "size=paper")
    assert "hydra/launcher=slurm_1gpu" in first and "resolution=answer_divergence" in first
    kinds = [(c.kind, c.name.split("[")[0]) for c in commands]
    assert kinds.index(("select", "stage1")) < kinds.index(("train", "stage1"))  # before the job that needs it
    assert not [c for c in plan(load("table9"), "smoke", tmp_path) if c.kind == "select"]  # one process: itself
