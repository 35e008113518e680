"""The Celery side of the worker: the app, its two tasks, and a consumer that runs WorkerRuntime.

Producers keep Celery's usual `send_task("inferq.triage", kwargs={"request": {...}})`; the
broker is the `inferq` Redis Streams transport (`worker.transport`). A Celery worker started
from this app does not consume tasks through kombu: its consumer blueprint replaces the default
steps (connection, event loop, tasks, gossip, mingle, heartbeat) with one step that runs
`WorkerRuntime` (atomic batch fetch, dynamic batching, one inference thread, exactly-once results)
and, unless `INFERQ_REMOTE_CONTROL=false`, two that make it a Celery worker to operators: remote
control on a thread (`worker.remote`: `celery inspect`, `celery status`, `celery control shutdown`)
and events (`worker.events`: worker heartbeats, and task events with `-E`/`INFERQ_TASK_EVENTS` or
once Flower enables them). Celery's warm shutdown (SIGTERM) reaches the runtime step, which runs the
runtime's graceful drain.

Logging is inferq's (`worker.logging`), Celery's loggers included: with JSON logging on, Celery's
banner becomes one `worker.banner` line and its shutdown notices are JSON too, so every line the
worker writes parses as JSON.

Run it with `inferq worker`, `python -m worker.app` (with `INFERQ_REDIS_URL` set), or
`worker.app.run_worker(settings)`. A worker whose thread died, or whose drain ran out of time,
exits non-zero, so its supervisor knows.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

import redis
from celery import Celery, bootsteps, signals
from celery import __version__ as celery_version
from celery.apps import worker as celery_worker_app
from celery.exceptions import WorkerShutdown
from celery.worker import state as celery_worker_state
from celery.worker.consumer import Consumer
from celery.worker.state import maybe_shutdown

from contracts import parse_request
from contracts.wire import DEFAULT_LANE, TASK_FRAUD, TASK_NAMES, TASK_TRIAGE, Kind
from worker import logging as inferq_logging
from worker.adapters import KindAdapter, load_adapters
from worker.config import Settings
from worker.connection import redacted_url
from worker.errors import ConfigurationError
from worker.events import EventSender, Monitor
from worker.logging import get_logger
from worker.remote import RemoteControl
from worker.runtime import WorkerRuntime, default_name
from worker.transport import TRANSPORT_PATH

if __name__ == "__main__":
    # Run as the importable `worker.app`, before this copy defines anything: the consumer step Celery
    # loads by that name must see the settings main() resolved, and a second app, second task
    # registrations and second signal receivers would only confuse Celery.
    from worker.app import main as _main

    sys.exit(_main())

log = get_logger("app")

# How often the consumer step looks at Celery's shutdown flags while the runtime works.
SHUTDOWN_POLL_S: Final = 0.2
# Exit status of a worker that crashed or did not drain in time.
EXIT_FAILED: Final = 1

app = Celery("inferq", set_as_current=False)
app.conf.update(
    broker_transport=TRANSPORT_PATH,
    # Producers importing this app reach the configured Redis; run_worker sets it again.
    broker_url=Settings().redis_url,
    # JSON everywhere: tasks, remote control (kombu's mailbox uses the task serializer), events, results.
    task_serializer="json",
    accept_content=["json"],
    event_serializer="json",
    result_serializer="json",
    result_accept_content=["json"],
    task_protocol=2,
    task_ignore_result=True,
    result_backend=None,
    task_create_missing_queues=True,
    task_routes={name: {"queue": DEFAULT_LANE[kind]} for kind, name in TASK_NAMES.items()},
    # No expiry on the worker's mailbox queue: with one, kombu keeps its binding alive with a Lua script
    # every minute, a write that is no part of a worker's work (and that a paused or full server holds).
    control_queue_expires=None,
    worker_consumer="worker.app:StreamConsumer",
    worker_pool="solo",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_settings: Settings | None = None


def current_settings() -> Settings:
    """The settings `run_worker` was given, else the environment's."""
    return _settings if _settings is not None else Settings()


@functools.cache
def _local_adapter(kind: Kind) -> KindAdapter:
    settings = current_settings().model_copy(update={"kinds": [kind]})
    return load_adapters(settings)[kind]


def compute_one(kind: Kind, request: dict[str, Any]) -> dict[str, Any]:
    """Run one request in this process, unbatched: what `task.apply()` and eager mode do."""
    adapter = _local_adapter(kind)
    [result] = adapter.compute([adapter.prepare(parse_request(kind, request))])
    if isinstance(result, ValueError):
        raise result
    return result.model_dump(mode="json")


def triage(request: dict[str, Any]) -> dict[str, Any]:
    """Triage one note; a worker runs these batched through WorkerRuntime, not this body."""
    return compute_one("triage", request)


def fraud(request: dict[str, Any]) -> dict[str, Any]:
    """Score one transaction; a worker runs these batched through WorkerRuntime, not this body."""
    return compute_one("fraud", request)


# Celery task objects (`.delay`, `.apply`); registered under the wire contract's task names.
triage_task: Any = app.task(name=TASK_TRIAGE)(triage)
fraud_task: Any = app.task(name=TASK_FRAUD)(fraud)


class RuntimeStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step that runs WorkerRuntime until Celery shuts the worker down."""

    label = "inferq runtime"
    last = True

    def __init__(self, c: Any, **kwargs: Any) -> None:
        c.inferq_runtime = None
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        settings = current_settings()
        runtime = WorkerRuntime(settings, name=_runtime_name(c.hostname), monitor=_monitor(c))
        c.inferq_runtime = runtime
        try:
            # Neither starting nor watching talks to Redis: a Redis that is down or restarting is the
            # fetcher's and the publisher's to ride out (back-off, /readyz 503), never a reason to exit.
            runtime.start()
            c.on_ready()
            self._watch(runtime)
        except redis.RedisError as exc:
            # Never let one reach Celery as it is: the transport lists Redis errors as broker connection
            # errors, and Celery's reconnect path for those needs the connection step this consumer
            # does not have (it failed with AttributeError 'connection'). Exit non-zero instead, loudly.
            log.exception("worker.redis_error_at_start", error=type(exc).__name__)
            raise WorkerShutdown(EXIT_FAILED) from exc
        finally:
            drained = runtime.stop()
            if runtime.crashed is not None or not drained:
                # Exit non-zero: a supervisor restarts a crashed worker, and an operator sees a drain
                # that ran out of time (its unfinished tasks are taken over by a peer).
                raise WorkerShutdown(EXIT_FAILED)

    @staticmethod
    def _watch(runtime: WorkerRuntime) -> None:
        """Return only by raising Celery's shutdown exceptions (SIGTERM, SIGINT) or a crash exit."""
        while not runtime.wait(SHUTDOWN_POLL_S):
            maybe_shutdown()
            if not runtime.alive():
                raise WorkerShutdown(EXIT_FAILED)
        raise WorkerShutdown(0)

    def stop(self, c: Any) -> None:
        if c.inferq_runtime is not None:
            c.inferq_runtime.stop()

    shutdown = stop

    def info(self, c: Any) -> dict[str, Any]:
        """`celery inspect stats` adds this under `inferq`."""
        return {"inferq": c.inferq_runtime.stats()} if c.inferq_runtime is not None else {}


def _monitor(c: Any) -> Monitor:
    """The consumer's Monitor, shared by the runtime (which feeds it) and the events step (which sends)."""
    if getattr(c, "inferq_monitor", None) is None:
        c.inferq_monitor = Monitor()
    monitor: Monitor = c.inferq_monitor
    return monitor


def _held_count(c: Any) -> int:
    return len(c.inferq_runtime.held()) if c.inferq_runtime is not None else 0


class EventsStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Celery events: worker heartbeats always, task events with `-E` or once enabled remotely (Flower)."""

    label = "inferq events"

    def __init__(self, c: Any, task_events: bool = False, **kwargs: Any) -> None:
        self.task_events = bool(task_events) or current_settings().task_events
        self.sender: EventSender | None = None
        super().__init__(c, **kwargs)

    def include_if(self, c: Any) -> bool:
        return current_settings().remote_control

    def start(self, c: Any) -> None:
        self.sender = EventSender(c.app, c.hostname, self.task_events, lambda: _held_count(c),
                                  lambda: int(celery_worker_state.all_total_count[0]))
        _monitor(c).events = self.sender
        # Celery's enable_events / disable_events / heartbeat commands act on this.
        c.event_dispatcher = self.sender.dispatcher
        self.sender.start()

    def stop(self, c: Any) -> None:
        if self.sender is not None:
            _monitor(c).events = None
            self.sender.stop()
            self.sender = None

    shutdown = stop


class ControlStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Celery remote control, answered on a thread of its own (worker.remote)."""

    label = "inferq remote control"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.remote: RemoteControl | None = None
        super().__init__(c, **kwargs)

    def include_if(self, c: Any) -> bool:
        return current_settings().remote_control

    def start(self, c: Any) -> None:
        def held() -> list[Any]:
            return c.inferq_runtime.held() if c.inferq_runtime is not None else []

        self.remote = RemoteControl(c.app, c.hostname, c, held, list(current_settings().lanes))
        self.remote.start()

    def stop(self, c: Any) -> None:
        if self.remote is not None:
            self.remote.stop()
            self.remote = None

    shutdown = stop


class StreamConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with inferq's steps: remote control, events, and the runtime, which owns fetching
    and acking."""

    # Celery's own Connection step (left out) sets this; its error paths read it.
    connection: Any = None
    # Read by Celery's remote-control handlers: the events step sets the first; there is no gossip.
    event_dispatcher: Any = None
    gossip: Any = None
    task_consumer: Any = None

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        name = "InferqConsumer"
        default_steps = ["worker.app:ControlStep", "worker.app:EventsStep", "worker.app:RuntimeStep"]


def _runtime_name(celery_hostname: str) -> str:
    """Consumer name in the lanes' group: the Celery node name after `@`, unique per process."""
    node = celery_hostname.split("@", 1)[-1] if celery_hostname else ""
    return node or default_name()


def worker_argv(settings: Settings, name: str | None, loglevel: str) -> list[str]:
    """The `celery worker` command line run_worker uses."""
    node = name or default_name()
    argv = ["worker", f"--loglevel={loglevel}", "--pool=solo", "--concurrency=1"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", f"--hostname=inferq@{node}"]
    argv += [f"--queues={','.join(settings.lanes)}"]
    if settings.task_events:
        argv.append("--task-events")
    return argv


def run_worker(settings: Settings, name: str | None = None, loglevel: str | None = None) -> int:
    """Run a Celery worker that serves `settings.kinds` on `settings.lanes`; returns the exit code.

    `settings.redis_url` must be set (the CLI resolves the embedded default first). Blocks until
    SIGTERM/SIGINT, then drains within `settings.drain_timeout_s`.
    """
    global _settings
    if not settings.redis_url:
        raise ValueError("run_worker needs settings.redis_url; `inferq worker` resolves the embedded default")
    _settings = settings
    lower_priority(settings.nice)
    level = loglevel or settings.log_level
    inferq_logging.configure(level, settings.log_json)
    app.conf.broker_url = settings.redis_url
    return _celery_main(worker_argv(settings, name, level))


def _setup_logging(loglevel: int | str | None = None, **kwargs: Any) -> None:
    """Celery's logging set-up, replaced by inferq's (so Celery's loggers write JSON lines too)."""
    settings = current_settings()
    inferq_logging.configure(loglevel or settings.log_level, settings.log_json)


def _json_banner_only(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    """With JSON logging, Celery's text banner and shutdown notices become JSON lines."""
    if instance is None or not current_settings().log_json:
        return
    instance.quiet = True
    celery_worker_app.safe_say = _json_say  # the module's own name is what its signal handlers call


def _log_banner(sender: Any = None, instance: Any = None, conf: Any = None, **kwargs: Any) -> None:
    if instance is None or not current_settings().log_json:
        return
    app_, settings = instance.app, current_settings()
    # Whatever still writes to stdout or stderr itself (print, a library's traceback of a probe client
    # that hung up) goes through the JSON handler too, which writes to the real stderr.
    inferq_logging.redirect_stdio()
    log.info("worker.banner", hostname=instance.hostname, celery=celery_version,
             broker=redacted_url(app_.conf.broker_url or ""), queues=sorted(app_.amqp.queues.consume_from or []),
             concurrency=instance.concurrency, task_events=bool(instance.task_events) or settings.task_events,
             remote_control=settings.remote_control,
             tasks=sorted(name for name in app_.tasks if not name.startswith("celery.")))


def _json_say(msg: str, f: Any = sys.__stderr__) -> None:
    """Celery's `safe_say` (notices written from signal handlers) as one JSON line, in one write."""
    line = json.dumps({"event": "celery.notice", "message": msg.strip(), "level": "warning",
                       "logger": "celery.apps.worker",
                       "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"})
    with contextlib.suppress(OSError):
        os.write(f.fileno() if f is not None else 2, (line + "\n").encode())


# Connected once per process, however often this module is imported.
signals.setup_logging.connect(_setup_logging, dispatch_uid="inferq.setup_logging")
signals.celeryd_init.connect(_json_banner_only, dispatch_uid="inferq.json_banner_only")
signals.celeryd_after_setup.connect(_log_banner, dispatch_uid="inferq.log_banner")


def lower_priority(increment: int) -> int:
    """Raise this process's niceness by `increment` (0 leaves it); returns the niceness now.

    On a machine shared by a realtime and a batch worker, the batch worker at a higher niceness
    yields the CPU whenever the realtime worker has work, and still gets all of it otherwise.
    """
    return os.nice(increment) if increment else os.nice(0)


def _celery_main(argv: list[str]) -> int:
    """`celery -A worker.app:app <argv>`, returning the worker's exit code.

    `app.start()`/`worker_main()` drop that code (a worker whose models fail to load would exit
    0), so this calls Celery's command the way they do and keeps what it returns.
    """
    from celery.bin.celery import celery as celery_command

    code = celery_command.main(args=["-A", "worker.app:app", *argv], standalone_mode=False)
    return code if isinstance(code, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m worker.app [--name N] [--loglevel L]`: settings from `INFERQ_*` variables.

    `INFERQ_REDIS_URL` must be set; `inferq worker` is the command that falls back to the embedded Valkey.
    """
    parser = argparse.ArgumentParser(prog="python -m worker.app", description="Run an inferq worker.")
    parser.add_argument("--name", help="consumer name in the lanes' group; unique per process")
    parser.add_argument("--loglevel", help="default: INFERQ_LOG_LEVEL")
    args = parser.parse_args(argv)
    settings = Settings()
    if not settings.redis_url:
        raise ConfigurationError("python -m worker.app needs INFERQ_REDIS_URL (`inferq worker` starts an embedded one)")
    return run_worker(settings, name=args.name, loglevel=args.loglevel)

