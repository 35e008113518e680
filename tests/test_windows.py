"""Overlapping windows of long token sequences: properties over random inputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.triage_runner import chunk_ids

CLS, SEP = 101, 102


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
