"""The one batch former: forward-pass plans, lane batches (budget, size, wait, bucketing, expiry), lane fairness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.batching import (
    BatchLimits,
    LaneLimits,
    LaneScheduler,
    QueueKey,
    TaskQueue,
    fits,
    padded_tokens,
    plan_batch,
    plan_passes,
)


def lane(max_batch_size: int, max_wait_ms: float, token_budget: int, bucket_window_ms: float) -> LaneLimits:
    return LaneLimits(BatchLimits(token_budget, max_batch_size), max_wait_ms, bucket_window_ms)


LIMITS = lane(max_batch_size=4, max_wait_ms=5.0, token_budget=100, bucket_window_ms=10.0)


def _queue(limits: LaneLimits = LIMITS) -> TaskQueue[str]:
    return TaskQueue(limits)


# -- forward passes ----------------------------------------------------------------------------

lengths_st = st.lists(st.integers(1, 2000), max_size=120)


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 20000), max_size=st.integers(1, 64), cost=st.integers(0, 500))
def test_plan_covers_every_item_once_within_limits(lengths: list[int], budget: int, max_size: int, cost: int) -> None:
    limits = BatchLimits(budget, max_size)
    runs = plan_passes(lengths, limits, cost)
    flat = [i for run in runs for i in run]
    assert sorted(flat) == list(range(len(lengths)))
    for run in runs:
        assert fits(max(lengths[i] for i in run), len(run), limits)


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=12), cost=st.integers(0, 300))
def test_plan_costs_no_more_than_one_pass_each_or_all_in_one(lengths: list[int], cost: int) -> None:
    limits = BatchLimits(10**9, 64)
    runs = plan_passes(lengths, limits, cost)
    total = sum(cost + padded_tokens(lengths[i] for i in run) for run in runs)
    assert total <= sum(cost + n for n in lengths)
    assert total <= cost + padded_tokens(lengths)


def test_plan_groups_similar_lengths_and_keeps_long_ones_apart() -> None:
    lengths = [10, 500, 12, 480, 11, 490]
    runs = plan_passes(lengths, BatchLimits(1500, 8), pass_cost=200)
    assert sorted(sorted(run) for run in runs) == [[0, 2, 4], [1, 3, 5]]


def test_an_item_over_the_budget_runs_alone() -> None:
    assert sorted(sorted(r) for r in plan_passes([5000, 10, 10], BatchLimits(1000, 8), pass_cost=200)) == [[0], [1, 2]]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BatchLimits(0, 1)


class _Item:
    def __init__(self, *segments: int) -> None:
        self.segments = segments


def test_plan_batch_covers_every_segment_of_every_item() -> None:
    items = [_Item(512, 512, 130), _Item(40), _Item(38, 500)]
    plan = plan_batch(items, BatchLimits(1024, 64), pass_cost=32)
    refs = sorted(ref for run in plan for ref in run)
    assert refs == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1)]
    for run in plan:
        assert fits(max(items[i].segments[s] for i, s in run), len(run), BatchLimits(1024, 64))


def test_padded_tokens_is_longest_times_count() -> None:
    assert padded_tokens([3, 10, 7]) == 30
    assert padded_tokens([]) == 0


def test_not_ready_until_the_oldest_waited_max_wait() -> None:
    q = _queue()
    q.push("a", 5, now_ms=1000.0)
    q.push("b", 5, now_ms=1003.0)
    assert not q.is_ready(1004.9)
    assert q.is_ready(1005.0)  # measured from "a", not from "b"


def test_ready_at_once_when_a_full_batch_waits() -> None:
    q = _queue()
    for i in range(4):
        q.push(f"t{i}", 5, now_ms=1000.0)
    assert q.is_ready(1000.0)


def test_ready_at_once_when_the_token_budget_is_reached() -> None:
    q = _queue()
    q.push("a", 50, now_ms=1000.0)
    q.push("b", 50, now_ms=1000.0)
    assert q.is_ready(1000.0)


def test_take_respects_size_and_budget() -> None:
    q = _queue()
    for i in range(6):
        q.push(f"t{i}", 30, now_ms=1000.0)
    assert q.take() == ["t0", "t1", "t2"]  # 4 x 30 = 120 > 100
    assert len(q) == 3


def test_a_single_item_over_budget_goes_alone() -> None:
    q = _queue()
    q.push("huge", 500, now_ms=1000.0)
    q.push("small", 5, now_ms=1000.0)
    assert q.take() == ["huge"]
    assert q.take() == ["small"]


def test_expired_items_are_returned_apart_and_never_batched() -> None:
    q = _queue()
    q.push("late", 5, now_ms=1000.0, deadline_ms=1002.0)
    q.push("fine", 5, now_ms=1000.0, deadline_ms=2000.0)
    q.push("none", 5, now_ms=1000.0)
    assert q.pop_expired(1005.0) == ["late"]
    assert q.take() == ["fine", "none"]


def test_length_bucketing_groups_similar_lengths_around_the_oldest() -> None:
    q = _queue(lane(max_batch_size=3, max_wait_ms=5.0, token_budget=1000, bucket_window_ms=10.0))
    for name, n in [("short0", 10), ("long0", 300), ("short1", 12), ("long1", 290), ("short2", 11)]:
        q.push(name, n, now_ms=1000.0)
    assert q.take() == ["short0", "short1", "short2"]
    assert q.take() == ["long0", "long1"]


def test_bucketing_stays_within_the_window() -> None:
    q = _queue(lane(max_batch_size=8, max_wait_ms=5.0, token_budget=1000, bucket_window_ms=10.0))
    q.push("a", 100, now_ms=1000.0)
    q.push("b", 10, now_ms=1000.0)
    q.push("later", 100, now_ms=1050.0)
    # "b" is in the window and fits, so the window is exhausted and FIFO continues with "later".
    assert q.take() == ["a", "b", "later"]


def test_a_skipped_window_item_keeps_later_ones_out() -> None:
    q = _queue(lane(max_batch_size=8, max_wait_ms=5.0, token_budget=200, bucket_window_ms=10.0))
    q.push("a", 10, now_ms=1000.0)
    q.push("b", 10, now_ms=1000.0)
    q.push("big", 150, now_ms=1000.0)  # 150 x 3 > 200: left for its own batch
    q.push("later", 10, now_ms=1050.0)
    assert q.take() == ["a", "b"]
    assert q.take() == ["big"]


def _scheduler(batch_every: int) -> LaneScheduler[str]:
    queues: dict[QueueKey, TaskQueue[str]] = {
        ("fraud", "realtime"): _queue(lane(1, 0.0, 1000, 0.0)),
        ("fraud", "batch"): _queue(lane(1, 0.0, 1000, 0.0)),
    }
    return LaneScheduler(queues, batch_every)


def test_realtime_goes_first_but_batch_never_starves() -> None:
    sched = _scheduler(batch_every=2)
    for i in range(6):
        sched.push(("fraud", "realtime"), f"r{i}", 1, 1000.0, None)
    for i in range(2):
        sched.push(("fraud", "batch"), f"b{i}", 1, 1000.0, None)
    order = []
    while (formed := sched.next_batch(1000.0)) is not None:
        order.extend(formed.batch)
    assert order == ["r0", "r1", "b0", "r2", "r3", "b1", "r4", "r5"]


def test_scheduler_prefers_the_oldest_among_ready_models() -> None:
    queues: dict[QueueKey, TaskQueue[str]] = {
        ("triage", "realtime"): _queue(),
        ("fraud", "realtime"): _queue(),
    }
    sched = LaneScheduler(queues, batch_every=4)
    sched.push(("fraud", "realtime"), "f", 1, 1001.0, None)
    sched.push(("triage", "realtime"), "t", 1, 1000.0, None)
    formed = sched.next_batch(1100.0)
    assert formed is not None and formed.key == ("triage", "realtime") and formed.batch == ["t"]


def test_scheduler_waits_then_flushes_on_demand() -> None:
    limits = {"realtime": lane(32, 2.0, 16384, 10.0), "batch": lane(128, 20.0, 32768, 10.0)}
    sched: LaneScheduler[str] = LaneScheduler.for_kinds(["fraud"], limits, batch_every=4)
    sched.push(("fraud", "batch"), "x", 3, 1000.0, None)
    assert sched.next_batch(1001.0) is None
    assert sched.next_due_ms() == 1000.0 + 20.0
    formed = sched.next_batch(1001.0, flush=True)
    assert formed is not None and formed.batch == ["x"]
    assert len(sched) == 0


items_strategy = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=400),  # n_tokens
        st.floats(min_value=0, max_value=50),  # arrival offset, ms
        st.one_of(st.none(), st.floats(min_value=0, max_value=100)),  # deadline offset, ms
    ),
    max_size=60,
)
limits_strategy = st.builds(
    lane,
    max_batch_size=st.integers(min_value=1, max_value=16),
    max_wait_ms=st.floats(min_value=0, max_value=20),
    token_budget=st.integers(min_value=1, max_value=2000),
    bucket_window_ms=st.floats(min_value=0, max_value=30),
)


@settings(max_examples=200, deadline=None)
@given(items=items_strategy, limits=limits_strategy, now_offset=st.floats(min_value=0, max_value=120))
def test_batches_keep_every_rule_and_lose_nothing(
    items: list[tuple[int, float, float | None]], limits: LaneLimits, now_offset: float
) -> None:
    q: TaskQueue[int] = TaskQueue(limits)
    tokens: dict[int, int] = {}
    deadlines: dict[int, float | None] = {}
    for index, (n_tokens, arrival, deadline) in enumerate(sorted(items, key=lambda it: it[1])):
        deadline_ms = None if deadline is None else 1000.0 + deadline
        q.push(index, n_tokens, 1000.0 + arrival, deadline_ms)
        tokens[index], deadlines[index] = n_tokens, deadline_ms
    now = 1000.0 + now_offset

    def expired(index: int) -> bool:
        deadline = deadlines[index]
        return deadline is not None and deadline <= now

    seen: list[int] = []
    while len(q):
        live = [i for i in range(len(items)) if i not in seen and not expired(i)]
        gone = q.pop_expired(now)
        batch = q.take()
        assert all(expired(i) for i in gone)
        assert not any(expired(i) for i in batch)
        assert len(batch) <= limits.batch.max_batch_size
        if len(batch) > 1:
            assert padded_tokens(tokens[i] for i in batch) <= limits.batch.token_budget
        assert batch == sorted(batch), "a batch keeps queue order"
        if live:
            assert batch[0] == live[0], "the oldest live task always goes next"
        seen.extend(batch + gone)
    assert sorted(seen) == list(range(len(items)))


@settings(max_examples=100, deadline=None)
@given(
    realtime=st.integers(min_value=0, max_value=30),
    batch=st.integers(min_value=0, max_value=10),
    batch_every=st.integers(min_value=1, max_value=5),
)
def test_batch_lane_waits_at_most_batch_every_realtime_batches(realtime: int, batch: int, batch_every: int) -> None:
    sched = _scheduler(batch_every)
    for i in range(realtime):
        sched.push(("fraud", "realtime"), f"r{i}", 1, 1000.0, None)
    for i in range(batch):
        sched.push(("fraud", "batch"), f"b{i}", 1, 1000.0, None)
    streak, served = 0, 0
    while (formed := sched.next_batch(1000.0)) is not None:
        served += 1
        if formed.key == ("fraud", "realtime"):
            streak += 1
            assert streak <= batch_every or len(sched.queues[("fraud", "batch")]) == 0
        else:
            streak = 0
    assert served == realtime + batch


def test_arrivals_behind_an_overdue_oldest_join_its_bucket_window() -> None:
    q = _queue(lane(max_batch_size=8, max_wait_ms=5.0, token_budget=200, bucket_window_ms=10.0))
    assert q.arrival_ms(1000.0) == 1000.0  # empty: its own time
    q.push("a", 10, now_ms=q.arrival_ms(1000.0))
    assert q.arrival_ms(1003.0) == 1003.0  # oldest not yet due: its own time
    q.push("b", 10, now_ms=1003.0)
    q.push("big", 150, now_ms=q.arrival_ms(1050.0))  # oldest overdue: dated with it
    q.push("later", 10, now_ms=q.arrival_ms(1060.0))
    # All four share the window, so "later" is bucketed with the short ones and "big" goes alone.
    assert q.take() == ["a", "b", "later"]
    assert q.take() == ["big"]
