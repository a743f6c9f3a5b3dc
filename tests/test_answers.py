"""Answer grading (lfpc/answers.py) and the judge cache (lfpc/judge.py) on hand-written cases."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lfpc.answers import answer_key, grade, is_correct, match_free_form, normalize_text
from lfpc.data.records import Sample
from lfpc.judge import CachedJudge, EngineJudge, load_judge
from lfpc.model.loading import model_fingerprint
from lfpc.rollout.base import Completion
from lfpc.rollout.codec import ChatCodec
from lfpc.special_tokens import defuse_special_tokens, find_special_token


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


@pytest.mark.parametrize(("prediction", "truth"), [
    ("not 5", "5"), ("it's not five", "5"), ("It’s not 5.", "5"), ("There aren't 5 cars", "5"), ("5 is wrong", "5"),
    ("anything but 5", "5"), ("more than 5", "5"), ("at least 5", "5"), ("about 5", "5"), ("5 or more", "5"),
    ("5+", "5"), ("~5", "5"), (">= 5", "5"), ("maybe 5", "5"), ("no 5", "5"), ("minus 5", "5"), ("minus 5", "-5"),
    ("not yes", "yes"), ("I wouldn't say no", "no"), ("It is not true", "yes"), ("I dont think so, yes", "yes"),
    ("maybe yes", "yes"), ("No, I wouldn't say no", "no"),
])
def test_negated_bounded_or_hedged_answers_are_never_correct_by_rule(prediction, truth):
    """A careful grader cannot tell what these claim: undecided (the judge's, else wrong), never correct."""
    assert match_free_form(prediction, truth) is None
    assert is_correct(prediction, free(truth)) is False


@pytest.mark.parametrize(("prediction", "truth", "verdict"), [
    ("No, it is not open.", "no", True), ("No - it isn't.", "no", True), ("Yes, but only partly.", "yes", True),
    ("No, it is not open.", "yes", False), ("Not 5, but 6", "6", None), ("The option that is not red", "red", None),
])
def test_a_leading_yes_no_clause_decides_despite_a_negation_after_it(prediction, truth, verdict):
    assert match_free_form(prediction, truth) is verdict


def test_numbers_are_compared_exactly_at_any_length_and_with_the_minus_sign():
    assert match_free_form("9" * 400, "1" * 400) is False                 # both were float('inf')
    assert match_free_form("1" * 400, "1" * 400) is True
    assert match_free_form("1" * 400 + "0", "1" * 400) is False
    assert match_free_form("\u22125", "-5") is True and match_free_form("\u22125", "5") is False
    assert match_free_form("3.0000000001", "3") is False                  # no tolerance: not the same number
    assert answer_key("9" * 400, free("1")) != answer_key("1" * 400, free("1"))
    assert answer_key("3.50", free("1")) == "3.5" and answer_key("1,200", free("1")) == "1200"
    assert answer_key("-0", free("1")) == answer_key("0", free("1")) == "0"


def test_huge_answers_are_graded_quickly():
    for prediction in ("1" * 10**6, "not " * 50_000 + "5", "5 " * 50_000, "yes " * 50_000):
        start = time.perf_counter()
        match_free_form(prediction, "5")
        match_free_form(prediction, "yes")
        answer_key(prediction, free("5"))
        assert time.perf_counter() - start < 30.0  # linear: ~2 s on 2 busy CPU cores; backtracking takes minutes


CORRECT_FORMS = {  # truth -> answers graded correct by rule
    "5": ["5", "five", "5.0", "There are 5 cars."], "-2": ["-2", "\u22122"], "1,000": ["1000", "1,000"],
    "12 m": ["12 m", "12 metres"], "$5": ["5 dollars", "$5"], "yes": ["yes", "Yes", "true"],
    "no": ["no", "NO", "false"],
}
NEGATIONS = ["not {}", "it's not {}", "It’s not {}", "I wouldn't say {}", "definitely not {}", "anything but {}",
             "{} is wrong", "{} is incorrect", "never {}", "isnt {}", "maybe {}", "perhaps {}", "possibly {}"]
BOUNDS = ["more than {}", "less than {}", "fewer than {}", "at least {}", "at most {}", "about {}", "around {}",
          "roughly {}", "nearly {}", "up to {}", "{} or more", "{} or so", "~{}", "> {}", "<{}", "≥{}", "over {}"]


@pytest.mark.parametrize("truth", sorted(CORRECT_FORMS))
def test_every_correct_form_negated_is_never_correct(truth):
    templates = NEGATIONS + (BOUNDS if truth not in ("yes", "no") else [])
    for form in CORRECT_FORMS[truth]:
        assert match_free_form(form, truth) is True, form
        for template in templates:
            for text in (template.format(form), template.format(form).upper(), template.format(form) + "."):
                assert match_free_form(text, truth) is not True, text
                assert answer_key(text, free(truth)) != answer_key(form, free(truth)), text


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-10**600, max_value=10**600), st.integers(min_value=-10**600, max_value=10**600))
def test_two_integers_match_exactly_when_equal(a, b):
    assert match_free_form(str(a), str(b)) is (a == b)
    assert match_free_form(f"{a:,}", str(a)) is True                       # thousands separators
    assert match_free_form(str(a).replace("-", "\u2212"), str(a)) is True  # the minus sign U+2212


PREFIXES = [t for t in NEGATIONS if t.endswith("{}")]  # "not {}", ...: they negate the whole answer after them


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["5", "yes", "no", "red", "12 m", "-3.5"]), st.sampled_from(PREFIXES))
def test_any_text_grades_without_raising_and_negated_is_never_correct(text, truth, prefix):
    assert match_free_form(text, truth) in (True, False, None)
    assert match_free_form(prefix.format(text), truth) is not True
    answer_key(text, free(truth))
    grade(text, choice(("5", "not 5", "yes"), "A"))


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
    assert grade("(B) is not correct", sample) is None                    # the letter is negated
    assert grade("not blue", sample) is None and grade("not 1,000", choice(("red", "blue", "1,000"), "C")) is None
    assert grade("B. not red", choice(("red", "not red"), "B")) is True   # the option's own text says "not"


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
    cached = CachedJudge(judge, path, identity="crimson-judge")
    assert cached("q", "red", "crimson") is True
    assert cached("q", "red", "crimson") is True
    assert cached("q", "red", "blue") is False
    assert calls == ["crimson", "blue"]
    reloaded = CachedJudge(judge, path, identity="crimson-judge")  # a new process reads the verdicts back
    assert reloaded("q", "red", "crimson") is True and reloaded("q", "red", "blue") is False
    assert calls == ["crimson", "blue"]
    lenient = CachedJudge(lambda q, t, a: True, path, identity="lenient")  # another judge, the same file
    assert lenient("q", "red", "blue") is True                           # its own verdict, not the cached False
    assert CachedJudge(judge, path, identity="crimson-judge")("q", "red", "blue") is False


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
    assert judge.identity == model_fingerprint(tiny_model_dir)
    verdict = judge("What colour?", "red", "crimson")
    assert isinstance(verdict, bool)
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 1
    # model output holding chat special tokens is judged as text, not refused by the codec (it raised before)
    for answer in ("cat <|im_end|>", "<|im_start|>user\n<|image_pad|><|vision_start|>"):
        assert isinstance(judge("What colour?", "red <|im_end|>", answer), bool)
        assert isinstance(is_correct(answer, free("cat"), judge), bool)


def test_defused_special_tokens_encode_as_plain_text(tiny_model_dir):
    codec = ChatCodec.for_model(str(tiny_model_dir), max_tokens=4)
    special = {codec.im_end_id, codec.image_pad_id, *codec.vision_token_ids, codec.token_id("<|im_start|>")}
    text = defuse_special_tokens("a <|im_end|><|im_start|> b <|image_pad|> <|vision_start|>")
    assert find_special_token(text) is None and "im_end" in text and "image_pad" in text
    assert not special & set(codec.tokenizer.encode(text, add_special_tokens=False))
