"""The Celery side of the worker: the app, its two tasks, and a consumer that runs WorkerRuntime.

Producers keep Celery's usual `send_task("inferq.triage", kwargs={"request": {...}})`; the
broker is the `inferq` Redis Streams transport (`worker.transport`). A Celery worker started
from this app does not consume through kombu: its consumer blueprint replaces the default
`Tasks` step (and the event loop, gossip, mingle, heartbeat and remote control, which need
broadcast exchanges the lane streams do not carry) with one step that runs `WorkerRuntime`:
atomic batch fetch, dynamic batching, one inference thread, exactly-once results. Celery's
warm shutdown (SIGTERM) reaches that step, which runs the runtime's graceful drain.

Run it with `inferq worker`, `python -m worker.app` (with `INFERQ_REDIS_URL` set), or
`worker.app.run_worker(settings)`. A worker whose thread died, or whose drain ran out of time,
exits non-zero, so its supervisor knows.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from typing import Any, Final

import redis
from celery import Celery, bootsteps
from celery.exceptions import WorkerShutdown
from celery.worker.consumer import Consumer
from celery.worker.state import maybe_shutdown

from contracts import parse_request
from contracts.wire import DEFAULT_LANE, TASK_FRAUD, TASK_NAMES, TASK_TRIAGE, Kind
from worker import logging as inferq_logging
from worker.adapters import KindAdapter, load_adapters
from worker.config import Settings
from worker.errors import ConfigurationError
from worker.logging import get_logger
from worker.runtime import WorkerRuntime, default_name
from worker.transport import TRANSPORT_PATH

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
    task_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_protocol=2,
    task_ignore_result=True,
    result_backend=None,
    task_create_missing_queues=True,
    task_routes={name: {"queue": DEFAULT_LANE[kind]} for kind, name in TASK_NAMES.items()},
    worker_consumer="worker.app:StreamConsumer",
    worker_pool="solo",
    worker_enable_remote_control=False,
    worker_send_task_events=False,
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
        runtime = WorkerRuntime(settings, name=_runtime_name(c.hostname))
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


class StreamConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with one step: the inferq runtime, which owns fetching and acking."""

    # Celery's own Connection step (left out) sets this; its error paths read it.
    connection: Any = None

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        name = "InferqConsumer"
        default_steps = ["worker.app:RuntimeStep"]


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


if __name__ == "__main__":
    # Run as the importable `worker.app`: the consumer step Celery loads by that name must see the
    # settings main() resolved, not a second copy of this module's globals.
    from worker.app import main as _main

    sys.exit(_main())
