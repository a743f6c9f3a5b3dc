"""Offline resolution selection: strategies on hand-made answer scripts, manifest resume/invalidation, statistics.

The answer source is a deterministic RolloutEngine that replies from the width of the image it is shown (read
from the real processor's ``image_grid_thw``) and from the case named in the question; the codec, processor,
prompts, episodes and answer extraction are the real ones.

Test image 896 x 896, global budget 64 tokens, scale 1/sqrt(2), min 4 tokens -> pyramid, by hand:
level 0: 896 / 4 = 224 (8x8 = 64 tokens); level 1: 224 * 0.707 = 158.4 -> 6 * 28 = 168;
level 2: 224 * 0.5 = 112; level 3: 224 * 0.354 = 79.2 -> 3 * 28 = 84; level 4: 56 (2x2 = 4 tokens, stop).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from lfpc import config as C
from lfpc.data.records import Sample, write_jsonl
from lfpc.resolution import SelectionConfig, model_fingerprint, rollout_answerer, select_resolutions
from lfpc.resolution.selection import answers_agree
from lfpc.resolution.select import main as select_main
from lfpc.config import run_selection, selection_config
from lfpc.rollout.base import Completion
from lfpc.training.display import DisplaySizer

WIDTHS = [224, 168, 112, 84, 56]
LEVELS = [(w, w) for w in WIDTHS]
# reply letter per shown width; "?" = a reply without a valid answer (answer value "none")
SCRIPT = {
    "early": dict(zip(WIDTHS, "AABBC")),    # first differs at 112 (level 2)
    "first": dict(zip(WIDTHS, "CDDDD")),    # first differs at 168 (level 1)
    "invalid": dict(zip(WIDTHS, "AAAA?")),  # no valid answer at 56: asked again, then skipped (no divergence)
    "never": dict(zip(WIDTHS, "BBBBB")),    # never differs
}
CONFIG = SelectionConfig(strategy="answer_divergence", max_tokens=64, min_tokens=4, batch_samples=8,
                         max_new_tokens=16)
FINGERPRINT = "model-v1"


class Interrupted(RuntimeError):
    pass


class ScriptedAnswers:
    """RolloutEngine replying ``<answer>X</answer>`` with X = script[case][shown width]; logs (case, width), the
    sampling settings and the prompts it was given."""

    def __init__(self, codec, script, fail_on_call: int | None = None):
        self.codec, self.script, self.fail_on_call = codec, script, fail_on_call
        self.calls, self.queries, self.samplings, self.prompts = 0, [], [], []

    def generate(self, contexts, sampling):
        self.calls += 1
        self.samplings.append(sampling)
        if self.calls == self.fail_on_call:
            raise Interrupted(f"simulated interruption in generate call {self.calls}")
        completions = []
        for context in contexts:
            _, _, grid_w = context.image_grid_thw[0].tolist()
            width = grid_w * 14  # 14 px patches
            prompt = self.codec.tokenizer.decode(context.token_ids)
            self.prompts.append(prompt)
            case = next(name for name in self.script if f"case {name}:" in prompt)
            letter = self.script[case][width]
            text = "I cannot tell." if letter == "?" else f"<answer>{letter}</answer>"
            ids = self.codec.tokenizer.encode(text, add_special_tokens=False) + [self.codec.im_end_id]
            completions.append(Completion(ids, [0.0] * len(ids), "stop"))
            self.queries.append((case, width))
        return completions

    def load_weights(self, named_tensors):
        raise NotImplementedError


def _no_model():
    raise AssertionError("the model was queried although every sample was cached")


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("res_images") / "grad.png"
    ramp = np.linspace(0, 255, 896, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (896, 1))] * 3, axis=-1)).save(path)
    return str(path)


def _sample(case: str, image_path: str) -> Sample:
    return Sample(id=case, image_path=image_path, question=f"case {case}: which option?",
                  options=("red", "blue", "green", "white"), answer="A", image_size=(896, 896))


def _run(codec, samples, manifest, config=CONFIG, script=SCRIPT, fingerprint=FINGERPRINT, engine=None):
    engine = engine or ScriptedAnswers(codec, script)
    result = select_resolutions(samples, config, manifest, fingerprint,
                                lambda: rollout_answerer(engine, codec, config.max_new_tokens), progress=False)
    return result, engine


def test_answer_divergence_stops_at_first_differing_level(codec, image_path, tmp_path):
    samples = [_sample(case, image_path) for case in SCRIPT]
    result, engine = _run(codec, samples, tmp_path / "m.jsonl")
    assert result.sizes == {"early": (112, 112), "first": (168, 168), "invalid": (56, 56), "never": (56, 56)}
    # reference = level 0 (224); the walk stops at the first divergence
    assert sorted(w for c, w in engine.queries if c == "early") == [112, 168, 224]
    assert sorted(w for c, w in engine.queries if c == "first") == [168, 224]
    assert sorted(w for c, w in engine.queries if c == "never") == sorted(WIDTHS)
    early = result.records["early"]
    assert early["answers"] == ["A", "A", "B", None, None] and early["divergence_level"] == 2
    assert early["model"] == FINGERPRINT and early["strategy"] == "answer_divergence"
    invalid = result.records["invalid"]
    assert invalid["answers"][4] == "none" and invalid["divergence_level"] is None  # never diverged: hardest
    assert invalid["retried"] == 1 and invalid["skipped_levels"] == 1
    assert sorted(w for c, w in engine.queries if c == "invalid") == sorted(WIDTHS + [56])
    assert result.records["never"]["divergence_level"] is None and result.records["never"]["chosen_level"] == 4
    stats = result.stats
    assert (stats.never_diverged, stats.retried, stats.skipped_levels, stats.no_reference_answer) == (2, 1, 1, 0)
    # one batched call per round: reference (224, = level 0, not asked twice), then 168, 112, 84, 56, 56 again
    assert engine.calls == 6


def test_a_reply_without_answer_is_asked_again_and_never_a_divergence(codec, image_path, tmp_path):
    script = {"late": dict(zip(WIDTHS, "A?AB?")), "noref": dict(zip(WIDTHS, "?AAAA"))}
    flaky = ScriptedAnswers(codec, script)
    seen: set = set()
    generate = flaky.generate

    def second_time_valid(contexts, sampling):  # the retry of "late" at 168 px gets a valid answer
        completions = generate(contexts, sampling)
        for i, (case, width) in enumerate(flaky.queries[-len(contexts):]):
            if (case, width) == ("late", 168) and (case, width) in seen:
                ids = codec.tokenizer.encode("<answer>A</answer>", add_special_tokens=False) + [codec.im_end_id]
                completions[i] = Completion(ids, [0.0] * len(ids), "stop")
            seen.add((case, width))
        return completions

    flaky.generate = second_time_valid
    samples = [_sample(case, image_path) for case in script]
    result, _ = _run(codec, samples, tmp_path / "m.jsonl", script=script, engine=flaky)
    late, noref = result.records["late"], result.records["noref"]
    assert late["answers"] == ["A", "A", "A", "B", None] and late["divergence_level"] == 3
    assert late["retried"] == 1 and late["skipped_levels"] == 0
    assert noref["reference_answer"] == "none" and noref["divergence_level"] is None and noref["retried"] == 1
    assert result.stats.no_reference_answer == 1


def test_probe_asks_for_one_greedy_answer_without_tools(codec, image_path, tmp_path):
    _, engine = _run(codec, [_sample("early", image_path)], tmp_path / "m.jsonl")
    # the divergence must measure the model, not a random draw: every probe is greedy
    assert [s.temperature for s in engine.samplings] == [0.0] * engine.calls
    assert all(s.max_new_tokens <= CONFIG.max_new_tokens for s in engine.samplings)
    assert engine.prompts and all("<tools>" not in prompt for prompt in engine.prompts)  # a direct answer


def test_stop_all_queries_every_level_and_keeps_the_choice(codec, image_path, tmp_path):
    samples = [_sample(case, image_path) for case in SCRIPT]
    config = replace(CONFIG, stop="all")
    result, engine = _run(codec, samples, tmp_path / "m.jsonl", config=config)
    assert result.sizes["early"] == (112, 112) and result.sizes["first"] == (168, 168)
    assert result.records["early"]["answers"] == ["A", "A", "B", "B", "C"]
    # every (sample, level) pair in one batch, then the retry of "invalid" at 56 px
    assert len(engine.queries) == 4 * 5 + 1 and engine.calls == 2


@pytest.mark.parametrize("policy, size", [("hardest", (56, 56)), ("original", (224, 224)), ("drop", None)])
def test_never_diverged_policy(codec, image_path, tmp_path, policy, size):
    samples = [_sample("never", image_path), _sample("early", image_path)]
    config = replace(CONFIG, never_diverged=policy)
    result, _ = _run(codec, samples, tmp_path / "m.jsonl", config=config)
    assert result.sizes.get("never") == size and result.sizes["early"] == (112, 112)
    assert result.stats.dropped == (1 if policy == "drop" else 0)
    assert result.stats.never_diverged == 1 and result.stats.never_diverged_fraction == 0.5


def test_hard_original_and_random_ignore_answers(codec, image_path, tmp_path):
    samples = [_sample(case, image_path) for case in SCRIPT]
    for strategy, expected in (("hard", (56, 56)), ("original", (224, 224))):
        config = replace(CONFIG, strategy=strategy)
        result, _ = _run(codec, samples, tmp_path / f"{strategy}.jsonl", config=config)
        assert set(result.sizes.values()) == {expected}
        assert DisplaySizer(strategy, 64, min_tokens=4)(samples[0]) == expected
    config = replace(CONFIG, strategy="random", seed=3)
    result, _ = _run(codec, samples, tmp_path / "random.jsonl", config=config)
    # the documented draw: random.Random(f"{seed}:{sample id}") picks a downsampled level (1-4) uniformly
    expected = {s.id: LEVELS[random.Random(f"3:{s.id}").choice(range(1, 5))] for s in samples}
    assert result.sizes == expected
    assert {s.id: DisplaySizer("random", 64, min_tokens=4, seed=3)(s) for s in samples} == expected


def test_reference_above_budget_makes_level_zero_a_candidate(codec, image_path, tmp_path):
    # reference at 256 tokens: 896 / 2 = 448 px (16x16 tokens); 448 -> A, 224 (level 0) -> B
    script = {"early": {448: "A", **dict(zip(WIDTHS, "BBBBB"))}}
    config = replace(CONFIG, reference_max_tokens=256)
    result, engine = _run(codec, [_sample("early", image_path)], tmp_path / "m.jsonl", config=config, script=script)
    assert result.sizes == {"early": (224, 224)} and result.records["early"]["reference_size"] == [448, 448]
    assert engine.queries == [("early", 448), ("early", 224)]


def test_resume_after_interruption_recomputes_only_unfinished_samples(codec, image_path, tmp_path):
    manifest = tmp_path / "m.jsonl"
    samples = [_sample(case, image_path) for case in ("early", "first", "never")]
    config = replace(CONFIG, batch_samples=1)
    # batch of one: "early" takes 3 generate calls (224, 168, 112); call 4 (reference of "first") is cut
    with pytest.raises(Interrupted):
        _run(codec, samples, manifest, config=config, engine=ScriptedAnswers(codec, SCRIPT, fail_on_call=4))
    lines = manifest.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["id"] == "early"
    with open(manifest, "a") as handle:  # a record cut short by the interruption
        handle.write('{"kind": "sample", "id": "first", "chosen_si')
    result, engine = _run(codec, samples, manifest, config=config)
    assert {case for case, _ in engine.queries} == {"first", "never"}
    assert result.sizes == {"early": (112, 112), "first": (168, 168), "never": (56, 56)}
    assert result.stats.cached == 1 and result.stats.computed == 2
    assert [json.loads(line)["id"] for line in manifest.read_text().splitlines()[1:]] == ["early", "first", "never"]
    # a third run is served entirely from the manifest
    again = select_resolutions(samples, config, manifest, FINGERPRINT, _no_model, progress=False)
    assert again.sizes == result.sizes and again.stats.computed == 0


def test_changed_model_or_schedule_starts_a_new_manifest(codec, image_path, tmp_path):
    manifest = tmp_path / "m.jsonl"
    samples = [_sample("early", image_path)]
    _run(codec, samples, manifest)
    old = manifest.read_text()
    _, engine = _run(codec, samples, manifest, fingerprint="model-v2")
    assert Path(f"{manifest}.stale").read_text() == old and engine.queries  # recomputed for the new model
    config = replace(CONFIG, scale=0.5)  # 224, 112, 56
    second = manifest.read_text()
    result, _ = _run(codec, samples, manifest, config=config, fingerprint="model-v2")
    assert result.records["early"]["levels"] == [[224, 224], [112, 112], [56, 56]]
    assert Path(f"{manifest}.stale").read_text() == old and Path(f"{manifest}.stale.2").read_text() == second
    assert result.sizes == {"early": (112, 112)}
    # the same id on a moved copy of the image is served from the manifest; on another image it is recomputed
    moved = tmp_path / "moved.png"
    shutil.copy(image_path, moved)
    _, engine = _run(codec, [_sample("early", str(moved))], manifest, config=config, fingerprint="model-v2")
    assert not engine.queries
    Image.open(image_path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "other.png")
    _, engine = _run(codec, [_sample("early", str(tmp_path / "other.png"))], manifest, config=config,
                     fingerprint="model-v2")
    assert engine.queries


def test_each_sample_is_saved_as_soon_as_it_is_finished(codec, image_path, tmp_path):
    manifest = tmp_path / "m.jsonl"
    samples = [_sample(case, image_path) for case in ("early", "first", "never")]
    # one batch; "first" is finished after call 2 (224 and 168 differ), the others need more: call 3 is cut
    with pytest.raises(Interrupted):
        _run(codec, samples, manifest, engine=ScriptedAnswers(codec, SCRIPT, fail_on_call=3))
    assert [json.loads(line)["id"] for line in manifest.read_text().splitlines()[1:]] == ["first"]


def test_a_malformed_record_line_names_the_line_to_fix(codec, image_path, tmp_path):
    manifest = tmp_path / "m.jsonl"
    _run(codec, [_sample("early", image_path)], manifest)
    with open(manifest, "a") as handle:
        handle.write("garbage\n")
    with pytest.raises(ValueError, match=r"m.jsonl:3: malformed manifest line .*delete or fix that line \(the other"):
        _run(codec, [_sample("early", image_path)], manifest)


def flip_last_byte(path: Path) -> None:
    """Change a file's last byte (a weight value of a safetensors file), keeping its size and its mtime."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def test_model_fingerprint_follows_the_content_of_every_file(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    first = model_fingerprint(folder)
    assert first == model_fingerprint(tiny_model_dir)             # a copy holds the same model
    weights = next(folder.glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    (folder / ".cache").mkdir()                                    # a download tool's metadata
    assert model_fingerprint(folder) == first                      # touched, same bytes: the same model
    flip_last_byte(weights)                                        # same size and mtime, other weights
    second = model_fingerprint(folder)
    assert second != first
    config = folder / "config.json"
    config.write_text(config.read_text() + "\n")
    third = model_fingerprint(folder)
    assert third != second
    template = next(folder.glob("chat_template*"))
    template.write_text(template.read_text() + " ")
    assert model_fingerprint(folder) != third


def test_statistics_are_reported_and_written(codec, image_path, tmp_path):
    samples = [_sample(case, image_path) for case in SCRIPT]
    result, _ = _run(codec, samples, tmp_path / "m.jsonl")
    stats = result.stats
    # chosen levels: early 2, first 1, invalid 4, never 4 (hardest)
    assert stats.level_counts == {2: 1, 1: 1, 4: 2}
    assert stats.never_diverged_fraction == 0.5  # "invalid" skips its unanswered level: no divergence either
    # queries: early 3, first 2, invalid 5 + 1 retry, never 5
    assert stats.queries == 16 and stats.computed == 4 and stats.samples_per_s > 0
    # mean chosen tokens: (16 + 36 + 4 + 4) / 4 = 15
    assert stats.mean_chosen_tokens == 15.0
    written = json.loads(Path(f"{tmp_path / 'm.jsonl'}.stats.json").read_text())
    assert written["level_counts"] == {"2": 1, "1": 1, "4": 2} and written["never_diverged"] == 2
    assert written["retried"] == 1 and written["skipped_levels"] == 1 and written["never_diverged_policy"] == "hardest"


def _cfg(tmp_path, tiny_model_dir, *overrides):
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=[
            "+stage=infogap", f"cache_dir={tmp_path}", "vision.global_max_tokens=64", "resolution.min_tokens=4",
            f"model.path={tiny_model_dir}", "model.build_tiny=false", "rollout=hf", *overrides])


def test_real_tiny_model_answers_through_the_configured_rollout_engine(tiny_model_dir, image_path, tmp_path):
    cfg = _cfg(tmp_path, tiny_model_dir, "resolution.stop=all", "resolution.max_new_tokens=4")
    samples = [_sample("early", image_path), _sample("never", image_path)]
    result = run_selection(cfg, str(tiny_model_dir), samples, progress=False)
    # stop=all: every level of both samples (reference = level 0), plus one retry of each reply without an answer
    assert result.stats.queries == 2 * 5 + result.stats.retried
    for record in result.records.values():
        assert len(record["answers"]) == 5
        assert set(record["answers"]) <= {"A", "B", "C", "D", "none"}
        assert tuple(record["chosen_size"]) in LEVELS


def test_display_sizer_and_cli_read_the_cached_selection(codec, tiny_model_dir, image_path, tmp_path, capsys):
    samples = [_sample(case, image_path) for case in SCRIPT]
    write_jsonl(samples, tmp_path / "data.jsonl")
    cfg = _cfg(tmp_path, tiny_model_dir, "resolution.never_diverged=drop", "resolution.max_new_tokens=16",
               "data=jsonl", f"data.path={tmp_path / 'data.jsonl'}", f"output_dir={tmp_path / 'job'}")
    (tmp_path / "job").mkdir()
    assert cfg.resolution.strategy == "answer_divergence"
    assert cfg.resolution.manifest == f"{tmp_path}/resolution/answer_divergence.jsonl"
    # fill the manifest with the scripted answers, under the fingerprint the config gives the tiny model
    _run(codec, samples, cfg.resolution.manifest, config=selection_config(cfg),
         fingerprint=model_fingerprint(tiny_model_dir))
    sizer = C.display_sizer(cfg, str(tiny_model_dir), samples + samples[:1])  # a mix may repeat a sample
    kept = C.trainable_samples(samples, sizer, cfg)
    assert [s.id for s in kept] == ["early", "first"]  # "invalid" and "never" never diverged: dropped
    assert [sizer(s) for s in kept] == [(112, 112), (168, 168)]
    with pytest.raises(KeyError, match="never"):
        sizer(samples[3])
    # the job folder keeps the selection's statistics (its time is paper Table 11's offline selection row)
    job_stats = json.loads((tmp_path / "job" / C.SELECTION_STATS).read_text())
    assert job_stats["cached"] == 4 and job_stats["seconds"] == 0.0       # all cached: no time spent here
    stats = select_main(cfg)
    assert stats["cached"] == 4 and stats["computed"] == 0 and stats["dropped"] == 2
    assert '"never_diverged_fraction": 0.5' in capsys.readouterr().out


def test_display_sizer_needs_the_selection_for_answer_divergence():
    with pytest.raises(ValueError, match="offline selection"):
        DisplaySizer("answer_divergence", 64)
    with pytest.raises(ValueError, match="unknown resolution strategy"):
        DisplaySizer("easy", 64)


@pytest.mark.parametrize("launch", [["trainer=cpu_fsdp2"], ["trainer.devices=1", "trainer.num_nodes=2"]])
def test_multi_process_launch_without_the_selection_fails_fast_with_the_command(tiny_model_dir, image_path, tmp_path,
                                                                               launch):
    samples = [_sample("early", image_path), _sample("never", image_path)]
    settings = ["resolution.max_new_tokens=4", f"output_dir={tmp_path}"]
    with pytest.raises(RuntimeError, match="lacks samples.*\n    python -m lfpc.resolution.select"):
        C.display_sizer(_cfg(tmp_path, tiny_model_dir, *settings, *launch), str(tiny_model_dir), samples)
    single = C.display_sizer(_cfg(tmp_path, tiny_model_dir, *settings), str(tiny_model_dir), samples)  # computes it
    multi = C.display_sizer(_cfg(tmp_path, tiny_model_dir, *settings, *launch), str(tiny_model_dir), samples)
    assert multi.selected == single.selected and len(multi.selected) == 2


# ----------------------------------------------------------------------------------------------------------------
# Free-form answers: compared by the accuracy reward's rule, containment and the optional judge

def _free(case: str, image_path: str, answer: str = "red") -> Sample:
    return Sample(id=case, image_path=image_path, question=f"case {case}: what color is the car?", options=(),
                  answer=answer, image_size=(896, 896))


@pytest.mark.parametrize("answer, reference, agree", [
    ("red car", "red", True), ("the red", "red car", True),   # whole-word containment either way
    ("blue", "red", False), ("redder", "red", False),         # no rule relates them, no judge: they differ
    ("three", "3", True), ("2 cars", "3", False),              # numbers, number words
    ("yes it is", "yes", True), ("no", "yes", False)])         # yes/no
def test_free_form_answers_agree_by_the_grading_rule_and_containment(answer, reference, agree, image_path):
    assert answers_agree(answer, reference, _free("x", image_path, reference)) is agree


def test_a_judge_settles_free_form_answers_no_rule_compares(image_path):
    asked = []

    def judge(question, truth, answer):
        asked.append((truth, answer))
        return answer == "crimson"

    sample = _free("x", image_path)
    assert answers_agree("crimson", "red", sample, judge) and not answers_agree("blue", "red", sample, judge)
    assert asked == [("red", "crimson"), ("red", "blue")]
    assert answers_agree("red car", "red", sample, judge) and len(asked) == 2  # a rule settled it: not asked
    option = _sample("o", image_path)
    assert answers_agree("B", "B", option, judge) and not answers_agree("A", "B", option, judge) and len(asked) == 2


def test_a_paraphrase_is_no_divergence_in_the_walk(codec, image_path, tmp_path):
    script = {"paraphrase": {224: "red", 168: "red car", 112: "The red car.", 84: "blue", 56: "blue"}}
    result, engine = _run(codec, [_free("paraphrase", image_path)], tmp_path / "m.jsonl", script=script)
    record = result.records["paraphrase"]
    assert record["divergence_level"] == 3 and result.sizes == {"paraphrase": (84, 84)}  # not 1, at "red car"
    assert sorted(w for _, w in engine.queries) == [84, 112, 168, 224]


def test_a_later_cached_call_keeps_the_time_the_selection_took(codec, image_path, tmp_path):
    samples = [_sample(case, image_path) for case in SCRIPT]
    first, _ = _run(codec, samples[:2], tmp_path / "m.jsonl")           # computes 2 samples
    second, _ = _run(codec, samples, tmp_path / "m.jsonl")               # resumes: computes the other 2
    assert first.stats.seconds > 0 and second.stats.computed == 2
    assert second.stats.total_seconds == pytest.approx(first.stats.seconds + second.stats.seconds)
    cached, _ = _run(codec, samples, tmp_path / "m.jsonl", engine=_no_model)  # a multi-process job's own call
    assert cached.stats.seconds == 0 and cached.stats.total_seconds == second.stats.total_seconds
    written = json.loads(Path(f"{tmp_path / 'm.jsonl'}.stats.json").read_text())
    assert written["total_seconds"] == second.stats.total_seconds and written["devices"] == 1
    other, _ = _run(codec, samples, tmp_path / "m.jsonl", fingerprint="model-v2")  # another manifest: its own time
    assert other.stats.total_seconds == other.stats.seconds
