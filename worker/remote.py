"""Celery remote control for an inferq worker: `celery inspect` and `celery control` answered from a thread.

Celery answers its mailbox (the `celery.pidbox` fanout exchange) inside the consumer's event loop,
which an inferq worker does not run: its runtime owns fetching and computing. `RemoteControl` runs
the same mailbox node on a thread of its own, over the broker transport, whose non-lane queues and
exchanges are kombu's stock Redis ones, so stock clients (`celery inspect`, `celery status`,
`celery control shutdown`, Flower) on the same database reach it. Celery's own handlers answer
(`ping`, `stats`, `registered`, `conf`, `enable_events`, ...), except two that read Celery's request
bookkeeping, which the runtime does not use: `active` lists the tasks this worker fetched and has not
answered yet (ids, names, lanes; never their requests), and `active_queues` the lanes it consumes;
`revoke` is refused with an error reply (a task is bounded by its deadline instead).
`shutdown` asks the worker to stop as SIGTERM does (graceful drain). Replies and commands are JSON.

A Redis outage is ridden out with back-off, and never reaches the runtime: the worker keeps working
whatever happens to its mailbox.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, Final

from celery import Celery
from celery.utils.collections import AttributeDict
from celery.worker import control
from celery.worker import state as worker_state

from worker.entries import Delivery
from worker.fetching import Backoff
from worker.logging import get_logger

log = get_logger("remote")

# How long one wait for a command lasts, so a stop is noticed within it.
DRAIN_S: Final = 1.0
OMITTED: Final = "<omitted>"


def task_info(delivery: Delivery, hostname: str, pid: int) -> dict[str, Any]:
    """One held task as `celery inspect active` shows a request (arguments omitted: they may hold PHI)."""
    return {
        "id": delivery.task_id, "name": delivery.task_name, "type": delivery.task_name, "args": OMITTED,
        "kwargs": OMITTED, "hostname": hostname, "time_start": delivery.enqueued_ms / 1000.0,
        "acknowledged": False, "worker_pid": pid, "lane": delivery.lane, "deliveries": delivery.deliveries,
        "delivery_info": {"exchange": "", "routing_key": delivery.lane, "redelivered": delivery.deliveries > 1,
                          "priority": None},
    }


def _cannot_revoke(state: Any, **kwargs: Any) -> dict[str, str]:
    """Celery's revoke would only be remembered here, never honoured: say so instead."""
    return {"error": "inferq workers do not revoke tasks; give the request a deadline or timeout_ms"}


class RemoteControl:
    """The worker's mailbox node on a thread: it answers until `stop`."""

    def __init__(self, app: Celery, hostname: str, consumer: Any, held: Callable[[], list[Delivery]],
                 lanes: list[str]) -> None:
        self._app = app
        self._hostname = hostname
        self._held = held
        self._lanes = lanes
        handlers = {**control.Panel.data, "active": self._active, "active_queues": self._active_queues,
                    **dict.fromkeys(("revoke", "terminate", "revoke_by_stamped_headers"), _cannot_revoke)}
        state = AttributeDict(app=app, hostname=hostname, consumer=consumer, tset=set)
        self.node: Any = app.control.mailbox.Node(hostname, handlers=handlers, state=state)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="inferq-remote-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _active(self, state: Any, safe: bool = False, **kwargs: Any) -> list[dict[str, Any]]:
        return [task_info(delivery, self._hostname, os.getpid()) for delivery in self._held()]

    def _active_queues(self, state: Any, **kwargs: Any) -> list[dict[str, Any]]:
        queues = self._app.amqp.queues
        return [dict(queues[lane].as_dict(recurse=True)) for lane in self._lanes]

    def _on_message(self, body: Any, message: Any) -> None:
        self._app.clock.forward()
        try:
            self.node.handle_message(body, message)
        except SystemExit as exc:  # `celery control shutdown`: Celery's handler raises WorkerShutdown
            log.warning("remote.shutdown_requested")
            # The consumer step polls this flag (celery.worker.state.maybe_shutdown) and drains.
            worker_state.should_stop = exc.code if isinstance(exc.code, int) else 0
        except Exception as exc:
            log.warning("remote.command_failed", error=type(exc).__name__)

    def _serve(self) -> None:
        backoff = Backoff("remote_control", log)
        while not self._stop.is_set():
            try:
                self._listen(backoff)
            except Exception as exc:  # the mailbox is never worth the worker: wait and listen again
                self._stop.wait(backoff.failed(exc))

    def _listen(self, backoff: Backoff) -> None:
        with self._app.connection_for_write() as connection:
            self.node.channel = connection.channel()
            consumer = self.node.listen(callback=self._on_message)
            try:
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=DRAIN_S)
                    backoff.succeeded()
            finally:
                with contextlib.suppress(Exception):
                    consumer.cancel()
                with contextlib.suppress(Exception):
                    self.node.channel.close()

