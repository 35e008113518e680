"""Producer clients: submit triage and fraud tasks, wait for their results (sync and asyncio).

A client validates each request against the v1 contract before sending it, queues it in the raw
form of docs/wire-format.md, and asks for its result on a reply stream of its own
(`inferq:results:client:{uuid}`), so waiting never scans other producers' results. A full lane
raises `worker.errors.Overloaded` at once and queues nothing of that chunk; a Redis out of memory
raises `ServerFull` (an Overloaded) the same way. A Redis that does not answer (a restart, a
failover) is retried with back-off for `client_retry_s`, then `RedisUnavailable` is raised; a
retried submission may queue a task twice under the same id, and it is still answered once.
Connecting never starts a server: give a URL (`inferq server start` runs the embedded one).
With `INFERQ_SIGNING_KEYS` set (in the settings or the environment), every entry is signed
(`worker.signing`) over exactly the fields written, at each send attempt: a retry carries a new
`sig_ts`, so it is never taken for a replay of the first attempt.

Each result is handed out once: `wait` returns what arrived and forgets it. A request that names
its own `reply_to` is answered there, not to the client, so the client cannot wait for it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import orjson
import redis
from redis.typing import KeyT, StreamIdT

from contracts import ContractError, ErrorCode, Request, TaskResultMessage, parse_request
from contracts.wire import (
    CLIENT_RESULTS_PREFIX,
    DEFAULT_LANE,
    FIELD_ID,
    FIELD_REQUEST,
    FIELD_TASK,
    LANES,
    MAX_TASK_ID_CHARS,
    RESULT_MESSAGE,
    TASK_NAMES,
    Kind,
)
from worker.config import Settings
from worker.connection import DEFAULT_SOCKET_TIMEOUT_S, async_redis_client, redis_client, refused_for_good
from worker.errors import ConfigurationError, Overloaded, RedisUnavailable, ResultTimeout, ServerFull
from worker.fetching import BACKOFF_FIRST_S, BACKOFF_MAX_S
from worker.keys import EnqueueCall, enqueue_script
from worker.signing import KeyRing, epoch_ms, signed

RequestLike = Mapping[str, Any] | Request

# One ENQUEUE script holds the server while it runs: 500 entries of 1 KB took 2.0 ms of server
# time (Redis 7, SLOWLOG), so chunks of 256 keep realtime reads from waiting much over 1 ms.
SUBMIT_CHUNK: Final = 256
# Results one XREAD takes from the reply stream.
READ_COUNT: Final = 1000
# A single BLOCK stays well under the socket timeout; longer waits loop.
MAX_BLOCK_MS: Final = int(DEFAULT_SOCKET_TIMEOUT_S * 1000) // 3
# Errors of a Redis that is not there right now (down, restarting, loading its data, failing over).
_TRANSIENT: Final = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def raw_fields(task_name: str, task_id: str, request_json: str) -> dict[str, str]:
    """The raw-form fields of one task entry."""
    return {FIELD_TASK: task_name, FIELD_ID: task_id, FIELD_REQUEST: request_json}


def _json_text(body: Mapping[str, Any]) -> str:
    # orjson refuses lone surrogates, which a worker could not decode either: refused here, at once.
    try:
        return orjson.dumps(body).decode()
    except TypeError as exc:
        if "surrogates" in str(exc) or "UTF-8" in str(exc):
            raise ContractError.single(ErrorCode.INVALID_UNICODE, "request", "holds a lone surrogate") from None
        raise ContractError.single(ErrorCode.WRONG_TYPE, "request", "is not JSON-serialisable") from None


@dataclass(frozen=True)
class _Prepared:
    task_id: str
    lane: str
    fields: dict[str, str]
    replies_here: bool


@dataclass(frozen=True)
class _Encoded:
    text: str
    replies_here: bool
    lane: str | None


def _encode(kind: str, request: RequestLike, reply_stream: str) -> _Encoded:
    """Validated request JSON with the client's reply stream filled in unless it names its own."""
    if isinstance(request, Mapping):
        body = dict(request)
        if body.get("reply_to") is None:
            body["reply_to"] = reply_stream
        try:
            parsed = parse_request(kind, body)
        except ContractError:
            # pydantic calls a lone surrogate a wrong type; refuse it as the worker would (invalid_unicode).
            _json_text(body)
            raise
        text = _json_text(body)
    else:
        parsed = parse_request(kind, request.model_dump(mode="json", exclude_none=True))
        if parsed.reply_to is None:
            parsed = parsed.model_copy(update={"reply_to": reply_stream})
        text = _json_text(parsed.model_dump(mode="json", exclude_none=True))
    return _Encoded(text, parsed.reply_to == reply_stream, parsed.lane)


def _prepare(kind: Kind, request: RequestLike, task_id: str | None, lane: str | None, reply: str) -> _Prepared:
    encoded = _encode(kind, request, reply)
    task_id = task_id if task_id is not None else str(uuid.uuid4())
    if not 0 < len(task_id) <= MAX_TASK_ID_CHARS:
        raise ContractError.single(ErrorCode.MALFORMED, "task_id", f"1 to {MAX_TASK_ID_CHARS} characters")
    # The caller's lane, else the request's own, else the kind's default.
    chosen = lane or encoded.lane or DEFAULT_LANE[kind]
    if chosen not in LANES:
        raise ContractError.single(ErrorCode.INVALID_CHOICE, "lane", f"must be one of {', '.join(LANES)}")
    fields = raw_fields(TASK_NAMES[kind], task_id, encoded.text)
    return _Prepared(task_id, chosen, fields, encoded.replies_here)


@dataclass
class _Submitter:
    """Builds chunked ENQUEUE calls and reads their replies (shared by both clients)."""

    settings: Settings
    reply_stream: str
    signing: KeyRing | None = None
    foreign: set[str] = field(default_factory=set)

    def prepare(
        self,
        kind: Kind,
        requests: Sequence[RequestLike],
        task_ids: Sequence[str | None] | None,
        lane: str | None,
    ) -> list[_Prepared]:
        ids = list(task_ids) if task_ids is not None else [None] * len(requests)
        if len(ids) != len(requests):
            raise ValueError(f"{len(requests)} requests but {len(ids)} task ids")
        return [_prepare(kind, request, task_id, lane, self.reply_stream)
                for request, task_id in zip(requests, ids, strict=True)]

    def calls(self, prepared: Sequence[_Prepared]) -> list[EnqueueCall]:
        """The ENQUEUE calls of one send attempt, each entry signed now when signing is on."""
        limits: dict[str, int] = {lane: self.settings.lane(lane).queue_limit for lane in LANES}
        now_ms = epoch_ms()
        return [
            EnqueueCall([(p.lane, signed(p.fields, self.signing, now_ms))
                         for p in prepared[start:start + SUBMIT_CHUNK]], limits)
            for start in range(0, len(prepared), SUBMIT_CHUNK)
        ]

    def finish(
        self, prepared: Sequence[_Prepared], calls: Sequence[EnqueueCall], replies: Sequence[Any]
    ) -> list[str]:
        """Task ids in order; Overloaded or ServerFull (with what was queued) if any chunk was refused."""
        queued: list[str] = []
        refused: Overloaded | None = None
        for index, (call, reply) in enumerate(zip(calls, replies, strict=True)):
            chunk = prepared[index * SUBMIT_CHUNK:(index + 1) * SUBMIT_CHUNK]
            problem = _refusal(call, reply)
            if problem is not None:
                refused = refused or problem
                continue
            queued += [p.task_id for p in chunk]
            self.foreign.update(p.task_id for p in chunk if not p.replies_here)
        if isinstance(refused, ServerFull):
            raise ServerFull(tuple(queued))
        if refused is not None:
            raise Overloaded(refused.lane, refused.limit, tuple(queued))
        return [p.task_id for p in prepared]


def _refusal(call: EnqueueCall, reply: Any) -> Overloaded | None:
    """Why one chunk was not queued, or None when it was."""
    if isinstance(reply, redis.OutOfMemoryError) or (isinstance(reply, redis.ResponseError) and "OOM" in str(reply)):
        return ServerFull()
    if isinstance(reply, Exception):
        raise reply
    lane = call.full_lane(reply)
    return None if lane is None else Overloaded(lane, call.limits[lane])


@dataclass
class _Results:
    """Results read from the reply stream and not yet handed out, and where reading stopped."""

    cursor: str = "0-0"
    waiting: dict[str, TaskResultMessage] = field(default_factory=dict)

    def absorb(self, reply: Any) -> int:
        """Keep the results of one XREAD reply; how many there were."""
        count = 0
        for _, entries in reply or []:
            for entry_id, fields in entries:
                self.cursor = entry_id.decode()
                message = TaskResultMessage.model_validate_json(fields[RESULT_MESSAGE.encode()])
                self.waiting[message.task_id] = message
                count += 1
        return count

    def missing(self, task_ids: Sequence[str]) -> bool:
        return any(task_id not in self.waiting for task_id in task_ids)

    def take(self, task_ids: Sequence[str]) -> dict[str, TaskResultMessage]:
        return {task_id: self.waiting.pop(task_id) for task_id in task_ids if task_id in self.waiting}


def _check_waitable(task_ids: Iterable[str], foreign: set[str]) -> list[str]:
    ids = list(dict.fromkeys(task_ids))
    elsewhere = [task_id for task_id in ids if task_id in foreign]
    if elsewhere:
        raise ValueError(f"task {elsewhere[0]!r} was sent with its own reply_to; read its result there")
    return ids


def _block_ms(deadline: float) -> int | None:
    """How long the next read may block; None once the time is up (the read only polls)."""
    left_ms = int((deadline - time.monotonic()) * 1000)
    return None if left_ms <= 0 else max(1, min(left_ms, MAX_BLOCK_MS))


def _server_url(redis_url: str | None, settings: Settings) -> str:
    url = redis_url or settings.redis_url
    if not url:
        raise ConfigurationError(
            "no Redis URL: pass redis_url or set INFERQ_REDIS_URL (`inferq server start` runs an embedded one)"
        )
    return url


class _Retry:
    """Back-off over transient Redis errors until `client_retry_s` has passed, then RedisUnavailable.

    Refusals (credentials, permissions, certificates) are not transient and are raised at once.
    """

    def __init__(self, settings: Settings) -> None:
        self._deadline = time.monotonic() + settings.client_retry_s
        self._failures = 0

    def wait_s(self, exc: Exception, queued: Sequence[str] = ()) -> float:
        if refused_for_good(exc):
            # A wrong password, a missing permission, a certificate that does not verify: waiting
            # cannot cure it, so the caller gets the refusal itself at once.
            raise exc
        if time.monotonic() >= self._deadline:
            raise RedisUnavailable(f"Redis did not answer within the retry time ({type(exc).__name__})",
                                   tuple(queued)) from exc
        self._failures += 1
        left_s = max(0.0, self._deadline - time.monotonic())
        return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** (self._failures - 1), left_s)


def _reply_stream() -> str:
    return CLIENT_RESULTS_PREFIX + uuid.uuid4().hex


class InferqClient:
    """Submits tasks to inferq and waits for their results on its own reply stream."""

    def __init__(self, redis_url: str | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        signing = KeyRing.from_settings(self.settings)  # before connecting: a bad key configuration raises
        self._redis = redis_client(_server_url(redis_url, self.settings), self.settings)
        self.reply_stream = _reply_stream()
        self._submitter = _Submitter(self.settings, self.reply_stream, signing)
        self._results = _Results()
        self._enqueue = enqueue_script(self._redis)

    def submit(
        self, kind: Kind, request: RequestLike, task_id: str | None = None, lane: str | None = None
    ) -> str:
        """Queue one task and return its id. Raises ContractError (invalid) or Overloaded (lane full)."""
        return self.submit_many(kind, [request], task_ids=[task_id], lane=lane)[0]

    def submit_many(
        self,
        kind: Kind,
        requests: Sequence[RequestLike],
        task_ids: Sequence[str | None] | None = None,
        lane: str | None = None,
    ) -> list[str]:
        """Queue many tasks of one kind in one round trip; their ids in order.

        Every request is validated before anything is sent. Each chunk of `SUBMIT_CHUNK` is
        queued all or nothing; Overloaded (ServerFull) carries the ids that were queued in `.queued`.
        """
        prepared = self._submitter.prepare(kind, requests, task_ids, lane)
        retry = _Retry(self.settings)
        while True:
            calls = self._submitter.calls(prepared)
            try:
                return self._submitter.finish(prepared, calls, self._send(calls))
            except _TRANSIENT as exc:
                time.sleep(retry.wait_s(exc))

    def _send(self, calls: Sequence[EnqueueCall]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            self._enqueue(keys=call.keys, args=call.args, client=pipe)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, _TRANSIENT):
                raise reply
        return replies

    def wait(self, task_ids: Iterable[str], timeout_s: float) -> dict[str, TaskResultMessage]:
        """Results of `task_ids` that arrive within `timeout_s` (possibly fewer than asked for).

        A timeout of 0 takes what has already arrived without waiting. A Redis that stops answering
        meanwhile is retried until the time is up.
        """
        ids = _check_waitable(task_ids, self._submitter.foreign)
        deadline = time.monotonic() + timeout_s
        while self._results.missing(ids):
            block_ms = _block_ms(deadline)
            streams: dict[KeyT, StreamIdT] = {self.reply_stream: self._results.cursor}
            try:
                got = self._results.absorb(self._redis.xread(streams, count=READ_COUNT, block=block_ms))
            except _TRANSIENT as exc:
                if refused_for_good(exc):
                    raise
                time.sleep(min(BACKOFF_FIRST_S, max(0.0, deadline - time.monotonic())))
                got = 0
            if not got and block_ms is None:
                break
        return self._results.take(ids)

    def result(self, task_id: str, timeout_s: float) -> TaskResultMessage:
        """The result of one task; ResultTimeout (a TimeoutError) if none arrives in time."""
        found = self.wait([task_id], timeout_s).get(task_id)
        if found is None:
            raise ResultTimeout(f"no result for task {task_id!r} within {timeout_s:g}s")
        return found

    def close(self) -> None:
        """Delete the reply stream and close the connection."""
        try:
            self._redis.delete(self.reply_stream)
        except _TRANSIENT:
            pass  # the reply stream expires with its results
        finally:
            self._redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncInferqClient:
    """`InferqClient` for asyncio: the same methods, awaited."""

    def __init__(self, redis_url: str | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        signing = KeyRing.from_settings(self.settings)  # before connecting: a bad key configuration raises
        self._redis = async_redis_client(_server_url(redis_url, self.settings), self.settings)
        self.reply_stream = _reply_stream()
        self._submitter = _Submitter(self.settings, self.reply_stream, signing)
        self._results = _Results()
        self._enqueue = enqueue_script(self._redis)

    async def submit(
        self, kind: Kind, request: RequestLike, task_id: str | None = None, lane: str | None = None
    ) -> str:
        """Queue one task and return its id. Raises ContractError (invalid) or Overloaded (lane full)."""
        return (await self.submit_many(kind, [request], task_ids=[task_id], lane=lane))[0]

    async def submit_many(
        self,
        kind: Kind,
        requests: Sequence[RequestLike],
        task_ids: Sequence[str | None] | None = None,
        lane: str | None = None,
    ) -> list[str]:
        """Queue many tasks of one kind in one round trip; see `InferqClient.submit_many`."""
        prepared = self._submitter.prepare(kind, requests, task_ids, lane)
        retry = _Retry(self.settings)
        while True:
            calls = self._submitter.calls(prepared)
            try:
                return self._submitter.finish(prepared, calls, await self._send(calls))
            except _TRANSIENT as exc:
                await asyncio.sleep(retry.wait_s(exc))

    async def _send(self, calls: Sequence[EnqueueCall]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in calls:
                await self._enqueue(keys=call.keys, args=call.args, client=pipe)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, _TRANSIENT):
                raise reply
        return replies

    async def wait(self, task_ids: Iterable[str], timeout_s: float) -> dict[str, TaskResultMessage]:
        """Results of `task_ids` that arrive within `timeout_s` (possibly fewer than asked for)."""
        ids = _check_waitable(task_ids, self._submitter.foreign)
        deadline = time.monotonic() + timeout_s
        while self._results.missing(ids):
            block_ms = _block_ms(deadline)
            streams: dict[KeyT, StreamIdT] = {self.reply_stream: self._results.cursor}
            try:
                got = self._results.absorb(await self._redis.xread(streams, count=READ_COUNT, block=block_ms))
            except _TRANSIENT as exc:
                if refused_for_good(exc):
                    raise
                await asyncio.sleep(min(BACKOFF_FIRST_S, max(0.0, deadline - time.monotonic())))
                got = 0
            if not got and block_ms is None:
                break
        return self._results.take(ids)

    async def result(self, task_id: str, timeout_s: float) -> TaskResultMessage:
        """The result of one task; ResultTimeout (a TimeoutError) if none arrives in time."""
        found = (await self.wait([task_id], timeout_s)).get(task_id)
        if found is None:
            raise ResultTimeout(f"no result for task {task_id!r} within {timeout_s:g}s")
        return found

    async def close(self) -> None:
        """Delete the reply stream and close the connection."""
        try:
            await self._redis.delete(self.reply_stream)
        except _TRANSIENT:
            pass  # the reply stream expires with its results
        finally:
            await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
