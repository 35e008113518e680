"""Fetching: the loop that keeps a worker supplied with deliveries, and what it holds unanswered.

One thread runs `Fetcher.loop`: every `claim_idle_ms / 3` it restarts the idle clock of what it holds,
takes over stale entries of dead peers and removes departed consumers; otherwise it reads new entries
(one XREADGROUP for many) while it holds less than three batches per lane, and beats its heartbeat.
A Redis error is ridden out with exponential backoff (logged, never fatal), and `redis_ok` tells the
readiness probe whether the last round trip succeeded.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

import redis

from contracts.wire import LANES, Lane
from worker import metrics
from worker.config import Settings
from worker.entries import Delivery
from worker.ingress import Ingress
from worker.logging import get_logger
from worker.outcomes import Publisher

log = get_logger("fetching")

# XREADGROUP blocks at most this long, so a stop request is noticed within it; a task that
# arrives meanwhile ends the wait at once, so it costs no latency.
FETCH_BLOCK_MS: Final = 200
HEARTBEAT_S: Final = 5.0
# Back-off after a Redis error: doubling from the first to the last, so an outage neither spins the
# CPU nor floods the log, and a restart 3 s long is noticed within a second or two.
BACKOFF_FIRST_S: Final = 0.25
BACKOFF_MAX_S: Final = 5.0

Fetched = tuple[float, list[Delivery]]


class Backoff:
    """Exponential back-off between failed Redis round trips, logged with the attempt number."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def failed(self, exc: Exception, stop: threading.Event) -> None:
        self.failures += 1
        wait_s = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.failures - 1))
        # Redis's own error text names a command or a state, never a payload.
        log.warning(f"{self.what}.redis_error", error=type(exc).__name__, detail=str(exc)[:200],
                    attempt=self.failures, retry_in_s=wait_s)
        stop.wait(wait_s)

    def succeeded(self) -> None:
        if self.failures:
            log.info(f"{self.what}.redis_recovered", after_attempts=self.failures)
        self.failures = 0


class Holdings:
    """Deliveries this worker fetched and has not answered yet, per lane; fetching waits for room."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._held: dict[str, dict[str, Delivery]] = {lane: {} for lane in LANES}
        self._room = threading.Condition()

    def limit(self, lane: str) -> int:
        """Tasks of one lane this worker may hold unanswered: three full batches.

        Why three: one batch runs, the next waits prepared, and a third is being fetched and
        prepared while results of the first are posted (with two, batches came out ~10% smaller
        under a saturating fraud backlog); more would only hoard work that idle workers could do
        now, and that a crash would delay by claim_idle_ms.
        """
        return 3 * self._settings.lane(lane).max_batch_size

    def add(self, deliveries: Sequence[Delivery]) -> None:
        with self._room:
            for delivery in deliveries:
                self._held[delivery.lane][delivery.entry_id] = delivery
            self._count()

    def release(self, deliveries: Sequence[Delivery]) -> None:
        with self._room:
            for delivery in deliveries:
                self._held[delivery.lane].pop(delivery.entry_id, None)
            self._count()
            self._room.notify_all()

    def all(self) -> list[Delivery]:
        with self._room:
            return [d for lane in self._held.values() for d in lane.values()]

    def room(self) -> tuple[list[Lane], int]:
        """Lanes with room to fetch into, and how many entries one fetch may take."""
        with self._room:
            room = {lane: self.limit(lane) - len(self._held[lane]) for lane in self._settings.lanes}
        lanes = [lane for lane in LANES if room.get(lane, 0) > 0]
        return lanes, min([self._settings.fetch_count, *(room[lane] for lane in lanes)])

    def wait_for_room(self, timeout_s: float) -> None:
        with self._room:
            self._room.wait(timeout_s)

    def _count(self) -> None:
        for lane, held in self._held.items():
            metrics.HELD.labels(lane).set(len(held))


class Fetcher:
    """The fetch loop of one worker: reads, takes over, beats; hands each group to `handoff`."""

    def __init__(self, ingress: Ingress, publisher: Publisher, settings: Settings, holdings: Holdings,
                 handoff: queue.Queue[Fetched], heartbeat: Callable[[], None]) -> None:
        self._ingress, self._publisher, self._settings = ingress, publisher, settings
        self.holdings = holdings
        self._handoff = handoff
        self._heartbeat = heartbeat
        self.stop = threading.Event()
        self.redis_ok = False
        self.turned = time.monotonic()

    def loop(self) -> None:
        backoff = Backoff("fetch")
        next_claim = next_beat = time.monotonic()
        while not self.stop.is_set():
            self.turned = time.monotonic()
            try:
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + self._settings.claim_idle_ms / 3000.0
                    self._maintain()
                    self.redis_ok = True  # before the beat: the first one after a start or an outage says ready
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_S
                    self._heartbeat()
                self._fetch_once()
            except redis.RedisError as exc:
                self.redis_ok = False
                backoff.failed(exc, self.stop)
                continue
            self.redis_ok = True
            backoff.succeeded()

    def _maintain(self) -> None:
        self._ingress.ensure_groups()
        held = self.holdings.all()
        if held:
            self._ingress.touch(held)
        claimed = self._ingress.claim_stale(self._settings.fetch_count)
        metrics.CLAIMED.inc(len(claimed))
        self._route(claimed)
        self._ingress.remove_departed()

    def _fetch_once(self) -> None:
        lanes, count = self.holdings.room()
        if not lanes:
            self.holdings.wait_for_room(FETCH_BLOCK_MS / 1000.0)
            return
        self._route(self._ingress.fetch(lanes, count, FETCH_BLOCK_MS))

    def _route(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        self.holdings.add(deliveries)
        fetched_ms = time.time() * 1000.0
        while not self.stop.is_set():
            try:
                self._handoff.put((fetched_ms, deliveries), timeout=0.1)
                return
            except queue.Full:
                continue
        # Stopping: these never started, so they go straight back for another worker.
        self._publisher.requeue(deliveries)
        metrics.REQUEUED.inc(len(deliveries))
        self.holdings.release(deliveries)
