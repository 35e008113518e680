"""Fetching: the loop that keeps a worker supplied with deliveries, and what it holds unanswered.

One thread runs `Fetcher.loop`: every `claim_idle_ms / 3` it restarts the idle clock of what it holds,
takes over stale entries of dead peers and removes departed consumers; otherwise it reads new entries
(one XREADGROUP for many) while it holds less than three batches per lane, and beats its heartbeat.
A Redis error is ridden out with exponential backoff (logged, never fatal): a worker started before
its Redis, or whose Redis restarts, waits and carries on. `Reachability` tells the readiness probe
whether the last round trip of any loop reached a Redis it can work with. Beside it, a second thread
moves stock Celery producers' messages from kombu's lists into the lanes (`worker.celery_lists`) every
`celery_list_poll_ms`, the longest a pushed message waits to be moved; the XADD wakes the fetch.

Out of memory (`maxmemory`, `noeviction`), Redis refuses the heartbeat's HSET and XGROUP CREATE even for
a group that exists; neither stops the loop. Reading (XREADGROUP), taking over (XAUTOCLAIM) and the
FINISH script (`allow-oom`) still run, and finishing deletes lane entries: working on is how a worker
frees memory.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis

from contracts.wire import LANES, Lane
from worker import metrics
from worker.config import Settings
from worker.entries import Delivery
from worker.ingress import Ingress, heartbeat_ttl_s
from worker.logging import get_logger
from worker.outcomes import Publisher

log = get_logger("fetching")

# XREADGROUP blocks at most this long, so a stop request is noticed within it; a task that
# arrives meanwhile ends the wait at once, so it costs no latency.
FETCH_BLOCK_MS: Final = 200
# The longest gap between heartbeats; shorter where claim_idle_ms is, so that the heartbeat of a dead
# worker is gone (`ingress.heartbeat_ttl_s`) by the time its tasks are taken over.
HEARTBEAT_S: Final = 5.0
# Back-off after a Redis error: doubling from the first to the last, so an outage neither spins the
# CPU nor floods the log, and a restart 3 s long is noticed within a second or two.
BACKOFF_FIRST_S: Final = 0.25
BACKOFF_MAX_S: Final = 5.0

Fetched = tuple[float, list[Delivery]]


def heartbeat_interval_s(settings: Settings) -> float:
    """Seconds between heartbeats: three per heartbeat lifetime."""
    return min(HEARTBEAT_S, heartbeat_ttl_s(settings) / 3.0)


def redis_detail(exc: Exception) -> str:
    """Redis' own error text, for a log line: it names a command or a state, never a payload.

    redis-py puts the failed command of a pipeline, arguments and all, in front of it ("Command # 3
    (EVALSHA ... ) of pipeline caused error: ..."); those arguments may be a task's fields, so they go.
    """
    text = str(exc)
    _, annotated, error = text.partition(" of pipeline caused error: ")
    return (error if annotated else text)[:200]


class Reachability:
    """Whether the last Redis round trip of any of a worker's loops reached a Redis it can work with.

    What /readyz reports besides the models. Down, restarting, loading its data, read-only after a
    failover, refusing the worker's credentials: not ready. Out of memory still is: reading, taking
    over and finishing run on a full server, and finishing is what frees it.
    """

    def __init__(self) -> None:
        self.ok = False

    def answered(self) -> None:
        self.ok = True

    def failed(self, exc: Exception) -> None:
        self.ok = isinstance(exc, redis.OutOfMemoryError)


class Backoff:
    """Exponential back-off between failed Redis round trips, logged with the attempt number."""

    def __init__(self, what: str, logger: Any = None) -> None:
        self.what = what
        self.failures = 0
        self._log = logger if logger is not None else log

    def failed(self, exc: Exception) -> float:
        """Log the failure; returns how long to wait before the next attempt."""
        self.failures += 1
        wait_s = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.failures - 1))
        self._log.warning(f"{self.what}.redis_error", error=type(exc).__name__, detail=redis_detail(exc),
                          attempt=self.failures, retry_in_s=wait_s)
        return float(wait_s)

    def succeeded(self) -> None:
        if self.failures:
            self._log.info(f"{self.what}.redis_recovered", after_attempts=self.failures)
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
                 handoff: queue.Queue[Fetched], heartbeat: Callable[[], None],
                 reach: Reachability | None = None) -> None:
        self._ingress, self._publisher, self._settings = ingress, publisher, settings
        self.holdings = holdings
        self._handoff = handoff
        self._heartbeat = heartbeat
        self.reach = reach if reach is not None else Reachability()
        self.stop = threading.Event()
        self.turned = time.monotonic()
        self._beats_refused = 0
        self._bridge_failed: Exception | None = None

    @property
    def redis_ok(self) -> bool:
        return self.reach.ok

    def loop(self) -> None:
        # The bridge thread ends on the same stop event; it is not waited for: a script call in flight
        # either moved its messages into a lane or moved none, and a drain must not wait on a Redis
        # that is gone.
        self._start_bridge()
        self._fetch_loop()

    def _fetch_loop(self) -> None:
        backoff = Backoff("fetch")
        next_claim = next_beat = time.monotonic()
        while not self.stop.is_set():
            self.turned = time.monotonic()
            if self._bridge_failed is not None:
                # The bridge thread died: this loop dies with it, so the worker exits and is restarted.
                raise RuntimeError("the Celery list bridge stopped") from self._bridge_failed
            try:
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + self._settings.claim_idle_ms / 3000.0
                    self._maintain()
                    self.reach.answered()  # before the beat: the first one after a start or an outage says ready
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + heartbeat_interval_s(self._settings)
                    self._beat()
                self._fetch_once()
            except redis.RedisError as exc:
                self.reach.failed(exc)
                self.stop.wait(backoff.failed(exc))
                continue
            self.reach.answered()
            backoff.succeeded()

    def _beat(self) -> None:
        try:
            self._heartbeat()
        except redis.OutOfMemoryError as exc:
            # HSET is refused on a full server (the pipeline's EXPIRE still kept the heartbeat alive);
            # fetching and finishing go on, and finishing is what frees memory. Tried again next beat.
            self._beats_refused += 1
            log.warning("heartbeat.refused", error=type(exc).__name__, detail=redis_detail(exc),
                        attempt=self._beats_refused)
            return
        if self._beats_refused:
            log.info("heartbeat.recovered", after_attempts=self._beats_refused)
            self._beats_refused = 0

    def _maintain(self) -> None:
        # XGROUP CREATE is refused on a full server even when the groups exist; a read that finds one
        # missing recreates it (`Ingress.fetch`), so taking over and clean-up go on regardless.
        with contextlib.suppress(redis.OutOfMemoryError):
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

    def _start_bridge(self) -> None:
        if self._ingress.lists.enabled:
            threading.Thread(target=self._bridge_loop, name="celery-lists", daemon=True).start()

    def _bridge_loop(self) -> None:
        """Move stock Celery messages from kombu's lists into the lanes every `celery_list_poll_ms`, at
        once again while a call moves its whole budget (a backlog).

        A thread of its own, timed on this side: Redis ends a blocked read only on its own clock tick
        (every 100 ms at the default `hz` 10), so a short XREADGROUP block could not bound the wait. The
        XADD of a moved message wakes the fetch loop's blocked read at once.
        """
        backoff = Backoff("celery_lists")
        poll_s = self._settings.celery_list_poll_ms / 1000.0
        wait_s = 0.0
        while not self.stop.wait(wait_s):
            try:
                moved = self._ingress.bridge_lists()
            except redis.RedisError as exc:
                wait_s = backoff.failed(exc)
                continue
            except Exception as exc:
                log.exception("celery_lists.crashed", error=type(exc).__name__)
                self._bridge_failed = exc
                return
            backoff.succeeded()
            wait_s = 0.0 if moved >= self._settings.celery_list_batch else poll_s

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
