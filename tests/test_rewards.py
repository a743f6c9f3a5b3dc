"""Reward functions (lfpc/rewards.py) against hand-computed values."""

import dataclasses

import pytest

from lfpc.answers import extract_choice
from lfpc.data.records import Sample
from lfpc.rewards import (EpisodeOutcome, RewardConfig, accuracy_reward, conditional_iou_reward, format_reward,
                          l1_reward, score_episode, tool_reward)

OPTIONS = ("red", "blue", "green", "yellow")

# Nested ground truth in a 1000x500 image, smallest first.
SIZE = (1000, 500)
B1 = (100.0, 100.0, 200.0, 200.0)  # area 100*100 = 10,000
B2 = (50.0, 50.0, 250.0, 250.0)  # area 200*200 = 40,000
B3 = (0.0, 0.0, 400.0, 400.0)  # area 400*400 = 160,000
GT = (B1, B2, B3)

# P contains B2 (so all of B1): area 220*220 = 48,400.
# IoU(P, B1) = 10,000/48,400 = 0.207; IoU(P, B2) = 40,000/48,400 = 100/121 = 0.826; IoU(P, B3) = 48,400/160,000 = 0.3025
P = (40.0, 40.0, 260.0, 260.0)
P_IOU = 100 / 121
# normalized L1 of P (x /1000, y /500):
#   to B1: (60/1000 + 60/500 + 60/1000 + 60/500) / 4 = (0.06 + 0.12 + 0.06 + 0.12) / 4 = 0.09
#   to B2: (10/1000 + 10/500 + 10/1000 + 10/500) / 4 = (0.01 + 0.02 + 0.01 + 0.02) / 4 = 0.015   <- closest
#   to B3: (40/1000 + 40/500 + 140/1000 + 140/500) / 4 = (0.04 + 0.08 + 0.14 + 0.28) / 4 = 0.135
P_L1 = 1 - 0.015
# Q covers 89 of B1's 100 columns: coverage 89*100 / 10,000 = 0.89 < tau; IoU(Q, B1) = 8,900 / 10,000 = 0.89,
# IoU(Q, B2) = 8,900 / 40,000 = 0.2225, so Q's max IoU is 0.89 (with B1).
Q = (111.0, 100.0, 200.0, 200.0)


def make_sample(boxes=GT, image_size=SIZE) -> Sample:
    return Sample(id="s1", image_path="img.png", question="What color is the car?", options=OPTIONS, answer="B",
                  boxes=boxes, image_size=image_size)


# ---------------------------------------------------------------- extract_choice / accuracy


@pytest.mark.parametrize("answer", ["B", "(B)", "B.", "B)", "b", "B. blue", "B) blue", "B: blue", "(B) blue",
                                    "Option B", "option (b)", "The answer is B", "Answer: B", "  B \n",
                                    "B. the blue one"])
def test_extract_choice_letter_forms(answer):
    assert extract_choice(answer, OPTIONS) == "B"


@pytest.mark.parametrize(("answer", "letter"), [
    ("The Red.", "A"), ("blue", "B"), ("BLUE!", "B"), ('"green"', "C"), ("a green", "C"),  # "a" is an article here
    ("an yellow", "D"), ("  Yellow \t", "D"),
])
def test_extract_choice_option_text(answer, letter):
    assert extract_choice(answer, OPTIONS) == letter


@pytest.mark.parametrize("answer", [
    None, "", "  ", "...", "purple",
    "E",  # only A-D exist for 4 options
    "A or B", "A, B", "A and B",
    "B. red",  # the letter says B, the text says A
    "blue or green",
])
def test_extract_choice_none_when_no_or_several_options_match(answer):
    assert extract_choice(answer, OPTIONS) is None


def test_extract_choice_ambiguous_between_letter_and_text():
    # "B" is option B by letter but option A ("B") by text
    assert extract_choice("B", ("B", "C")) is None
    # two options with the same normalized text
    assert extract_choice("red", ("Red", "red.", "blue")) is None


def test_extract_choice_option_text_that_looks_like_a_letter():
    # "y" is not a letter of a 2-option question, but it is the text of option B
    assert extract_choice("y", ("x", "y")) == "B"
    assert extract_choice("b", ("x", "y")) == "B"


def test_extract_choice_rejects_too_many_options():
    with pytest.raises(ValueError, match="at most 10 options"):
        extract_choice("A", tuple(str(i) for i in range(11)))


def test_accuracy_reward():
    sample = make_sample()
    assert accuracy_reward("(B)", sample) == 1.0
    assert accuracy_reward("the blue", sample) == 1.0
    assert accuracy_reward("C", sample) == 0.0
    assert accuracy_reward(None, sample) == 0.0
    assert accuracy_reward("A or B", sample) == 0.0


def test_accuracy_reward_free_form_and_judge():
    sample = dataclasses.replace(make_sample(), options=(), answer="12 meters")
    assert accuracy_reward("12 m", sample) == 1.0
    assert accuracy_reward("twelve metres", sample) == 1.0
    assert accuracy_reward("about twelve metres", sample) == 0.0  # an estimate: left to the judge; none: wrong
    assert accuracy_reward("13 m", sample) == 0.0
    assert accuracy_reward("12 feet", sample) == 0.0  # a different unit is left to the judge; none: wrong
    calls = []

    def judge(question, truth, answer):
        calls.append((question, truth, answer))
        return True

    assert accuracy_reward("12 feet", sample, judge) == 1.0
    assert accuracy_reward("13 m", sample, judge) == 0.0  # decided by rule: the judge is not asked
    assert accuracy_reward("not 12 m", sample, judge) == 1.0  # a negation: only the judge can tell
    assert calls == [(sample.question, "12 meters", "12 feet"), (sample.question, "12 meters", "not 12 m")]


# ---------------------------------------------------------------- outcome, format, tool


def test_episode_outcome_is_frozen_and_counts_crops():
    outcome = EpisodeOutcome(answer="B", format_ok=True, crop_boxes=(P, Q), num_invalid_calls=1)
    assert outcome.num_crops == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.answer = "C"


def test_format_and_tool_rewards():
    assert format_reward(EpisodeOutcome(answer="B", format_ok=True)) == 1.0
    assert format_reward(EpisodeOutcome(answer="B", format_ok=False)) == 0.0
    assert tool_reward(True, 1) == 1.0
    assert tool_reward(True, 3) == 1.0
    assert tool_reward(True, 0) == 0.0
    assert tool_reward(False, 2) == 0.0


# ---------------------------------------------------------------- grounding rewards


def test_conditional_iou_max_is_with_a_larger_box():
    # P covers all of B1, and its best IoU is with B2 (100/121), not with B1 (0.207)
    assert conditional_iou_reward(P, GT) == pytest.approx(P_IOU)


def test_conditional_iou_threshold_boundary():
    # coverage 89/100 = 0.89 < 0.9: nothing; without the condition: max IoU 0.89 (with B1)
    assert conditional_iou_reward(Q, GT, tau=0.9) == 0.0
    assert conditional_iou_reward(Q, GT, tau=0.9, require_coverage=False) == pytest.approx(0.89)
    # coverage 91/100 = 0.91 >= 0.9: IoU with B1 = 9,100 / 10,000 = 0.91
    assert conditional_iou_reward((109.0, 100.0, 200.0, 200.0), GT, tau=0.9) == pytest.approx(0.91)
    # coverage exactly 90/100 = 0.9 is enough
    assert conditional_iou_reward((110.0, 100.0, 200.0, 200.0), GT, tau=0.9) == pytest.approx(0.9)
    # a lower tau lets Q through
    assert conditional_iou_reward(Q, GT, tau=0.85) == pytest.approx(0.89)


def test_conditional_iou_empty_gt_and_disjoint():
    assert conditional_iou_reward(P, ()) == 0.0
    assert conditional_iou_reward(P, (), require_coverage=False) == 0.0
    assert conditional_iou_reward((600.0, 300.0, 700.0, 400.0), GT, require_coverage=False) == 0.0


def test_l1_reward_closest_box_and_clamp():
    assert l1_reward(P, GT, SIZE) == pytest.approx(P_L1)
    assert l1_reward(B2, GT, SIZE) == 1.0
    assert l1_reward(P, (), SIZE) == 0.0
    # far outside the image: (0 + 0 + 2990/1000 + 1490/500) / 4 = (2.99 + 2.98) / 4 = 1.4925 > 1 -> clamped to 0
    assert l1_reward((0.0, 0.0, 3000.0, 1500.0), ((0.0, 0.0, 10.0, 10.0),), SIZE) == 0.0


# ---------------------------------------------------------------- RewardConfig


def test_reward_config_defaults():
    cfg = RewardConfig()
    assert (cfg.w_acc, cfg.w_fmt, cfg.w_tool, cfg.iou_mode, cfg.use_l1, cfg.tau, cfg.grounding_box) == \
        (0.8, 0.2, 1.2, "none", False, 0.9, "last")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"iou_mode": "threshold"}, "iou_mode must be one of"),
    ({"grounding_box": "middle"}, "grounding_box must be one of"),
    ({"tau": 0.0}, r"tau must be a number in \(0, 1\]"),
    ({"tau": 1.5}, r"tau must be a number in \(0, 1\]"),
    ({"w_acc": -0.1}, "w_acc must be a finite number >= 0"),
    ({"w_iou": float("nan")}, "w_iou must be a finite number"),
    ({"w_l1": "1"}, "w_l1 must be a finite number"),
    ({"w_tool": True}, "w_tool must be a finite number"),
    ({"use_l1": "yes"}, "use_l1 must be true or false"),
])
def test_reward_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**kwargs)


def test_reward_config_accepts_int_weights():
    assert RewardConfig(w_iou=2, tau=1).w_iou == 2


# ---------------------------------------------------------------- score_episode

BASE = 0.8 + 0.2 + 1.2  # correct, well formatted, cropped: 2.2


def correct(*crops) -> EpisodeOutcome:
    return EpisodeOutcome(answer="B", format_ok=True, crop_boxes=tuple(crops))


def test_score_default_config_has_no_grounding_term():
    scores = score_episode(correct(P), make_sample(), RewardConfig())
    assert scores == pytest.approx({"acc": 1.0, "fmt": 1.0, "tool": 1.0, "iou": 0.0, "l1": 0.0, "total": BASE,
                                    "num_crops": 1.0, "best_iou": P_IOU, "b1_coverage": 1.0})


def test_score_thresh_and_nothresh():
    sample = make_sample()
    assert score_episode(correct(P), sample, RewardConfig(iou_mode="thresh"))["total"] == pytest.approx(BASE + P_IOU)
    thresh = score_episode(correct(Q), sample, RewardConfig(iou_mode="thresh"))
    assert (thresh["iou"], thresh["total"]) == pytest.approx((0.0, BASE))
    assert thresh["b1_coverage"] == pytest.approx(0.89)
    nothresh = score_episode(correct(Q), sample, RewardConfig(iou_mode="nothresh", w_iou=2.0))
    assert (nothresh["iou"], nothresh["total"]) == pytest.approx((0.89, BASE + 2 * 0.89))  # 2.2 + 1.78 = 3.98


def test_score_with_l1():
    cfg = RewardConfig(iou_mode="thresh", use_l1=True, w_l1=0.5)
    scores = score_episode(correct(P), make_sample(), cfg)
    assert scores["l1"] == pytest.approx(0.985)
    assert scores["total"] == pytest.approx(BASE + P_IOU + 0.5 * 0.985)  # 2.2 + 0.826 + 0.4925
    # L1 alone, without the IoU reward
    scores = score_episode(correct(P), make_sample(), RewardConfig(use_l1=True))
    assert (scores["iou"], scores["total"]) == pytest.approx((0.0, BASE + 0.985))


def test_score_wrong_answer_keeps_format_and_grounding_only():
    outcome = EpisodeOutcome(answer="C", format_ok=True, crop_boxes=(P,))
    scores = score_episode(outcome, make_sample(), RewardConfig(iou_mode="thresh"))
    assert (scores["acc"], scores["tool"], scores["total"]) == pytest.approx((0.0, 0.0, 0.2 + P_IOU))


def test_score_bad_format_and_no_crop():
    outcome = EpisodeOutcome(answer="B", format_ok=False)
    scores = score_episode(outcome, make_sample(), RewardConfig(iou_mode="thresh", use_l1=True))
    # only accuracy: 0.8 * 1
    assert scores == pytest.approx({"acc": 1.0, "fmt": 0.0, "tool": 0.0, "iou": 0.0, "l1": 0.0, "total": 0.8,
                                    "num_crops": 0.0, "best_iou": 0.0, "b1_coverage": 0.0})


def test_score_sample_without_boxes_has_no_grounding_term():
    scores = score_episode(correct(P), make_sample(boxes=()), RewardConfig(iou_mode="nothresh", use_l1=True))
    assert (scores["iou"], scores["l1"], scores["best_iou"], scores["total"]) == pytest.approx((0, 0, 0, BASE))


@pytest.mark.parametrize(("grounding_box", "iou_mode", "iou_term", "b1_coverage"), [
    ("first", "thresh", 0.0, 0.89),  # Q: coverage 0.89 < 0.9
    ("last", "thresh", P_IOU, 1.0),  # P
    ("best", "thresh", P_IOU, 1.0),  # Q scores 0, P scores 0.826
    ("first", "nothresh", 0.89, 0.89),
    ("best", "nothresh", 0.89, 0.89),  # Q 0.89 > P 0.826
])
def test_score_grounding_box_choice(grounding_box, iou_mode, iou_term, b1_coverage):
    scores = score_episode(correct(Q, P), make_sample(), RewardConfig(iou_mode=iou_mode, grounding_box=grounding_box))
    assert scores["iou"] == pytest.approx(iou_term)
    assert scores["b1_coverage"] == pytest.approx(b1_coverage)
    assert scores["best_iou"] == pytest.approx(0.89)  # max(0.89, 0.826) over all crops
    assert scores["num_crops"] == 2.0


def test_score_best_box_without_iou_reward_ranks_with_threshold():
    # iou_mode none: "best" still picks P (thresholded IoU 0.826 vs Q's 0), so L1 is P's 0.985,
    # not Q's 1 - (11/1000)/4 = 0.99725
    cfg = RewardConfig(use_l1=True, grounding_box="best")
    assert score_episode(correct(Q, P), make_sample(), cfg)["l1"] == pytest.approx(0.985)


def test_score_best_box_tie_takes_earliest():
    far = (600.0, 300.0, 700.0, 400.0)  # coverage of B1 0
    half = (150.0, 100.0, 250.0, 200.0)  # coverage of B1 50*100/10,000 = 0.5: below tau, so also reward 0
    scores = score_episode(correct(far, half), make_sample(), RewardConfig(iou_mode="thresh", grounding_box="best"))
    assert (scores["iou"], scores["b1_coverage"]) == (0.0, 0.0)


def test_score_l1_needs_image_size():
    with pytest.raises(ValueError, match="no image_size"):
        score_episode(correct(P), make_sample(image_size=None), RewardConfig(use_l1=True))
