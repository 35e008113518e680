"""structlog configuration: JSON lines with task and batch ids bound per unit of work, never payloads.

Request bodies (triage notes are PHI) are never passed to a logger; what gets bound is ids, kinds,
lanes, counts and timings. `bind_task` and `bind_batch` are the only ways the runtime adds context.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

_SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
]


def configure(level: str = "INFO", json: bool = True) -> None:
    """Route structlog to stderr, one JSON object per line (or console rendering for people)."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*_SHARED_PROCESSORS, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


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
