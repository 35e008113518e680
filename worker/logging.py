"""Logging: JSON lines with task and batch ids bound per unit of work, never payloads.

Request bodies (triage notes are PHI, card histories are transaction data) are never passed to a
logger; what gets bound is ids, kinds, lanes, counts and timings. `bind_task` and `bind_batch` are
the only ways the runtime adds context.

`configure` routes structlog and the standard library's loggers (Celery's, kombu's, warnings)
through one handler, so with JSON on every line a worker writes to stderr is one JSON object:
`event`, `level`, `timestamp`, and `component` (inferq's) or `logger` (anyone else's).
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import structlog

_SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
]
# What a record of the standard library (Celery, kombu, warnings) gets before rendering.
_FOREIGN_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


# Libraries whose loggers stay at INFO or above even when inferq's log level is DEBUG.
LIBRARY_LOGGERS: tuple[str, ...] = ("celery", "kombu", "redis", "urllib3")


def level_number(level: str | int) -> int:
    """`INFO`, `info` or 20 as 20."""
    return level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]


def configure(level: str | int = "INFO", json: bool = True) -> None:
    """Route structlog and the standard library's loggers to stderr, one JSON object per line
    (or console rendering for people)."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_FOREIGN_PROCESSORS,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level_number(level))
    for name in LIBRARY_LOGGERS:
        # Their debug lines (task source stubs, every pidbox message) would drown inferq's own.
        logging.getLogger(name).setLevel(max(level_number(level), logging.INFO))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*_SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    if json:
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_thread_uncaught


class LineLogger(io.TextIOBase):
    """A text stream that logs each whole line written to it as one record (for stdout and stderr)."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        super().__init__()
        self._logger = logger
        self._level = level
        self._pending = ""
        self._lock = threading.Lock()
        self._inside = threading.local()

    def write(self, text: str) -> int:
        if getattr(self._inside, "active", False):
            return len(text)  # a handler that writes to stderr itself must not loop
        with self._lock:
            lines = (self._pending + text).split("\n")
            self._pending = lines.pop()
        self._log(lines)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            lines, self._pending = [self._pending], ""
        self._log(lines)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def _log(self, lines: list[str]) -> None:
        self._inside.active = True
        try:
            for line in lines:
                if line.strip():
                    self._logger.log(self._level, line.rstrip())
        finally:
            self._inside.active = False


def redirect_stdio(level: int = logging.WARNING) -> None:
    """Send what is printed to stdout or stderr through logging, a record per line (the handler that
    `configure` installed keeps writing to the real stderr)."""
    stream = LineLogger(logging.getLogger("stdio"), level)
    sys.stdout = stream
    sys.stderr = stream


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    get_logger("process").critical("uncaught_exception", error=kind.__name__, exc_info=(kind, value, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    thread = args.thread.name if args.thread is not None else None
    get_logger("process").critical("uncaught_exception", error=args.exc_type.__name__, thread=thread,
                                   exc_info=exc_info)


def get_logger(name: str) -> Any:
    """A structlog logger tagged with the component that logs."""
    return structlog.get_logger(component=name)


@contextmanager
def bind_task(task_id: str, kind: str | None, lane: str) -> Iterator[None]:
    """Bind one task's ids to every line logged inside (this thread only)."""
    with structlog.contextvars.bound_contextvars(task_id=task_id, kind=kind, lane=lane):
        yield


@contextmanager
def bind_batch(batch_id: str, kind: str, lane: str, size: int) -> Iterator[None]:
    """Bind one batch's ids to every line logged inside (this thread only)."""
    with structlog.contextvars.bound_contextvars(batch_id=batch_id, kind=kind, lane=lane, batch_size=size):
        yield
