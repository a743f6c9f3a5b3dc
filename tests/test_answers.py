"""Answer grading (lfpc/answers.py) and the judge cache (lfpc/judge.py) on hand-written cases."""

import pytest

from lfpc.answers import answer_key, grade, is_correct, match_free_form, normalize_text
from lfpc.data.records import Sample
from lfpc.judge import CachedJudge, EngineJudge, load_judge
from lfpc.rollout.base import Completion


def free(answer: str) -> Sample:
    return Sample(id="q", image_path="img.png", question="What is it?", options=(), answer=answer)


def choice(options: tuple[str, ...], answer: str) -> Sample:
    return Sample(id="q", image_path="img.png", question="What is it?", options=options, answer=answer)


def test_normalize_text():
    assert normalize_text("  The Red-Car!  ") == "red car"
    assert normalize_text("An apple, a pear") == "apple pear"
    assert normalize_text("3.5 and 1,000.") == "3.5 and 1,000"


@pytest.mark.parametrize(("prediction", "truth"), [
    ("red", "Red"), ("The red.", "red"), ("  red\n", "red"), ("red car", "the red-car"), ("T-shirt", "t shirt"),
    ("STOP", "stop"), ('"Harbinger School"', "Harbinger School"),
])
def test_text_matches_after_normalisation(prediction, truth):
    assert match_free_form(prediction, truth) is True


@pytest.mark.parametrize(("prediction", "truth"), [
    ("3", "3"), ("three", "3"), ("3", "three"), ("3.0", "3"), ("3 cars", "3"), ("There are 3 cars.", "3"),
    ("1000", "1,000"), ("1,000", "1000"), ("12 m", "12 meters"), ("12 metres", "12 m"), ("12", "12 m"),
    ("$5", "5 dollars"), ("5 USD", "$5"), ("50%", "50 percent"), ("50 %", "50%"), ("0.5", ".5"), ("-2", "-2"),
])
def test_numbers_match(prediction, truth):
    assert match_free_form(prediction, truth) is True


@pytest.mark.parametrize(("prediction", "truth"), [
    ("yes", "Yes"), ("Yes.", "yes"), ("Yes, it is open.", "yes"), ("no", "No"), ("No, there is no dog.", "no"),
    ("true", "yes"), ("False", "no"),
])
def test_yes_no_match(prediction, truth):
    assert match_free_form(prediction, truth) is True


@pytest.mark.parametrize(("prediction", "truth"), [
    ("30", "3"), ("13", "3"), ("3.5", "3"), ("-3", "3"), ("4 cars", "3"), ("3 or 4", "3"), ("between 3 and 5", "3"),
    ("1.000", "1,000"), ("100", "1,000"), ("no", "yes"), ("yes", "no"), ("yes and no", "yes"), ("Yes or no", "no"),
    ("", "red"), ("   ", "3"), ("...", "yes"), (None, "red"),
])
def test_must_not_match(prediction, truth):
    assert match_free_form(prediction, truth) is False


@pytest.mark.parametrize(("prediction", "truth"), [
    ("reddish", "red"), ("not red", "red"), ("red and blue", "red"), ("the left one", "left"),
    ("5 cm", "5 m"), ("not sure", "no"), ("I cannot tell", "yes"), ("many", "3"), ("66", "Route 66"),
])
def test_undecided_answers_are_left_to_the_judge(prediction, truth):
    assert match_free_form(prediction, truth) is None
    assert is_correct(prediction, free(truth)) is False  # no judge: wrong
    assert is_correct(prediction, free(truth), judge=lambda q, t, a: True) is True


def test_options_by_letter_or_text():
    sample = choice(("red", "blue", "1,000"), "B")
    for prediction in ("B", "(B)", "Option B", "blue", "The Blue.", "B. blue"):
        assert grade(prediction, sample) is True
    assert grade("A", sample) is False
    assert grade("red", sample) is False
    assert grade(None, sample) is False
    assert grade("A or B", sample) is None  # names two options: undecided
    assert grade("1000", choice(("red", "blue", "1,000"), "C")) is True  # number rules apply to option text
    assert grade("C", choice(("3", "4", "5"), "A")) is False


def test_judge_is_not_asked_when_a_rule_decides():
    def judge(question, truth, answer):
        raise AssertionError("the judge must not be asked")

    assert is_correct("3", free("3"), judge) is True
    assert is_correct("4", free("3"), judge) is False
    assert is_correct(None, free("red"), judge) is False


def test_judge_sees_the_option_text_for_multiple_choice():
    seen = []
    is_correct("bluish", choice(("red", "blue"), "B"), lambda q, t, a: seen.append((q, t, a)) or True)
    assert seen == [("What is it?", "blue", "bluish")]


def test_answer_key_compares_equivalent_answers():
    sample = free("3")
    assert answer_key("three", sample) == answer_key("3.0", sample) == answer_key("3", sample)
    assert answer_key("4", sample) != answer_key("3", sample)
    assert answer_key("Yes, it is.", free("yes")) == answer_key("yes", free("yes")) == "yes"
    assert answer_key("The Red car", free("red car")) == "red car"
    assert answer_key("", sample) is None and answer_key(None, sample) is None
    assert answer_key("the blue", choice(("red", "blue"), "B")) == "B"


def test_cached_judge_asks_once_and_persists(tmp_path):
    calls = []

    def judge(question, truth, answer):
        calls.append(answer)
        return answer == "crimson"

    path = tmp_path / "judge" / "cache.jsonl"
    cached = CachedJudge(judge, path)
    assert cached("q", "red", "crimson") is True
    assert cached("q", "red", "crimson") is True
    assert cached("q", "red", "blue") is False
    assert calls == ["crimson", "blue"]
    reloaded = CachedJudge(judge, path)  # a new process reads the verdicts back
    assert reloaded("q", "red", "crimson") is True and reloaded("q", "red", "blue") is False
    assert calls == ["crimson", "blue"]


class FakeCodec:
    stop_token_ids = (0,)
    vision_token_ids = (9,)

    def __init__(self):
        self.messages = None

    def start(self, messages, images):
        self.messages = messages
        return object()

    def decode(self, token_ids):
        return {1: "Yes", 2: "no"}[token_ids[0]]


class FakeEngine:
    def __init__(self, token):
        self.token = token
        self.sampling = None

    def generate(self, contexts, sampling):
        self.sampling = sampling
        return [Completion(token_ids=[self.token], logprobs=[0.0], finish_reason="stop")]


def test_engine_judge_asks_greedy_yes_no():
    codec, engine = FakeCodec(), FakeEngine(1)
    assert EngineJudge(engine, codec)("What colour?", "red", "crimson") is True
    assert engine.sampling.temperature == 0.0
    text = codec.messages[0]["content"][0]["text"]
    assert "What colour?" in text and "red" in text and "crimson" in text
    assert EngineJudge(FakeEngine(2), codec)("What colour?", "red", "blue") is False


def test_load_judge_runs_a_local_model_and_never_downloads(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_judge("Qwen/Qwen2.5-VL-72B-Instruct", tmp_path / "cache.jsonl")
    judge = load_judge(tiny_model_dir, tmp_path / "cache.jsonl", dtype="float32")
    verdict = judge("What colour?", "red", "crimson")
    assert isinstance(verdict, bool)
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 1
