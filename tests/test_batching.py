"""Token-budget planning and chunking: properties over random inputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.batching import chunk_ids, padded_cost, plan_batches

CLS, SEP = 101, 102

lengths_st = st.lists(st.integers(1, 2000), max_size=200)


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 20000), max_size=st.integers(1, 64))
def test_plan_covers_every_item_once_within_limits(lengths, budget, max_size):
    batches = plan_batches(lengths, budget, max_size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= max_size
        assert padded_cost(lengths, batch) <= budget or len(batch) == 1


@settings(max_examples=100, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 20000), max_size=st.integers(1, 64))
def test_plan_is_greedy_no_batch_could_take_the_next_item(lengths, budget, max_size):
    batches = plan_batches(lengths, budget, max_size)
    for batch, following in zip(batches, batches[1:], strict=False):
        grown = [*batch, following[0]]
        assert len(grown) > max_size or padded_cost(lengths, grown) > budget


def test_plan_buckets_similar_lengths_together():
    lengths = [10, 500, 12, 480, 11, 490]
    assert plan_batches(lengths, token_budget=1500, max_batch_size=8) == [[1, 5, 3], [2, 4, 0]]


def test_oversized_item_gets_its_own_batch():
    assert plan_batches([5000, 10, 10], token_budget=1000, max_batch_size=8) == [[0], [1, 2]]


def test_plan_rejects_nonpositive_limits():
    with pytest.raises(ValueError):
        plan_batches([1], token_budget=0, max_batch_size=1)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 3000),
    max_len=st.integers(8, 512),
    stride_frac=st.floats(0, 0.9),
)
def test_chunks_cover_every_token_in_order_with_overlap(n, max_len, stride_frac):
    ids = list(range(1000, 1000 + n))
    stride = int((max_len - 2) * stride_frac)
    chunks = chunk_ids(ids, CLS, SEP, max_len=max_len, stride=stride)
    bodies = [c[1:-1] for c in chunks]
    assert all(c[0] == CLS and c[-1] == SEP and len(c) <= max_len for c in chunks)
    assert sorted(set().union(*map(set, bodies))) == ids
    for left, right in zip(bodies, bodies[1:], strict=False):
        assert right[0] > left[0], "windows move forward"
        assert len(set(left) & set(right)) >= stride, "consecutive windows share at least `stride` tokens"
        assert right[0] <= left[-1] + 1, "no gap between windows"
    if n > max_len - 2:
        assert all(len(b) == max_len - 2 for b in bodies), "every window of a long text is full"


def test_short_text_is_one_chunk():
    assert chunk_ids([7, 8, 9], CLS, SEP, max_len=512, stride=128) == [[CLS, 7, 8, 9, SEP]]


def test_long_text_chunks_at_512():
    chunks = chunk_ids(list(range(1200)), CLS, SEP, max_len=512, stride=128)
    assert [c[1] for c in chunks] == [0, 382, 690]
    assert chunks[-1][-2] == 1199


def test_stride_must_leave_room_to_advance():
    with pytest.raises(ValueError):
        chunk_ids(list(range(10)), CLS, SEP, max_len=10, stride=8)
