"""The one batch former: which queued tasks run together, and how a batch is cut into forward passes.

Two levels, one rule. A *lane batch* is what a worker takes off one (kind, lane) queue at a time:
the oldest task and its nearest neighbours by length, bounded by the lane's `BatchLimits` and
released when the oldest has waited `max_wait_ms` or a full batch is waiting. A *forward pass* is a
group of segments (a triage note's windows, a fraud input's padded events) that the runner computes
in one call, bounded by the runner's own `BatchLimits` for its device: `plan_passes` cuts a lane
batch into passes of least padded cost. Both levels ask the same question, `fits`: does a group of
`count` items, padded to its longest, stay within a token budget and a size limit?

Pure logic, no threads, no Redis: the worker pushes prepared tasks and asks for the next batch with
the current time (epoch milliseconds, the clock deadlines are written in), and the training wing
evaluates through `plan_passes` exactly as a worker serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

T = TypeVar("T")

Lane = Literal["realtime", "batch"]
LANE_ORDER: tuple[Lane, ...] = ("realtime", "batch")
QueueKey = tuple[str, Lane]
"""(kind, lane): one queue per model and lane."""


@dataclass(frozen=True)
class BatchLimits:
    """A padded-token budget (longest x count) and a size limit, for a lane batch or a forward pass."""

    token_budget: int
    max_batch_size: int

    def __post_init__(self) -> None:
        if self.token_budget < 1 or self.max_batch_size < 1:
            raise ValueError("token_budget and max_batch_size must be positive")


def fits(longest: int, count: int, limits: BatchLimits) -> bool:
    """Whether `count` items padded to `longest` stay within `limits`; one item alone always fits.

    The only fit check of the engine and the worker: lane batches, buckets and forward passes all
    ask it.
    """
    if count <= 1:
        return count == 1
    return count <= limits.max_batch_size and longest * count <= limits.token_budget


def padded_tokens(n_tokens: Iterable[int]) -> int:
    """Cost of a group padded to its longest item: longest x count."""
    lengths = list(n_tokens)
    return max(lengths, default=0) * len(lengths)


# ---------------------------------------------------------------------------------------------
# Forward passes


class Segmented(Protocol):
    """A prepared item: the lengths of the segments a forward pass takes (windows, padded events)."""

    @property
    def segments(self) -> tuple[int, ...]: ...


SegmentRef = tuple[int, int]
"""(item index in the batch, segment index within the item)."""

BatchPlan = list[list[SegmentRef]]
"""Forward passes in order; each pass lists the segments it computes."""


def plan_passes(lengths: Sequence[int], limits: BatchLimits, pass_cost: int) -> list[list[int]]:
    """Index groups of least total cost, each pass costing `pass_cost` + longest x count tokens.

    The lengths are sorted longest first and cut into runs by dynamic programming, so a long item
    pads short ones only when a pass of their own would cost more than the padding. A run must
    `fit` the limits; one item longer than the budget runs alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    best = [0] * (len(order) + 1)  # best[end]: least cost of order[:end]
    cut = [0] * (len(order) + 1)  # cut[end]: where the last run of that plan starts
    for end in range(1, len(order) + 1):
        best[end] = -1
        for start in range(end - 1, -1, -1):
            if not fits(lengths[order[start]], end - start, limits):
                break
            cost = best[start] + pass_cost + lengths[order[start]] * (end - start)
            if best[end] < 0 or cost < best[end]:
                best[end], cut[end] = cost, start
    runs, end = [], len(order)
    while end > 0:
        runs.append(order[cut[end] : end])
        end = cut[end]
    return runs[::-1]


def plan_batch(items: Sequence[Segmented], limits: BatchLimits, pass_cost: int) -> BatchPlan:
    """The forward passes of one lane batch: every segment of every item, in passes of least cost."""
    refs = [(item, seg) for item, prepared in enumerate(items) for seg in range(len(prepared.segments))]
    lengths = [items[item].segments[seg] for item, seg in refs]
    return [[refs[i] for i in run] for run in plan_passes(lengths, limits, pass_cost)]


# ---------------------------------------------------------------------------------------------
# Lane batches


@dataclass(frozen=True)
class LaneLimits:
    """How one lane forms batches: a budget and size, the longest wait, the bucketing window."""

    batch: BatchLimits
    max_wait_ms: float
    bucket_window_ms: float


@dataclass(frozen=True)
class _Entry(Generic[T]):
    item: T
    n_tokens: int
    queued_ms: float
    deadline_ms: float | None

    def expired(self, now_ms: float) -> bool:
        return self.deadline_ms is not None and self.deadline_ms <= now_ms


@dataclass
class Formed(Generic[T]):
    """One lane batch released by the scheduler, and the queue it came from."""

    key: QueueKey
    batch: list[T] = field(default_factory=list)


class TaskQueue(Generic[T]):
    """Prepared tasks of one model and lane, waiting to be batched (FIFO, with length bucketing)."""

    def __init__(self, limits: LaneLimits) -> None:
        self.limits = limits
        self._entries: list[_Entry[T]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, item: T, n_tokens: int, now_ms: float, deadline_ms: float | None = None) -> None:
        self._entries.append(_Entry(item, max(n_tokens, 1), now_ms, deadline_ms))

    def oldest_ms(self) -> float | None:
        return self._entries[0].queued_ms if self._entries else None

    def due_ms(self) -> float | None:
        """When the oldest task has waited `max_wait_ms`; None when empty."""
        oldest = self.oldest_ms()
        return None if oldest is None else oldest + self.limits.max_wait_ms

    def arrival_ms(self, now_ms: float) -> float:
        """The queue time to push a task arriving now with: the oldest's once that one is overdue.

        Under a backlog the oldest task is always overdue, and tasks prepared a few at a time
        would otherwise each sit in their own `bucket_window_ms`, so bucketing saw only the last
        few and batches stayed small (fraud: a mean of 16 against 60 from one whole fetch). Dated
        with the overdue oldest, everything queued behind it is bucketed together; max_wait is
        already spent, so no batch leaves later for it.
        """
        due = self.due_ms()
        if due is None or now_ms < due:
            return now_ms
        return self._entries[0].queued_ms

    def is_ready(self, now_ms: float) -> bool:
        """A batch should go now: the oldest waited long enough, or a full batch is waiting."""
        due = self.due_ms()
        if due is None:
            return False
        if now_ms >= due:
            return True
        # Full: one more task as long as the longest would not fit.
        return not fits(max(e.n_tokens for e in self._entries), len(self._entries) + 1, self.limits.batch)

    def pop_expired(self, now_ms: float) -> list[T]:
        expired = [e.item for e in self._entries if e.expired(now_ms)]
        if expired:
            self._entries = [e for e in self._entries if not e.expired(now_ms)]
        return expired

    def take(self) -> list[T]:
        """The next lane batch: the oldest task plus its nearest neighbours by length, then FIFO."""
        if not self._entries:
            return []
        chosen = set(self._select())
        batch = [e.item for i, e in enumerate(self._entries) if i in chosen]
        self._entries = [e for i, e in enumerate(self._entries) if i not in chosen]
        return batch

    def drain(self) -> list[T]:
        """Everything still queued, oldest first; the queue is empty afterwards."""
        items = [e.item for e in self._entries]
        self._entries = []
        return items

    def _window(self) -> list[int]:
        """Indices of the tasks queued within `bucket_window_ms` of the oldest one."""
        start = self._entries[0].queued_ms
        return [i for i, e in enumerate(self._entries) if e.queued_ms - start <= self.limits.bucket_window_ms]

    def _grows(self, longest: int, count: int, n_tokens: int) -> bool:
        return fits(max(longest, n_tokens), count + 1, self.limits.batch)

    def _select(self) -> list[int]:
        window = self._window()
        by_length = sorted(window, key=lambda i: (self._entries[i].n_tokens, i))
        chosen = self._bucket(by_length, by_length.index(0))
        if len(chosen) == len(window):
            chosen += self._fifo_after(window[-1] + 1, chosen)
        return chosen

    def _bucket(self, by_length: list[int], anchor_pos: int) -> list[int]:
        anchor_tokens = self._entries[0].n_tokens
        chosen, longest = [0], anchor_tokens
        lo, hi = anchor_pos - 1, anchor_pos + 1
        while True:
            sides = [p for p in (lo, hi) if 0 <= p < len(by_length)]
            sides.sort(key=lambda p: abs(self._entries[by_length[p]].n_tokens - anchor_tokens))
            pick = next(
                (p for p in sides if self._grows(longest, len(chosen), self._entries[by_length[p]].n_tokens)), None
            )
            if pick is None:
                return chosen
            index = by_length[pick]
            chosen.append(index)
            longest = max(longest, self._entries[index].n_tokens)
            lo, hi = (lo - 1, hi) if pick == lo else (lo, hi + 1)

    def _fifo_after(self, start: int, chosen: list[int]) -> list[int]:
        longest = max(self._entries[i].n_tokens for i in chosen)
        extra: list[int] = []
        for index in range(start, len(self._entries)):
            n_tokens = self._entries[index].n_tokens
            if not self._grows(longest, len(chosen) + len(extra), n_tokens):
                break
            extra.append(index)
            longest = max(longest, n_tokens)
        return extra


class LaneScheduler(Generic[T]):
    """Chooses which queue runs next: realtime first, a batch-lane batch after at most `batch_every`."""

    def __init__(self, queues: Mapping[QueueKey, TaskQueue[T]], batch_every: int) -> None:
        self.queues = dict(queues)
        self.batch_every = batch_every
        self._realtime_streak = 0

    @classmethod
    def for_kinds(cls, kinds: Iterable[str], limits: Mapping[Lane, LaneLimits], batch_every: int) -> LaneScheduler[T]:
        queues: dict[QueueKey, TaskQueue[T]] = {
            (kind, lane): TaskQueue(limits[lane]) for kind in kinds for lane in LANE_ORDER
        }
        return cls(queues, batch_every)

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def push(self, key: QueueKey, item: T, n_tokens: int, now_ms: float, deadline_ms: float | None) -> None:
        self.queues[key].push(item, n_tokens, now_ms, deadline_ms)

    def pop_expired(self, now_ms: float) -> list[T]:
        return [item for q in self.queues.values() for item in q.pop_expired(now_ms)]

    def next_due_ms(self) -> float | None:
        """Earliest time some queue becomes ready by waiting; None when all are empty."""
        dues = [d for q in self.queues.values() if (d := q.due_ms()) is not None]
        return min(dues, default=None)

    def next_batch(self, now_ms: float, flush: bool = False) -> Formed[T] | None:
        """The next lane batch to run, or None when no queue is ready (`flush`: every non-empty one is).

        Expired tasks are not taken: call `pop_expired` first and answer them.
        """
        key = self._choose(now_ms, flush)
        if key is None:
            return None
        self._realtime_streak = self._realtime_streak + 1 if key[1] == "realtime" else 0
        return Formed(key, self.queues[key].take())

    def drain(self) -> list[T]:
        return [item for q in self.queues.values() for item in q.drain()]

    def _ready(self, lane: Lane, now_ms: float, flush: bool) -> list[QueueKey]:
        keys = [k for k, q in self.queues.items() if k[1] == lane and (q.is_ready(now_ms) or (flush and len(q)))]
        return sorted(keys, key=lambda k: self.queues[k].oldest_ms() or 0.0)

    def _choose(self, now_ms: float, flush: bool) -> QueueKey | None:
        realtime = self._ready("realtime", now_ms, flush)
        batch = self._ready("batch", now_ms, flush)
        if batch and (not realtime or self._realtime_streak >= self.batch_every):
            return batch[0]
        if realtime:
            return realtime[0]
        return None

