"""Producer clients: submit triage and fraud tasks, wait for their results (sync and asyncio).

A client validates each request against the v1 contract before sending it, queues it in the raw
form of docs/wire-format.md, and asks for its result on a reply stream of its own
(`inferq:results:client:{uuid}`), so waiting never scans other producers' results. A full lane
raises `worker.errors.Overloaded` at once and queues nothing.

Each result is handed out once: `wait` returns what arrived and forgets it. A request that names
its own `reply_to` is answered there, not to the client, so the client cannot wait for it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import redis.asyncio as aioredis
from redis.typing import KeyT, StreamIdT

from contracts import ContractError, ErrorCode, Request, TaskResultMessage, parse_request
from worker import embedded, scripts
from worker.config import Settings
from worker.constants import (
    CLIENT_RESULTS_PREFIX,
    DEFAULT_LANE,
    LANES,
    MAX_TASK_ID_CHARS,
    RESULT_MESSAGE,
    TASK_NAMES,
)
from worker.errors import Overloaded, ResultTimeout
from worker.streams import SOCKET_TIMEOUT_S, EnqueueCall, connect, enqueue_call, raw_fields

RequestLike = Mapping[str, Any] | Request

# One ENQUEUE script holds the server while it runs: 500 entries of 1 KB took 2.0 ms of server
# time (Redis 7, SLOWLOG), so chunks of 256 keep realtime reads from waiting much over 1 ms.
SUBMIT_CHUNK: Final = 256
# Results one XREAD takes from the reply stream.
READ_COUNT: Final = 1000
# A single BLOCK stays well under the socket timeout; longer waits loop.
MAX_BLOCK_MS: Final = int(SOCKET_TIMEOUT_S * 1000) // 3


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
        parsed = parse_request(kind, body)
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    else:
        parsed = parse_request(kind, request.model_dump(mode="json", exclude_none=True))
        if parsed.reply_to is None:
            parsed = parsed.model_copy(update={"reply_to": reply_stream})
        text = parsed.model_dump_json(exclude_none=True)
    return _Encoded(text, parsed.reply_to == reply_stream, parsed.lane)


def _prepare(kind: str, request: RequestLike, task_id: str | None, lane: str | None, reply: str) -> _Prepared:
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
    foreign: set[str] = field(default_factory=set)

    def prepare(
        self,
        kind: str,
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
        limits: dict[str, int] = {lane: self.settings.lane(lane).queue_limit for lane in LANES}
        return [
            enqueue_call([(p.lane, p.fields) for p in prepared[start:start + SUBMIT_CHUNK]], limits)
            for start in range(0, len(prepared), SUBMIT_CHUNK)
        ]

    def finish(
        self, prepared: Sequence[_Prepared], calls: Sequence[EnqueueCall], replies: Sequence[Any]
    ) -> list[str]:
        """Task ids in order; Overloaded (with what was queued) if any chunk was refused."""
        queued: list[str] = []
        refused: Overloaded | None = None
        for index, (call, reply) in enumerate(zip(calls, replies, strict=True)):
            chunk = prepared[index * SUBMIT_CHUNK:(index + 1) * SUBMIT_CHUNK]
            try:
                call.entry_ids(reply)
            except Overloaded as exc:
                refused = refused or exc
                continue
            queued += [p.task_id for p in chunk]
            self.foreign.update(p.task_id for p in chunk if not p.replies_here)
        if refused is not None:
            raise Overloaded(refused.lane, refused.limit, tuple(queued))
        return [p.task_id for p in prepared]


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
                self.cursor = entry_id
                message = TaskResultMessage.model_validate_json(fields[RESULT_MESSAGE])
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
    return redis_url or settings.redis_url or embedded.start(settings.state_dir).url


def _reply_stream() -> str:
    return CLIENT_RESULTS_PREFIX + uuid.uuid4().hex


class InferqClient:
    """Submits tasks to inferq and waits for their results on its own reply stream."""

    def __init__(self, redis_url: str | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._redis = connect(_server_url(redis_url, self.settings))
        self.reply_stream = _reply_stream()
        self._submitter = _Submitter(self.settings, self.reply_stream)
        self._results = _Results()
        self._enqueue = self._redis.register_script(scripts.ENQUEUE)

    def submit(
        self, kind: str, request: RequestLike, task_id: str | None = None, lane: str | None = None
    ) -> str:
        """Queue one task and return its id. Raises ContractError (invalid) or Overloaded (lane full)."""
        return self.submit_many(kind, [request], task_ids=[task_id], lane=lane)[0]

    def submit_many(
        self,
        kind: str,
        requests: Sequence[RequestLike],
        task_ids: Sequence[str | None] | None = None,
        lane: str | None = None,
    ) -> list[str]:
        """Queue many tasks of one kind in one round trip; their ids in order.

        Every request is validated before anything is sent. Each chunk of `SUBMIT_CHUNK` is
        queued all or nothing; Overloaded carries the ids that were queued in `.queued`.
        """
        prepared = self._submitter.prepare(kind, requests, task_ids, lane)
        calls = self._submitter.calls(prepared)
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            self._enqueue(keys=call.keys, args=call.args, client=pipe)
        return self._submitter.finish(prepared, calls, pipe.execute())

    def wait(self, task_ids: Iterable[str], timeout_s: float) -> dict[str, TaskResultMessage]:
        """Results of `task_ids` that arrive within `timeout_s` (possibly fewer than asked for).

        A timeout of 0 takes what has already arrived without waiting.
        """
        ids = _check_waitable(task_ids, self._submitter.foreign)
        deadline = time.monotonic() + timeout_s
        while self._results.missing(ids):
            block_ms = _block_ms(deadline)
            streams: dict[KeyT, StreamIdT] = {self.reply_stream: self._results.cursor}
            got = self._results.absorb(self._redis.xread(streams, count=READ_COUNT, block=block_ms))
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
        self._redis = aioredis.Redis.from_url(
            _server_url(redis_url, self.settings), decode_responses=True, socket_timeout=SOCKET_TIMEOUT_S
        )
        self.reply_stream = _reply_stream()
        self._submitter = _Submitter(self.settings, self.reply_stream)
        self._results = _Results()
        self._enqueue = self._redis.register_script(scripts.ENQUEUE)

    async def submit(
        self, kind: str, request: RequestLike, task_id: str | None = None, lane: str | None = None
    ) -> str:
        """Queue one task and return its id. Raises ContractError (invalid) or Overloaded (lane full)."""
        return (await self.submit_many(kind, [request], task_ids=[task_id], lane=lane))[0]

    async def submit_many(
        self,
        kind: str,
        requests: Sequence[RequestLike],
        task_ids: Sequence[str | None] | None = None,
        lane: str | None = None,
    ) -> list[str]:
        """Queue many tasks of one kind in one round trip; see `InferqClient.submit_many`."""
        prepared = self._submitter.prepare(kind, requests, task_ids, lane)
        calls = self._submitter.calls(prepared)
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in calls:
                await self._enqueue(keys=call.keys, args=call.args, client=pipe)
            replies = await pipe.execute()
        return self._submitter.finish(prepared, calls, replies)

    async def wait(self, task_ids: Iterable[str], timeout_s: float) -> dict[str, TaskResultMessage]:
        """Results of `task_ids` that arrive within `timeout_s` (possibly fewer than asked for).

        A timeout of 0 takes what has already arrived without waiting.
        """
        ids = _check_waitable(task_ids, self._submitter.foreign)
        deadline = time.monotonic() + timeout_s
        while self._results.missing(ids):
            block_ms = _block_ms(deadline)
            streams: dict[KeyT, StreamIdT] = {self.reply_stream: self._results.cursor}
            got = self._results.absorb(await self._redis.xread(streams, count=READ_COUNT, block=block_ms))
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
        finally:
            await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
