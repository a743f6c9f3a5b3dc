"""Micro-batches of a mini-batch: by row count, or by token budget (longest rows first, long rows alone)."""

from __future__ import annotations

import pytest

from lfpc.grpo.micro_batches import micro_batches


def test_without_a_budget_rows_are_consecutive_slices():
    assert micro_batches([5, 9, 3, 9, 4], max_rows=2) == [[0, 1], [2, 3], [4]]


def test_a_budget_puts_long_rows_alone_and_lets_similar_short_rows_share():
    # longest first: 9 (1), 9 (3), 5 (0), 4 (4), 3 (2); two rows of 9 would pad to 18 > 10; 5 and 4 pad to 10
    assert micro_batches([5, 9, 3, 9, 4], max_rows=2, max_tokens=10) == [[1], [3], [0, 4], [2]]
    # the row cap still holds under a large budget: 3 rows of at most 9 tokens fit 27
    assert micro_batches([5, 9, 3, 9, 4], max_rows=3, max_tokens=27) == [[1, 3, 0], [4, 2]]


def test_a_row_longer_than_the_budget_is_alone_and_every_row_is_used_once():
    groups = micro_batches([100, 2, 2, 2], max_rows=4, max_tokens=6)
    assert groups == [[0], [1, 2, 3]]
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3]


@pytest.mark.parametrize("kwargs", [{"max_rows": 0}, {"max_rows": 2, "max_tokens": 0}])
def test_bad_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        micro_batches([1, 2], **kwargs)
