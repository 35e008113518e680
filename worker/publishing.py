"""Publishing: outcomes, in chunks, through the atomic FINISH script, retried while Redis fails.

Nothing is lost while Redis is away: an outcome's entry stays pending until its FINISH ran (a peer
takes it over if this worker dies meanwhile).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

import redis

from worker import metrics
from worker.config import Settings
from worker.fetching import Backoff, Holdings
from worker.logging import bind_task, get_logger
from worker.outcomes import AckOnly, Answer, DeadLetter, Outcome, Publisher

log = get_logger("publishing")

# Results posted per round trip; each stays atomic on its own inside the pipeline.
PUBLISH_CHUNK: Final = 256


class PublishLoop:
    """The publisher thread's loop: takes outcomes off `outcomes` until the stop marker (None)."""

    def __init__(self, publisher: Publisher, outcomes: queue.Queue[Outcome | None], settings: Settings,
                 holdings: Holdings, turn: Callable[[], None], stopping: threading.Event,
                 idle_turn_s: float) -> None:
        self._publisher = publisher
        self._outcomes = outcomes
        self._settings = settings
        self._holdings = holdings
        self._turn = turn
        self._stopping = stopping
        self._idle_turn_s = idle_turn_s

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
        stopping, it gives up after drain_timeout_s and the entries stay pending."""
        backoff = Backoff("publish")
        deadline = time.monotonic() + self._settings.drain_timeout_s
        while True:
            self._turn()
            try:
                posted = self._publisher.finish_many(chunk)
                break
            except redis.RedisError as exc:
                if self._stopping.is_set() and time.monotonic() > deadline:
                    log.error("publish.given_up", count=len(chunk))
                    return
                backoff.failed(exc, threading.Event())
        backoff.succeeded()
        _count(chunk, posted)
        self._holdings.release([o.delivery for o in chunk])


def _count(chunk: Sequence[Outcome], posted: Sequence[bool]) -> None:
    for outcome, new in zip(chunk, posted, strict=True):
        if isinstance(outcome, Answer) and new:
            status = outcome.message.status.value
            metrics.TASKS.labels(outcome.message.kind, status).inc()
            metrics.TOTAL.labels(outcome.message.kind, status).observe(outcome.message.timings.total_ms / 1000.0)
        elif isinstance(outcome, AckOnly | Answer):
            metrics.DUPLICATES.inc()
        elif isinstance(outcome, DeadLetter):
            with bind_task(outcome.delivery.task_id or "", outcome.delivery.kind, outcome.delivery.lane):
                log.warning("task.deadlettered", code=outcome.code.value, deliveries=outcome.delivery.deliveries)
            metrics.DEADLETTERED.labels(outcome.code.value).inc()
