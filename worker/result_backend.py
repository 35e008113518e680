"""A Celery result backend that reads inferq's result streams: `AsyncResult(id).get()` the Celery way.

A stock Celery app needs no import of inferq, only the package installed (it registers this class
under the `celery.result_backends` entry point `inferq`):

    app = Celery(broker="redis://host:6379/0", backend="inferq+redis://host:6379/0")
    app.send_task("inferq.fraud", kwargs={"request": {...}}, queue="realtime").get(timeout=5)

Workers post every result to a result stream (`inferq:results:{kind}`, or the request's `reply_to`);
nothing is written per task for Celery. The backend reads those streams: an `XREAD` from where each
stream ended when the app first looked (blocking while `get` waits), and once, on the first task it
cannot find, a bounded backward scan (`scan` entries per stream, 10,000 by default) for results
posted before that. What it read is kept in memory by task id (`index` results, 100,000 by
default, oldest dropped first). Streams read: both kinds' own, plus the `reply_to` streams the app
names in `streams`, given as URL query (`...?streams=inferq:results:payments-switch`) or in
`result_backend_transport_options={"streams": [...], "scan": 10000, "index": 100000}`.

`get()` returns the task's `result` object. A task answered `invalid`, `expired`, `rejected` or
`failed` is in state FAILURE and `get()` raises `TaskInvalid`, `TaskExpired`, `TaskRejected` or
`TaskFailed` (all `InferqTaskError`), with the error's `code`, `message` and `field` and the whole
result message. Not found yet: PENDING. Connections take the URL's credentials, else the
`INFERQ_REDIS_USERNAME`/`INFERQ_REDIS_PASSWORD` and `INFERQ_TLS_*` settings of the environment.

This module imports neither torch nor the engine: producers load it without them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from celery import states
from celery.backends.base import BaseBackend
from celery.exceptions import TimeoutError as CeleryTimeoutError
from redis.typing import KeyT, StreamIdT

from contracts.wire import KINDS, RESULT_MESSAGE, RESULT_TASK_ID, results_stream, valid_reply_to
from worker.config import Settings
from worker.connection import redacted_url, redis_client
from worker.errors import ConfigurationError

# Results one XREAD or XREVRANGE takes.
READ_COUNT: Final = 1000
# The longest single blocking read while `get` waits, so a timeout is kept to within it.
MAX_BLOCK_MS: Final = 1000
DEFAULT_SCAN: Final = 10_000
DEFAULT_INDEX: Final = 100_000
# Transport option holding the `Settings` to connect with (TLS files, ACL user); else the environment's.
SETTINGS_OPTION: Final = "inferq_settings"


class InferqTaskError(Exception):
    """A task answered with a status other than `ok`; `code`, `message` and `field` say why."""

    status = "failed"

    def __init__(self, task_id: str, code: str, message: str, field: str | None = None,
                 result: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"task {task_id} {self.status}: {code}: {message}")
        self.task_id = task_id
        self.code = code
        self.message = message
        self.field = field
        self.result = dict(result or {})


class TaskInvalid(InferqTaskError):
    """The request broke the contract (status `invalid`)."""

    status = "invalid"


class TaskExpired(InferqTaskError):
    """The deadline passed before the task was computed (status `expired`)."""

    status = "expired"


class TaskRejected(InferqTaskError):
    """The entry was refused, by its signature for one (status `rejected`)."""

    status = "rejected"


class TaskFailed(InferqTaskError):
    """The model or the worker failed on the task (status `failed`)."""

    status = "failed"


ERRORS: Final[dict[str, type[InferqTaskError]]] = {
    cls.status: cls for cls in (TaskInvalid, TaskExpired, TaskRejected, TaskFailed)
}


def task_error(message: Mapping[str, Any]) -> InferqTaskError:
    """The exception a result message of a status other than `ok` stands for."""
    error = message.get("error") or {}
    cls = ERRORS.get(str(message.get("status")), TaskFailed)
    return cls(str(message.get("task_id")), str(error.get("code", "internal_error")), str(error.get("message", "")),
               error.get("field"), message)


def task_meta(task_id: str, message: Mapping[str, Any]) -> dict[str, Any]:
    """Celery's task meta for one result message (`inferq` holds the whole message)."""
    finished = message.get("finished_at")
    done = datetime.fromtimestamp(finished / 1000.0, UTC).isoformat() if isinstance(finished, int) else None
    ok = message.get("status") == "ok"
    return {
        "task_id": task_id, "status": states.SUCCESS if ok else states.FAILURE,
        "result": message.get("result") if ok else task_error(message), "traceback": None, "children": [],
        "date_done": done, "inferq": dict(message),
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ResultIndex:
    """Results read off result streams, by task id: forward by XREAD, backward once by a bounded scan."""

    def __init__(self, client: redis.Redis, streams: Iterable[str], scan: int, limit: int) -> None:
        self._client = client
        self._streams = list(dict.fromkeys(streams))
        self._scan = scan
        self._limit = limit
        self._cursors: dict[str, str] = {}  # where forward reading goes on, per stream
        self._starts: dict[str, str] = {}  # where each stream ended when reading began
        self._scanned = False
        self._found: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, task_id: str, block_ms: int | None = None) -> bytes | None:
        """The result message of `task_id` (JSON), after reading what is new (waiting up to `block_ms`)."""
        with self._lock:
            self._begin()
            found = self._found.get(task_id)
            if found is None:
                self._read(block_ms)
                found = self._found.get(task_id)
            if found is None and not self._scanned:
                self._scan_back()
                found = self._found.get(task_id)
            return found

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._found.pop(task_id, None)

    def _begin(self) -> None:
        if self._cursors:
            return
        for stream in self._streams:
            last = self._client.xrevrange(stream, count=1)
            self._starts[stream] = _text(last[0][0]) if last else "0-0"
        self._cursors = dict(self._starts)

    def _keep(self, stream: str, entries: Any) -> None:
        for _entry_id, fields in entries:
            task_id, message = fields.get(RESULT_TASK_ID.encode()), fields.get(RESULT_MESSAGE.encode())
            if task_id is None or message is None:
                continue
            key = _text(task_id)
            if key not in self._found:
                self._found[key] = bytes(message)
                if len(self._found) > self._limit:
                    self._found.popitem(last=False)

    def _read(self, block_ms: int | None) -> None:
        streams: dict[KeyT, StreamIdT] = dict(self._cursors.items())
        reply: Any = self._client.xread(streams, count=READ_COUNT, block=block_ms)
        for stream, entries in reply or []:
            name = _text(stream)
            if entries:
                self._cursors[name] = _text(entries[-1][0])
            self._keep(name, entries)

    def _scan_back(self) -> None:
        """Index up to `scan` entries per stream from before reading began, newest first."""
        self._scanned = True
        for stream, start in self._starts.items():
            if start == "0-0":
                continue
            top, seen = start, 0
            while seen < self._scan:
                page = self._client.xrevrange(stream, max=top, count=min(READ_COUNT, self._scan - seen))
                if not page:
                    break
                self._keep(stream, page)
                seen += len(page)
                top = "(" + _text(page[-1][0])


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """The Redis URL without inferq's own query options, and those options."""
    parts = urlsplit(url)
    ours, theirs = {}, []
    for name, value in parse_qsl(parts.query):
        if name in ("streams", "scan", "index"):
            ours[name] = value
        else:
            theirs.append((name, value))
    scheme = "redis" if parts.scheme == "inferq" else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(theirs), parts.fragment)), ours


def _stream_names(given: Any) -> list[str]:
    names = given.split(",") if isinstance(given, str) else list(given or [])
    wrong = [name for name in names if not valid_reply_to(name)]
    if wrong:
        raise ConfigurationError(f"result streams must be keys under inferq:results:, not {wrong[0]!r}")
    return names


class InferqBackend(BaseBackend):  # type: ignore[misc]
    """Celery result backend over inferq's result streams (`inferq+redis://host:port/db`)."""

    supports_native_join = False
    persistent = True

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)
        options = dict(self.app.conf.get("result_backend_transport_options") or {})
        self.redis_url, from_url = _split_options(url or "redis://localhost:6379/0")
        options.update(from_url)
        given = options.get(SETTINGS_OPTION)
        self.settings = given if isinstance(given, Settings) else Settings()
        self.streams = [results_stream(kind) for kind in KINDS] + _stream_names(options.get("streams"))
        self._scan = int(options.get("scan", DEFAULT_SCAN))
        self._limit = int(options.get("index", DEFAULT_INDEX))
        self._index: ResultIndex | None = None
        self._index_lock = threading.Lock()

    @property
    def index(self) -> ResultIndex:
        with self._index_lock:
            if self._index is None:
                client = redis_client(self.redis_url, self.settings)
                self._index = ResultIndex(client, self.streams, self._scan, self._limit)
            return self._index

    def _meta(self, task_id: str, block_ms: int | None = None) -> dict[str, Any]:
        found = self.index.lookup(task_id, block_ms)
        if found is None:
            return {"task_id": task_id, "status": states.PENDING, "result": None, "traceback": None, "children": []}
        return task_meta(task_id, json.loads(found))

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        return self._meta(task_id)

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5, no_ack: bool = True,
                 on_interval: Any = None) -> dict[str, Any]:
        """Block on the result streams (not a poll per task) until the task's result arrives or `timeout`."""
        self._ensure_not_eager()
        deadline = None if timeout is None else _now() + timeout
        while True:
            left_ms = MAX_BLOCK_MS if deadline is None else int((deadline - _now()) * 1000)
            meta = self._meta(task_id, block_ms=max(1, min(MAX_BLOCK_MS, left_ms)) if left_ms > 0 else None)
            if meta["status"] in states.READY_STATES:
                return meta
            if on_interval:
                on_interval()
            if deadline is not None and _now() >= deadline:
                raise CeleryTimeoutError("The operation timed out.")

    def _forget(self, task_id: str) -> None:
        self.index.forget(task_id)

    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None,
                      **kwargs: Any) -> Any:
        raise NotImplementedError("inferq workers post results to result streams themselves")

    def as_uri(self, include_password: bool = False) -> str:
        uri = str(self.url or "")
        return uri if include_password else redacted_url(uri)


def _now() -> float:
    return time.monotonic()
