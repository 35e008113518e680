"""What a worker has done (for `celery inspect stats`) and Celery events about it (for Flower).

The runtime does not run tasks through Celery's request machinery, so it tells a `Monitor` what
happened instead, from its own threads: deliveries fetched, a batch started, an outcome queued. The
monitor counts (cheaply, always) and, while Celery's `task` event group is on (`-E`,
`INFERQ_TASK_EVENTS`, or `celery control enable_events`, which Flower sends), hands
`task-received`, `task-started`, `task-succeeded` and `task-failed` events to an `EventSender`. The
sender publishes them from a thread of its own with Celery's event dispatcher (JSON), together with
`worker-online`, a `worker-heartbeat` every two seconds and `worker-offline`, so the worker
threads never wait for Redis on its account. Events never carry a request or a result body: the
arguments read `<omitted>`, a result only its status.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from celery import Celery
from celery.utils.sysinfo import load_average
from celery.worker import state as worker_state

from worker.entries import Delivery
from worker.fetching import Backoff
from worker.logging import get_logger
from worker.outcomes import AckOnly, Answer, DeadLetter, Outcome
from worker.preparing import Job

log = get_logger("events")

# Celery's own heartbeat period; Flower takes a worker for offline after missing a few.
HEARTBEAT_S: Final = 2.0
# Events waiting to be published; beyond this (Redis away for long) new ones are dropped and counted.
BACKLOG: Final = 10_000
# How often the sender publishes what was queued: events are for people watching, 100 ms is soon enough,
# and the worker threads then only append to a deque (no lock, no wake-up).
FLUSH_S: Final = 0.1
OMITTED: Final = "<omitted>"
TASK_GROUP: Final = "task"


class EventSender:
    """Publishes a worker's Celery events from one thread: heartbeats, and task events handed to `put`."""

    def __init__(self, app: Celery, hostname: str, task_events: bool, active: Callable[[], int],
                 processed: Callable[[], int]) -> None:
        self._app = app
        self._active = active
        self._processed = processed
        groups = ["worker", TASK_GROUP] if task_events else ["worker"]
        # Celery's enable_events/disable_events commands add and remove "task" in `dispatcher.groups`.
        self.dispatcher: Any = app.events.Dispatcher(
            app.connection_for_write(), hostname=hostname, enabled=True, groups=groups, buffer_while_offline=False
        )
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="inferq-events", daemon=True)
        self.dropped = 0

    @property
    def task_events(self) -> bool:
        """Whether task events are on now."""
        return TASK_GROUP in self.dispatcher.groups

    def put(self, event_type: str, fields: dict[str, Any]) -> None:
        """Queue one event for the sender thread; never blocks (a full backlog drops it)."""
        if len(self._pending) >= BACKLOG:
            self.dropped += 1
            return
        self._pending.append((event_type, fields))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Send what is queued and `worker-offline`, then close the connection."""
        self._stop.set()
        self._thread.join(timeout_s)
        with contextlib.suppress(Exception):
            self.dispatcher.connection.close()

    def _loop(self) -> None:
        backoff = Backoff("events", log)
        self._send("worker-online", {}, backoff)
        next_beat = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self._send("worker-heartbeat", self._beat(), backoff)
                next_beat = now + HEARTBEAT_S
            self._flush(backoff)
            self._stop.wait(FLUSH_S)
        self._flush(backoff)
        self._send("worker-offline", {}, backoff)

    def _flush(self, backoff: Backoff) -> None:
        while self._pending:
            event_type, fields = self._pending.popleft()
            self._send(event_type, fields, backoff)

    def _beat(self) -> dict[str, Any]:
        return {"freq": HEARTBEAT_S, "active": self._active(), "processed": self._processed(),
                "loadavg": load_average(), **worker_state.SOFTWARE_INFO}

    def _send(self, event_type: str, fields: dict[str, Any], backoff: Backoff) -> None:
        try:
            self.dispatcher.send(event_type, **fields)
            backoff.succeeded()
        except Exception as exc:  # an event is not worth a thread: log, wait, reconnect, go on
            wait_s = backoff.failed(exc)
            self._stop.wait(wait_s)
            self._reconnect()

    def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.dispatcher.connection.close()
        self.dispatcher.connection = self._app.connection_for_write()
        self.dispatcher.channel = None
        self.dispatcher.enable()


class Monitor:
    """Counts what the runtime did and turns it into task events while those are on.

    Called from the runtime's threads; each call costs a few counter updates, plus one small dict
    per task while task events are on.
    """

    def __init__(self) -> None:
        self.batches = 0
        self.statuses: Counter[str] = Counter()
        self.events: EventSender | None = None

    def stats(self, lanes: Sequence[str], kinds: Sequence[str], held: Sequence[Delivery], ready: bool
              ) -> dict[str, object]:
        """Lanes, kinds, batches run, answers by status, tasks in hand per lane, readiness."""
        return {
            "lanes": list(lanes), "kinds": list(kinds), "ready": ready, "batches": self.batches,
            "answered": dict(self.statuses), "held": {lane: sum(d.lane == lane for d in held) for lane in lanes},
        }

    def _task_events(self) -> EventSender | None:
        events = self.events
        return events if events is not None and events.task_events else None

    def received(self, deliveries: Iterable[Delivery]) -> None:
        events = self._task_events()
        if events is None:
            return
        for delivery in deliveries:
            if delivery.task_id is not None:
                events.put("task-received", {
                    "uuid": delivery.task_id, "name": delivery.task_name or "", "args": OMITTED, "kwargs": OMITTED,
                    "retries": max(0, delivery.deliveries - 1), "eta": None, "expires": None,
                    "root_id": delivery.task_id, "parent_id": None, "routing_key": delivery.lane,
                })

    def batch_started(self, jobs: Sequence[Job]) -> None:
        self.batches += 1
        events = self._task_events()
        if events is None:
            return
        for job in jobs:
            events.put("task-started", {"uuid": job.task_id})  # the dispatcher adds pid and hostname

    def outcome(self, outcome: Outcome) -> None:
        if isinstance(outcome, AckOnly):
            return  # a duplicate delivery: its task was answered before
        delivery = outcome.delivery
        status = outcome.message.status.value if isinstance(outcome, Answer) else "failed"
        self.statuses[status] += 1
        name = delivery.task_name or ""
        worker_state.total_count[name] += 1
        worker_state.all_total_count[0] += 1
        events = self._task_events()
        if events is None or delivery.task_id is None:
            return
        events.put(*_outcome_event(outcome, delivery.task_id, status))


def _outcome_event(outcome: Answer | DeadLetter, task_id: str, status: str) -> tuple[str, dict[str, Any]]:
    if isinstance(outcome, Answer):
        message = outcome.message
        runtime_s = message.timings.compute_ms / 1000.0
        if message.error is None:
            return "task-succeeded", {"uuid": task_id, "result": repr(status), "runtime": runtime_s}
        code = message.error.code.value
    else:
        code = outcome.code.value
    return "task-failed", {"uuid": task_id, "exception": f"{status}: {code}", "traceback": ""}
