"""Box geometry (lfpc/boxes.py) against hand-computed values."""

import math

import pytest

from lfpc.boxes import (area, as_box, box_problem, clip_box, contains, coverage, intersection, iou,
                        mean_target_iou, normalized_l1, scale_box)


def test_as_box_returns_float_tuple():
    box = as_box([1, 2, 3.5, 4])
    assert box == (1.0, 2.0, 3.5, 4.0)
    assert all(type(v) is float for v in box)


@pytest.mark.parametrize(("values", "message"), [
    ([1, 2, 3], "needs 4 numbers"),
    ([1, 2, 3, 4, 5], "needs 4 numbers"),
    ("1234", "got the string"),  # a string of 4 digits is not a box
    (5, "needs 4 numbers"),
    (["a", 2, 3, 4], "must be numbers"),
    ([None, 2, 3, 4], "must be numbers"),
    ([True, 0, 1, 1], "must be numbers"),
    ([float("nan"), 0, 1, 1], "must be finite"),
    ([0, 0, float("inf"), 1], "must be finite"),
])
def test_as_box_rejects_malformed_values(values, message):
    with pytest.raises(ValueError, match=message):
        as_box(values)


def test_area_and_intersection():
    assert area((1, 2, 4, 6)) == 12.0  # 3 * 4
    assert area((5, 5, 3, 8)) == 0.0  # x2 < x1: degenerate
    # overlap of (0,0,4,4) and (2,1,6,3) is (2,1,4,3): 2 * 2 = 4
    assert intersection((0, 0, 4, 4), (2, 1, 6, 3)) == 4.0
    assert intersection((0, 0, 4, 4), (5, 5, 6, 6)) == 0.0


def test_iou_hand_computed():
    # (0,0,10,10) and (5,5,15,15): areas 100 and 100, overlap (5,5,10,10) = 25, union 175 -> 25/175 = 1/7
    assert iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(1 / 7)
    # (0,0,10,10) inside (0,0,20,10): overlap 100, union 200 -> 0.5
    assert iou((0, 0, 10, 10), (0, 0, 20, 10)) == pytest.approx(0.5)
    assert iou((1, 2, 3, 4), (1, 2, 3, 4)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # edges touch, no area shared
    assert iou((0, 0, 0, 0), (1, 1, 1, 1)) == 0.0  # both empty: no division by zero


def test_iou_is_symmetric():
    a, b = (0, 0, 6, 4), (3, 1, 9, 7)
    assert iou(a, b) == iou(b, a)


def test_coverage_is_fraction_of_target():
    # pred (0,0,10,10) vs target (5,5,15,15): overlap 25 / target area 100 = 0.25
    assert coverage((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(0.25)
    # a big pred covers all of a small target, but a small pred covers 25/400 of a big target
    assert coverage((0, 0, 20, 20), (5, 5, 10, 10)) == 1.0
    assert coverage((5, 5, 10, 10), (0, 0, 20, 20)) == pytest.approx(0.0625)
    assert coverage((0, 0, 10, 10), (3, 3, 3, 8)) == 0.0  # degenerate target


def test_contains_allows_touching_borders():
    assert contains((0, 0, 10, 10), (0, 0, 10, 10))
    assert contains((0, 0, 10, 10), (2, 2, 5, 5))
    assert not contains((0, 0, 10, 10), (5, 5, 11, 8))
    assert not contains((2, 2, 5, 5), (0, 0, 10, 10))


def test_scale_box_hand_computed_and_round_trip():
    # from 100x200 to 50x400: sx = 0.5, sy = 2 -> (10*0.5, 20*2, 30*0.5, 40*2)
    assert scale_box((10, 20, 30, 40), (100, 200), (50, 400)) == (5.0, 40.0, 15.0, 80.0)
    box = (13.0, 7.0, 611.0, 333.0)
    there = scale_box(box, (1000, 750), (448, 336))
    assert there == pytest.approx((13 * 0.448, 7 * 0.448, 611 * 0.448, 333 * 0.448))
    assert scale_box(there, (448, 336), (1000, 750)) == pytest.approx(box)


def test_clip_box_to_image():
    assert clip_box((-5, 10, 120, 90), (100, 80)) == (0.0, 10.0, 100.0, 80.0)
    assert clip_box((1, 2, 3, 4), (100, 80)) == (1, 2, 3, 4)
    # a box fully right of the image collapses onto the right edge
    assert clip_box((150, 10, 200, 20), (100, 80)) == (100, 10, 100, 20)


def test_box_problem_messages():
    assert box_problem((0, 0, 10, 10)) is None
    assert box_problem((0, 0, 10, 10), (10, 10)) is None  # borders of the image are inside
    assert box_problem((0, 0, 5000, 5000)) is None  # no size: only the ordering is checked
    assert box_problem((10, 10, 5, 20)) == "box [10, 10, 5, 20] is not ordered as x1<x2, y1<y2"
    assert "not ordered" in box_problem((3, 0, 3, 5))  # zero width
    assert box_problem((0, 0, 10, 10), (5, 20)) == "box [0, 0, 10, 10] lies outside the 5x20 image"
    assert "outside" in box_problem((-1, 0, 4, 4), (5, 20))


def test_normalized_l1_hand_computed():
    # x diffs /100, y diffs /200: (10/100 + 20/200 + 10/100 + 20/200) / 4 = 0.4 / 4 = 0.1
    assert normalized_l1((10, 20, 50, 60), (0, 0, 40, 40), (100, 200)) == pytest.approx(0.1)
    # (50/100 + 100/200 + 0 + 0) / 4 = 1.0 / 4 = 0.25
    assert normalized_l1((0, 0, 100, 200), (50, 100, 100, 200), (100, 200)) == pytest.approx(0.25)
    assert normalized_l1((1, 2, 3, 4), (1, 2, 3, 4), (10, 10)) == 0.0
    assert math.isclose(normalized_l1((0, 0, 40, 40), (10, 20, 50, 60), (100, 200)), 0.1)  # symmetric


def test_mean_target_iou_scores_each_target_box_by_its_best_crop():
    # V* Spatial: two targets far apart; a crop exactly on each scores 1 per target, while the union box of the two
    # (what B1 is) overlaps either crop little
    dog, cat = (0.0, 0.0, 10.0, 10.0), (90.0, 90.0, 100.0, 100.0)
    assert mean_target_iou([dog, cat], [dog, cat]) == 1.0
    assert mean_target_iou([dog], [dog, cat]) == 0.5
    assert iou(dog, (0.0, 0.0, 100.0, 100.0)) == pytest.approx(0.01)
    assert mean_target_iou([], [dog]) is None and mean_target_iou([dog], []) is None
