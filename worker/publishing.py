"""Publishing: outcomes, in chunks, through the atomic FINISH script, retried while Redis fails.

Nothing is lost while Redis is away or full: an outcome's entry stays pending until its FINISH ran (a
peer takes it over if this worker dies meanwhile). Each FINISH in a chunk runs on its own, so one that
fails does not hold back the others, and a retried one that already ran only acks. While running, a
chunk is retried for as long as it takes; once the worker drains, until the drain's deadline, after
which the chunk is abandoned (its entries stay pending for a peer) and the drain counts as failed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

import redis

from contracts import TaskStatus
from worker import metrics
from worker.config import Settings
from worker.fetching import Backoff, Holdings, Reachability
from worker.logging import bind_task, get_logger
from worker.outcomes import AckOnly, Answer, DeadLetter, Outcome, Publisher

log = get_logger("publishing")

# Results posted per round trip; each stays atomic on its own inside the pipeline.
PUBLISH_CHUNK: Final = 256


class PublishLoop:
    """The publisher thread's loop: takes outcomes off `outcomes` until the stop marker (None)."""

    def __init__(self, publisher: Publisher, outcomes: queue.Queue[Outcome | None], settings: Settings,
                 holdings: Holdings, turn: Callable[[], None], stopping: threading.Event,
                 idle_turn_s: float, reach: Reachability | None = None) -> None:
        self._publisher = publisher
        self._outcomes = outcomes
        self._settings = settings
        self._holdings = holdings
        self._turn = turn
        self._stopping = stopping
        self._idle_turn_s = idle_turn_s
        self._reach = reach if reach is not None else Reachability()
        # Set by the drain (`give_up_by`): past it, a chunk Redis does not take is abandoned.
        self._give_up_at: float | None = None
        self.abandoned = 0  # outcomes abandoned that way: their entries are still pending
        metrics.TENANTS.set_cap(settings.metrics_max_tenants)

    def give_up_by(self, deadline: float) -> None:
        """Draining: stop retrying at `deadline` (time.monotonic()); call before setting `stopping`."""
        self._give_up_at = deadline

    def loop(self) -> None:
        closing = False
        while not closing:
            self._turn()
            chunk, closing = self._next_outcomes()
            if chunk:
                self._publish_chunk(chunk)

    def _next_outcomes(self) -> tuple[list[Outcome], bool]:
        """Up to PUBLISH_CHUNK outcomes (waiting for the first); True once the stop marker came."""
        try:
            first = self._outcomes.get(timeout=self._idle_turn_s)
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        chunk: list[Outcome] = [first]
        while len(chunk) < PUBLISH_CHUNK:
            try:
                item = self._outcomes.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return chunk, True
            chunk.append(item)
        return chunk, False

    def _publish_chunk(self, chunk: Sequence[Outcome]) -> None:
        """Write a chunk of outcomes, retrying with back-off while Redis fails; once the worker is
        draining, it gives up at the drain's deadline and the entries stay pending."""
        backoff = Backoff("publish", log)
        while True:
            self._turn()
            try:
                posted = self._publisher.finish_many(chunk)
                break
            except redis.RedisError as exc:
                self._reach.failed(exc)
                wait_s = backoff.failed(exc)
                give_up_at = self._give_up_at
                if give_up_at is None:
                    if not self._stopping.is_set():
                        self._stopping.wait(wait_s)  # a drain that starts meanwhile sets its deadline first
                    else:
                        time.sleep(wait_s)
                    continue
                left_s = give_up_at - time.monotonic()
                if left_s <= 0:
                    self.abandoned += len(chunk)
                    log.error("publish.given_up", count=len(chunk), error=type(exc).__name__)
                    return
                time.sleep(min(wait_s, left_s))
        self._reach.answered()
        backoff.succeeded()
        _count(chunk, posted)
        self._holdings.release([o.delivery for o in chunk])


def _count(chunk: Sequence[Outcome], posted: Sequence[bool]) -> None:
    for outcome, new in zip(chunk, posted, strict=True):
        if isinstance(outcome, Answer) and new:
            status = outcome.message.status.value
            metrics.TASKS.labels(outcome.message.kind, status).inc()
            metrics.TOTAL.labels(outcome.message.kind, status).observe(outcome.message.timings.total_ms / 1000.0)
            if outcome.usage is not None:
                # Posted now, so metered now in Redis too: the counters follow the day hashes.
                metrics.count_usage(outcome.usage.tenant, outcome.message.kind, status == TaskStatus.OK.value,
                                    outcome.usage.compute_us / 1_000_000)
        elif isinstance(outcome, AckOnly | Answer):
            metrics.DUPLICATES.inc()
        elif isinstance(outcome, DeadLetter):
            with bind_task(outcome.delivery.task_id or "", outcome.delivery.kind, outcome.delivery.lane):
                log.warning("task.deadlettered", code=outcome.code.value, deliveries=outcome.delivery.deliveries)
            metrics.DEADLETTERED.labels(outcome.code.value).inc()
