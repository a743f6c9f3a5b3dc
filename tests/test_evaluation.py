"""Evaluation: metrics against hand-computed values, crop modes wired through, resumable records, eval config."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from lfpc import PROJECT_ROOT
from lfpc.agent.prompt import TOOL_NAME, tool_call_text
from lfpc.data.records import DatasetError, Sample, write_jsonl
from lfpc.evaluation.data import load_benchmark, subtask_of
from lfpc.evaluation.metrics import cycle_accuracy, substitution_subsets, summarize
from lfpc.evaluation.records import RecordLog, crop_scores, load_run_records
from lfpc.evaluation.run import eval_plan, evaluate, run_settings
from lfpc.evaluation.runner import EvalPlan, check_modes, evaluate_samples, rollout_batch
from lfpc.evaluation.tables import build_table, load_results
from lfpc.files import single_writer
from lfpc.rollout.base import Completion, SamplingConfig
from lfpc.rollout.episodes import EpisodeConfig, run_episodes
from tests.test_resolution import flip_last_byte

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


# ----------------------------------------------------------------------------------------------------------------
# Metrics on fixture records

def rec(qid: str, subtask: str, correct: bool, mode: str = "pred", **values) -> dict:
    """A per-question record with every metric field (defaults: no crop, no cost)."""
    row = {"key": f"{qid}|{mode}|1024", "id": qid, "benchmark": "vstar", "budget": 1024, "mode": mode,
           "subtask": subtask, "correct": correct, "first_iou": None, "last_iou": None, "first_coverage": None,
           "last_coverage": None, "tool_calls": 0, "crops": 0, "visual_tokens": 0, "time_s": 0.0}
    row.update(values)
    return row


def test_summarize_matches_hand_computed_means():
    records = [
        rec("q1", "Attr", True, first_iou=0.5, last_iou=0.6, tool_calls=1, crops=1, visual_tokens=100, time_s=1.0),
        rec("q2", "Attr", False, tool_calls=0, visual_tokens=64, time_s=2.0),
        rec("q3", "Spatial", True, first_iou=0.2, last_iou=0.4, tool_calls=2, crops=2, visual_tokens=200, time_s=3.0),
        rec("q4", "Spatial", True, tool_calls=3, crops=0, visual_tokens=300, time_s=4.0),
        rec("q1", "Attr", False, mode="noise", tool_calls=1, crops=1, visual_tokens=100, time_s=1.0),
    ]
    rows = summarize(records)
    assert [(r["mode"], r["subtask"]) for r in rows] == [
        ("pred", "Attr"), ("pred", "Spatial"), ("pred", "overall"), ("noise", "Attr"), ("noise", "overall")]
    attr, spatial, overall, noise_attr, _ = rows
    assert overall["num_questions"] == 4
    assert overall["accuracy"] == pytest.approx(0.75)            # 3 of 4 correct
    assert attr["accuracy"] == pytest.approx(0.5)                # 1 of 2
    assert spatial["accuracy"] == pytest.approx(1.0)             # 2 of 2
    assert overall["first_iou"] == pytest.approx(0.35)           # (0.5 + 0.2) / 2: q2, q4 have no crop box
    assert overall["last_iou"] == pytest.approx(0.5)             # (0.6 + 0.4) / 2
    assert attr["first_iou"] == pytest.approx(0.5) and spatial["first_iou"] == pytest.approx(0.2)
    assert overall["tool_calls"] == pytest.approx(1.5)           # (1 + 0 + 2 + 3) / 4
    assert overall["crops"] == pytest.approx(0.75)               # (1 + 0 + 2 + 0) / 4
    assert overall["visual_tokens"] == pytest.approx(166.0)      # (100 + 64 + 200 + 300) / 4
    assert overall["time_s"] == pytest.approx(2.5)               # (1 + 2 + 3 + 4) / 4
    assert noise_attr["accuracy"] == 0.0 and noise_attr["first_iou"] is None  # no IoU defined -> None, not 0


def test_table7_gt_test_takes_poorly_covering_crops_and_noise_test_direct_wrong_pred_right():
    records = [
        # q1: crop covers B1 at 0.2 -> GT test (wrong with its crop, right with B1)
        rec("q1", "Attr", False, last_coverage=0.2), rec("q1", "Attr", True, mode="gt"),
        # q2: right with a poorly covering crop -> GT test too (the old "pred wrong" subset forced pred to 0)
        rec("q2", "Attr", True, last_coverage=0.4), rec("q2", "Attr", True, mode="gt"),
        # q3: covers B1 well -> not in the GT test; q4: no crop -> no predicted region, not in it
        rec("q3", "Attr", False, last_coverage=0.95), rec("q3", "Attr", True, mode="gt"),
        rec("q4", "Attr", False), rec("q4", "Attr", True, mode="gt"),
        # noise test: wrong in direct, right in pred (q5, q6); q7 right in direct too -> out; q8 has no direct
        rec("q5", "Attr", True), rec("q5", "Attr", False, mode="direct"), rec("q5", "Attr", True, mode="noise"),
        rec("q6", "Attr", True), rec("q6", "Attr", False, mode="direct"), rec("q6", "Attr", False, mode="noise"),
        rec("q7", "Attr", True), rec("q7", "Attr", True, mode="direct"), rec("q7", "Attr", False, mode="noise"),
        rec("q8", "Attr", True), rec("q8", "Attr", False, mode="noise")]
    [row] = substitution_subsets(records, gt_coverage=0.5)
    assert row["gt_test_coverage"] == 0.5 and row["gt_test_n"] == 2                       # q1, q2
    assert row["gt_test_pred_accuracy"] == pytest.approx(0.5) and row["gt_test_gt_accuracy"] == 1.0
    assert row["noise_test_n"] == 2                                                        # q5, q6
    assert row["noise_test_pred_accuracy"] == 1.0 and row["noise_test_noise_accuracy"] == pytest.approx(0.5)
    # the threshold is the caller's: at 0.3 only q1's crop covers poorly
    [strict] = substitution_subsets(records, gt_coverage=0.3)
    assert strict["gt_test_n"] == 1 and strict["gt_test_pred_accuracy"] == 0.0


def test_crop_scores_of_first_and_last_crop():
    gt = (5.0, 5.0, 10.0, 10.0)                   # area 25
    first, last = (0.0, 0.0, 10.0, 10.0), (5.0, 5.0, 10.0, 20.0)
    scores = crop_scores((first, last), gt)
    assert scores["first_iou"] == pytest.approx(0.25)       # 25 / (100 + 25 - 25)
    assert scores["last_iou"] == pytest.approx(1 / 3)       # 25 / (25 + 75 - 25)
    assert scores["first_coverage"] == 1.0 and scores["last_coverage"] == 1.0
    assert set(crop_scores((), gt).values()) == {None} and set(crop_scores((first,), None).values()) == {None}


# ----------------------------------------------------------------------------------------------------------------
# Crop modes through the evaluation path (a scripted policy on the real tokenizer and processor)

B1 = (168.0, 112.0, 252.0, 168.0)             # 84 x 56 px, on the 28 px grid
B2 = (84.0, 56.0, 420.0, 336.0)               # a larger GT box around B1 (the hierarchy's next level)
ZOOM = [50, 50, 106, 78]                       # display frame (half size) -> original [100, 100, 212, 156]


class ZoomThenAnswer:
    """Stand-in policy: zooms on ZOOM while it has seen only the global image, then answers B."""

    def __init__(self, codec):
        self.codec, self.calls = codec, 0

    def generate(self, contexts, sampling):
        self.calls += 1
        call = json.dumps({"name": TOOL_NAME, "arguments": {"bbox_2d": ZOOM}})
        completions = []
        for context in contexts:
            text = (f"<think>zoom</think><tool_call>{call}</tool_call>" if len(context.images) == 1
                    else "<think>seen</think><answer>B</answer>")
            ids = self.codec.tokenizer.encode(text, add_special_tokens=False) + [self.codec.im_end_id]
            completions.append(Completion(ids, [0.0] * len(ids), "stop"))
        return completions

    def load_weights(self, named_tensors):
        raise TypeError("a scripted policy has no weights")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """An 840 x 560 noise image (30 x 20 tokens) with nested GT boxes B1 and B2, and its pixels."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(560, 840, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("eval") / "toy.png"
    Image.fromarray(pixels).save(path)
    sample = Sample(id="toy", image_path=str(path), question="What is it?", options=("a", "b", "c", "d"),
                    answer="B", boxes=(B1, B2), image_size=(840, 560))
    return sample, pixels


# budget 150 tokens: 840 x 560 (600 tokens) halves to 420 x 280 = 15 x 10 = 150 tokens
PLAN = EvalPlan(budgets=(150,), modes=("pred", "gt", "noise", "direct"), batch_size=2,
                episode=EpisodeConfig(max_turns=2, max_new_tokens_per_turn=64, max_response_tokens=256,
                                      max_context_tokens=4096, crop_max_tokens=16))


def test_each_crop_mode_changes_what_the_model_sees(codec, toy):
    sample, pixels = toy
    seen = {}
    for mode in PLAN.modes:
        [trajectory], seconds = rollout_batch(ZoomThenAnswer(codec), codec, [sample], 150, mode, PLAN)
        assert trajectory.display_size == (420, 280) and seconds > 0
        seen[mode] = trajectory
    pred_crop = np.asarray(seen["pred"].context.images[1])
    assert np.array_equal(pred_crop, pixels[100:156, 100:212])             # the predicted region, pixel for pixel
    assert np.array_equal(np.asarray(seen["gt"].context.images[1]), pixels[112:168, 168:252])  # B1 instead
    noise_crop = np.asarray(seen["noise"].context.images[1])
    assert noise_crop.shape == pred_crop.shape                             # same size as the real crop ...
    r = np.corrcoef(noise_crop.ravel().astype(float), pred_crop.ravel().astype(float))[0, 1]
    assert abs(r) < 0.05                                                   # ... but unrelated to its pixels
    assert len(seen["direct"].context.images) == 1                         # no crop at all
    prompt = codec.tokenizer.decode(seen["direct"].context.token_ids[:seen["direct"].prompt_length])
    assert "<tools>" not in prompt and "<tools>" in codec.tokenizer.decode(seen["pred"].context.token_ids)


def test_records_per_mode_and_resume_without_recomputing(codec, toy, tmp_path):
    sample, _ = toy
    engine = ZoomThenAnswer(codec)
    records = evaluate_samples(engine, codec, [sample], PLAN, RecordLog(tmp_path / "r.jsonl"), "toy",
                               progress=False)
    by_mode = {r["mode"]: r for r in records}
    assert [r["mode"] for r in records] == ["pred", "gt", "noise", "direct"]
    assert by_mode["pred"]["crop_boxes"] == [[100.0, 100.0, 212.0, 156.0]] and by_mode["pred"]["correct"]
    # scores are against B1, not B2: pred crop vs B1: intersection 44 x 44 = 1936; union 6272 + 4704 - 1936 = 9040
    assert by_mode["pred"]["gt_box"] == list(B1)
    assert by_mode["pred"]["first_iou"] == pytest.approx(1936 / 9040)
    assert by_mode["pred"]["last_coverage"] == pytest.approx(1936 / 4704)
    assert by_mode["gt"]["crop_boxes"] == [list(B1)] and by_mode["gt"]["last_iou"] == pytest.approx(1.0)
    # visual tokens: global 15 x 10 = 150, + crop 112 x 56 = 4 x 2 = 8 (pred, noise) or 84 x 56 = 3 x 2 = 6 (gt)
    assert [by_mode[m]["visual_tokens"] for m in PLAN.modes] == [158, 156, 158, 150]
    assert by_mode["noise"]["correct"] and by_mode["noise"]["crops"] == 1
    direct = by_mode["direct"]  # the tool call is refused and ends the episode without an answer
    assert direct["tool_calls"] == 1 and direct["crops"] == 0 and not direct["correct"] and direct["choice"] is None
    assert all(r["subtask"] == "single" and r["budget"] == 150 and r["time_s"] > 0 for r in records)
    assert "<answer>B</answer>" in by_mode["pred"]["trajectory"]
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 4 and {json.loads(line)["key"] for line in lines} == {f"toy|{m}|150" for m in PLAN.modes}

    again = ZoomThenAnswer(codec)
    assert evaluate_samples(again, codec, [sample], PLAN, RecordLog(tmp_path / "r.jsonl"), "toy",
                            progress=False) == records
    assert again.calls == 0 and len((tmp_path / "r.jsonl").read_text().splitlines()) == 4


def test_record_log_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "records.jsonl"
    log = RecordLog(path)
    log.append([{"key": "a|pred|64", "x": 1}, {"key": "b|pred|64", "x": 2}])
    with path.open("a") as handle:
        handle.write('{"key": "c|pred|64", "x"')              # a write cut short by a kill
    reopened = RecordLog(path)
    assert reopened.done == {"a|pred|64", "b|pred|64"}
    reopened.append([{"key": "c|pred|64", "x": 3}])
    assert [json.loads(line)["x"] for line in path.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("line", ['{"id": 1}', "[1, 2]", '{"key": 5}'])
def test_record_log_refuses_a_line_that_is_not_a_record(tmp_path, line):
    path = tmp_path / "records.jsonl"
    path.write_text('{"key": "a|pred|64", "id": "a"}\n' + line + "\n")
    with pytest.raises(ValueError, match=r"records.jsonl:2: not an evaluation record \(no string 'key'\)"):
        RecordLog(path)


def test_a_second_writer_is_refused_while_the_folder_is_in_use(tmp_path, holding):
    other = holding(tmp_path)  # a running eval.py
    with pytest.raises(RuntimeError, match=rf"{tmp_path} is in use by another process \(pid {other.pid}\)"):
        with single_writer(tmp_path):
            pass
    other.kill()
    other.wait()
    with single_writer(tmp_path):  # released
        pass


def test_gt_mode_is_refused_without_gt_boxes(toy):
    sample, _ = toy
    boxless = Sample(id="hr", image_path=sample.image_path, question="q", options=("a", "b"), answer="A",
                     image_size=sample.image_size)
    check_modes([sample, boxless], ("pred", "noise"), "hrbench_4k")
    with pytest.raises(ValueError, match="'gt' needs GT boxes.*1 of 2 questions of benchmark 'hrbench_4k'"):
        check_modes([sample, boxless], ("pred", "gt"), "hrbench_4k")


def test_plan_rejects_bad_modes_budgets_and_a_context_too_small_to_crop():
    episode = EpisodeConfig(max_context_tokens=4096, crop_max_tokens=1024)
    with pytest.raises(ValueError, match="crop modes"):
        EvalPlan(budgets=(1024,), modes=("zoom",), episode=episode)
    with pytest.raises(ValueError, match="budgets"):
        EvalPlan(budgets=(0,), modes=("pred",), episode=episode)
    with pytest.raises(ValueError, match="max_context_tokens .4096. leaves no room"):  # 16384 + 1024 > 4096
        EvalPlan(budgets=(1024, 16384), modes=("pred",), episode=episode)


# ----------------------------------------------------------------------------------------------------------------
# Benchmarks, option shuffling, the eval config end to end

def test_option_shuffling_is_seeded_and_switchable(tmp_path):
    bench = OmegaConf.create({"kind": "synthetic", "name": "synthetic", "dir": str(tmp_path / "syn"),
                              "num_samples": 6, "image_size": [512, 512], "seed": 1})
    plain = load_benchmark(bench, shuffle_options=False)
    shuffled = load_benchmark(bench, seed=3, shuffle_options=True)
    assert load_benchmark(bench, seed=3, shuffle_options=True) == shuffled
    assert [s.answer_text for s in shuffled] == [s.answer_text for s in plain]   # the answer follows its option
    assert all(sorted(s.options) == sorted(p.options) for s, p in zip(shuffled, plain))
    assert any(s.options != p.options for s, p in zip(shuffled, plain))
    assert len(load_benchmark(bench, limit=2)) == 2
    assert {subtask_of(s) for s in plain} <= {"single", "cross"}
    assert subtask_of(Sample(id="v", image_path="x", question="q", options=("a", "b"), answer="A",
                             category="spatial", meta={"subtask": "Spatial"})) == "Spatial"


def test_hrbench_keeps_its_option_order_limits_by_question_and_scores_by_cycle(tmp_path):
    from tests.test_benchmarks import cycled_rows, write_tsv

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        bench = compose("eval", overrides=["benchmark=hrbench_8k", f"cache_dir={tmp_path / 'cache'}",
                                           f"benchmark.path={write_tsv(tmp_path / 'hr_8k.tsv', cycled_rows())}",
                                           "output_dir=/tmp/out"]).benchmark
    released = load_benchmark(bench, seed=3)                  # default: the released order, the cycles intact
    assert [s.answer for s in released[:4]] == list("BADC")
    assert [s.answer for s in load_benchmark(bench, seed=3, shuffle_options=True)[:4]] != list("BADC")
    assert [s.meta["index"] for s in load_benchmark(bench, limit=1)] == [10, 11, 12, 13]  # all 4 cycles of one
    # official score: accuracy per cycle, averaged; cycle c0 has 2 rows (1 right), c1 one row (right): 0.75
    records = [rec("a", "FSP", True, cycle="c0"), rec("b", "FSP", False, cycle="c0"),
               rec("a2", "FSP", True, cycle="c1")]
    overall = summarize(records)[-1]
    assert overall["accuracy"] == pytest.approx(2 / 3) and overall["cycle_accuracy"] == pytest.approx(0.75)
    assert cycle_accuracy([("", True)]) is None and summarize([rec("v", "Attr", True)])[0]["cycle_accuracy"] is None


def test_a_compared_method_is_evaluated_with_its_preset_and_recorded_as_such(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        ours, deepeyes = (compose("eval", overrides=[*model, "benchmark=synthetic", f"cache_dir={tmp_path}",
                                                     "output_dir=/tmp/out"]) for model in ([], ["model=deepeyes"]))
    assert (deepeyes.episode.prompt, deepeyes.episode.max_turns, deepeyes.model.path) == \
        ("deepeyes", 10, "/models/DeepEyes-7B")
    assert eval_plan(deepeyes).episode.prompt == "deepeyes"
    model = str(PROJECT_ROOT / "models" / "mini")  # any real model folder: the settings carry its fingerprint
    assert run_settings(deepeyes, eval_plan(deepeyes), model)["episode"]["prompt"] == "deepeyes"
    # our prompt is recorded as before presets existed: results folders written then still resume
    assert "prompt" not in run_settings(ours, eval_plan(ours), model)["episode"]


def eval_cfg(tmp_path: Path, model_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("eval", overrides=[
            f"output_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}", "label=tiny",
            f"model.path={model_dir}", "model.build_tiny=false", "benchmark=synthetic", "benchmark.num_samples=2",
            "benchmark.image_size=[512,512]", "eval.progress=false", "episode.max_new_tokens_per_turn=6",
            "episode.max_response_tokens=12", *overrides])


def test_eval_config_runs_resumes_and_refuses_other_settings(tmp_path, tiny_model_dir):
    cfg = eval_cfg(tmp_path, tiny_model_dir, "eval.modes=[pred,direct]")
    assert list(cfg.eval.budgets) == [64] and cfg.benchmark.kind == "synthetic"   # the benchmark's default budget
    summary = evaluate(cfg)
    out = tmp_path / "out"
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 4                                                        # 2 questions x 2 modes
    overall = {r["mode"]: r for r in summary["rows"] if r["subtask"] == "overall"}
    assert set(overall) == {"pred", "direct"} and overall["pred"]["num_questions"] == 2
    assert json.loads((out / "metrics.json").read_text())["label"] == "tiny"
    assert (out / "metrics.csv").read_text().startswith("benchmark,budget,mode,subtask,num_questions,accuracy")

    assert evaluate(cfg)["rows"] == summary["rows"]                               # resumed: nothing recomputed
    assert (out / "records.jsonl").read_text().splitlines() == lines
    with pytest.raises(ValueError, match="other settings .changed: \\['episode'\\]"):
        evaluate(eval_cfg(tmp_path, tiny_model_dir, "episode.max_turns=1"))
    (out / "records.jsonl").unlink()                            # a run that stopped before its first batch
    assert evaluate(eval_cfg(tmp_path, tiny_model_dir, "episode.max_turns=1"))["rows"]  # nothing to mix: accepted
    assert json.loads((out / "settings.json").read_text())["episode"]["max_turns"] == 1


def test_eval_refuses_stale_records_after_the_weights_or_the_questions_changed(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    cfg = eval_cfg(tmp_path, model, "benchmark.kind=jsonl", f"+benchmark.path={tmp_path / 'data.jsonl'}")
    samples = load_benchmark(eval_cfg(tmp_path, model).benchmark, shuffle_options=False)
    write_jsonl(samples, tmp_path / "data.jsonl")
    evaluate(cfg)
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())                  # the same bytes rewritten: the same model
    evaluate(cfg)
    flip_last_byte(weights)                                    # other weights of the same size and mtime
    with pytest.raises(ValueError, match=r"other settings .changed: \['model_fingerprint'\]"):
        evaluate(cfg)
    (tmp_path / "out" / "settings.json").unlink()
    evaluate(cfg)                                              # settings rewritten for the new weights
    changed = [dataclasses.replace(s, answer="B" if s.answer == "A" else "A") if i == 1 else s
               for i, s in enumerate(samples)]
    write_jsonl(changed, tmp_path / "data.jsonl")              # the answer key of one question changed
    with pytest.raises(ValueError, match=rf"the records of 1 question\(s\) \(e.g. \['{samples[1].id}'\]\) were made"):
        evaluate(cfg)


def test_metrics_count_the_current_questions_and_a_replaced_image_is_refused(tmp_path, tiny_model_dir):
    cfg = eval_cfg(tmp_path, tiny_model_dir, "benchmark.kind=jsonl", f"+benchmark.path={tmp_path / 'data.jsonl'}",
                   "benchmark.num_samples=4")
    samples = load_benchmark(eval_cfg(tmp_path, tiny_model_dir, "benchmark.num_samples=4").benchmark,
                             shuffle_options=False)
    write_jsonl(samples, tmp_path / "data.jsonl")
    out = tmp_path / "out"

    def overall(summary: dict) -> int:
        return next(r["num_questions"] for r in summary["rows"] if r["subtask"] == "overall")

    assert overall(evaluate(cfg)) == 4
    lines = (out / "records.jsonl").read_text().splitlines()
    limited = eval_cfg(tmp_path, tiny_model_dir, "benchmark.kind=jsonl", f"+benchmark.path={tmp_path / 'data.jsonl'}",
                       "benchmark.num_samples=4", "eval.limit=2")
    assert overall(evaluate(limited)) == 2                     # a lowered eval.limit (it counted 4 before)
    assert "synthetic,64,pred,overall,2," in (out / "metrics.csv").read_text()
    metrics, records = load_run_records(out)
    assert [r["id"] for r in records] == [s.id for s in samples[:2]] and metrics["plan"]["modes"] == ["pred"]
    write_jsonl(samples[1:3], tmp_path / "data.jsonl")         # a question removed, none added
    assert overall(evaluate(cfg)) == 2                         # (it counted the removed one too)
    assert (out / "records.jsonl").read_text().splitlines() == lines  # nothing recomputed, nothing lost

    image = Path(samples[1].image_path)
    Image.new("RGB", Image.open(image).size, "red").save(image)  # replaced at the same path, same size
    with pytest.raises(ValueError, match=rf"the records of 1 question\(s\) \(e.g. \['{samples[1].id}'\]\) were made "
                                         r"on other question, option, answer, GT-box or image content"):
        evaluate(cfg)


def test_eval_applies_the_configured_pixel_limit_at_load(tmp_path, tiny_model_dir, pixel_limit):
    with pytest.raises(DatasetError, match=r"field 'image_path': image .* 512 x 512 = 262,144 pixels, over the limit "
                                           r"of 200,000 pixels \(raise max_image_pixels"):
        evaluate(eval_cfg(tmp_path, tiny_model_dir, "max_image_pixels=200000"))
    assert not (tmp_path / "out" / "records.jsonl").exists()


# ----------------------------------------------------------------------------------------------------------------
# Token caps of the paper-size evaluation and the episodes they cut

# (per-turn, episode-wide) policy-token caps as each method's own code sets them (the model presets cite where):
# DeepEyes eval_vstar.py max_tokens 10240; Mini-o3 README data.max_response_length=8192; CoF vllm_inference.py
# --max_new_tokens default 512; Pixel Reasoner experience_maker.py max_out_tokens default 2048; none caps an episode.
SOURCE_CAPS = {"deepeyes": (10240, None), "mini_o3": (8192, None), "cof_sft": (512, None),
               "pixel_reasoner": (2048, None)}


def test_paper_evaluation_caps_ours_as_training_and_each_method_as_its_source(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        train = compose("config", overrides=["size=paper", "+stage=infogap", "output_dir=/tmp/out",
                                             "cache_dir=/tmp/cache"])
        evals = {name: compose("eval", overrides=[*([f"model={name}"] if name else []), "+size/eval=paper",
                                                  "benchmark=vstar", f"cache_dir={tmp_path}", "output_dir=/tmp/out"])
                 for name in ("", *SOURCE_CAPS)}
    ours = evals.pop("")
    assert (ours.episode.max_new_tokens_per_turn, ours.episode.max_response_tokens, ours.episode.max_context_tokens) \
        == (train.episode.max_new_tokens_per_turn, train.episode.max_response_tokens, train.episode.max_context_tokens)
    assert ours.episode.max_new_tokens_per_turn == 2048 and ours.episode.max_response_tokens == 20480
    for name, cfg in evals.items():
        episode = eval_plan(cfg).episode
        assert (episode.max_new_tokens_per_turn, episode.max_response_tokens) == SOURCE_CAPS[name], name
        # a last turn fits the model's 128,000 positions (vLLM's max_model_len at evaluation)
        assert episode.max_context_tokens + episode.max_new_tokens_per_turn <= 128000, name


class _CutEngine:
    """Generates each scripted turn, stopping it at the request's token cap with finish reason "length" (a stand-in
    policy; the tokens come from the real tokenizer)."""

    def __init__(self, codec, turns):
        self.codec, self.turns = codec, iter(turns)

    def generate(self, contexts, sampling):
        ids = self.codec.tokenizer.encode(next(self.turns), add_special_tokens=False) + [self.codec.im_end_id]
        cut = len(ids) > sampling.max_new_tokens
        ids = ids[:sampling.max_new_tokens]
        return [Completion(ids, [-1.0] * len(ids), "length" if cut else "stop") for _ in contexts]

    def load_weights(self, named_tensors):
        raise NotImplementedError


def _episode(codec, sample, turns, **caps):
    config = EpisodeConfig(max_turns=2, crop_max_tokens=16, max_context_tokens=4096, **caps)
    return run_episodes(_CutEngine(codec, turns), codec, [sample], [(224, 168)], 1, config, SamplingConfig())[0]


def test_an_episode_cut_by_a_token_cap_is_marked_truncated(codec, noise_sample):
    call = tool_call_text([10, 10, 100, 100])
    answer = "I see it. <answer>B</answer>"
    long = "Let me think about every part of the image carefully before answering. " * 4 + "<answer>B</answer>"
    assert not _episode(codec, noise_sample, [call, answer], max_new_tokens_per_turn=64).truncated
    # the answer turn is cut at the per-turn cap: unanswered, truncated
    cut = _episode(codec, noise_sample, [call, long, long, long], max_new_tokens_per_turn=40)
    assert cut.truncated and cut.outcome.answer is None
    # the episode's response budget stops it after the call, before any answer
    spent = _episode(codec, noise_sample, [call, answer], max_new_tokens_per_turn=64, max_response_tokens=20)
    assert spent.truncated and spent.outcome.answer is None and spent.context.num_policy_tokens == 20
    # no episode-wide cap: the long answer goes through
    free = _episode(codec, noise_sample, [call, long], max_new_tokens_per_turn=256, max_response_tokens=None)
    assert not free.truncated and free.outcome.answer == "B"


def test_truncated_share_is_in_the_metrics_and_the_table_notes(tmp_path):
    records = [rec("a", "Attr", False, truncated=True), rec("b", "Attr", True, truncated=False),
               rec("c", "Spatial", False, truncated=False), rec("d", "Spatial", False, truncated=True)]
    overall = [r for r in summarize(records) if r["subtask"] == "overall"][0]
    assert overall["truncated"] == 0.5 and overall["num_questions"] == 4
    assert summarize([rec("a", "Attr", False)])[0]["truncated"] is None  # a record from before: not counted
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"label": "stage2", "rows": summarize(records)}))
    notes = build_table(2, load_results([folder])).notes
    assert any("stage2 V* 1024 pred: 2/4" in note for note in notes)


def test_iou_over_questions_with_a_crop_and_with_no_crop_counting_zero():
    box = [0, 0, 10, 10]
    records = [rec("a", "Attr", True, last_iou=0.5, gt_box=box), rec("b", "Attr", True, last_iou=0.3, gt_box=box),
               rec("c", "Attr", False, gt_box=box), rec("d", "Attr", False)]  # c: no crop; d: no GT box
    overall = [r for r in summarize(records) if r["subtask"] == "overall"][0]
    assert overall["last_iou"] == pytest.approx(0.4)                       # (0.5 + 0.3) / 2
    assert overall["last_iou_or_0"] == pytest.approx(0.8 / 3)              # (0.5 + 0.3 + 0) / 3, d left out


def test_table3_shows_both_iou_definitions(tmp_path):
    box = [0, 0, 10, 10]
    records = [rec("a", "Attr", True, last_iou=0.5, gt_box=box), rec("c", "Spatial", False, gt_box=box)]
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"label": "stage2", "rows": summarize(records)}))
    table = build_table(3, load_results([folder]))
    cells = dict(zip(table.headers, next(r for r in table.rows if r[0] == "stage2")))
    assert (cells["V* Attr IoU"], cells["V* Spatial IoU"], cells["V* Overall IoU no-crop=0"]) == ("50.0", "–", "25.0")
