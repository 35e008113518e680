"""Task ingress and result publishing over Redis Streams.

Lane streams (`inferq:queue:{lane}`) are read through one consumer group: XREADGROUP records an
entry as pending for its consumer in the same step that hands it out, so a task is never in
nobody's hands. An entry stays pending until the Publisher has written its result, and is then
acked and deleted in the same Lua script, so XLEN of a lane counts waiting plus in-flight tasks.
A dead worker's pending entries are taken over with XAUTOCLAIM once idle for `claim_idle_ms`.

Two entry forms share the lane streams: the Celery envelope (field `payload`, the JSON message
kombu builds, written by `worker.transport`) and the raw form (`task`, `id`, `request`) that any
language can XADD. `docs/wire-format.md` documents both.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson
import redis
from redis.commands.core import Script
from redis.typing import KeyT, StreamIdT

from contracts import ContractError, ErrorCode, Kind, TaskResultMessage, Timings
from worker import scripts
from worker.config import Settings
from worker.constants import (
    CLIENT_RESULTS_PREFIX,
    CONSUMER_GROUP,
    DEADLETTER_STREAM,
    FIELD_ID,
    FIELD_ORIGIN,
    FIELD_PAYLOAD,
    FIELD_PRIOR_DELIVERIES,
    FIELD_REQUEST,
    FIELD_TASK,
    KIND_BY_TASK,
    LANES,
    MAX_TASK_ID_CHARS,
    REPLY_TO_PATTERN,
    RESULTS_PREFIX,
    done_key,
    queue_stream,
    results_stream,
)
from worker.errors import ConfigurationError, Overloaded, UnknownLane

JSON_CONTENT_TYPE: Final = "application/json"
_REPLY_TO = re.compile(REPLY_TO_PATTERN)
# A client's socket timeout must outlast the longest BLOCK of a read, or the read fails.
SOCKET_TIMEOUT_S: Final = 30.0

ResultMessage = TaskResultMessage | str


def connect(url: str) -> redis.Redis:
    """A client the stream primitives accept: replies decoded to str, reads may block for seconds."""
    # A connection idle for 30 s is pinged before use: a proxy or server that dropped it
    # quietly costs a reconnect, not a failed command.
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=SOCKET_TIMEOUT_S, health_check_interval=30
    )


def _require_decoded(client: redis.Redis) -> None:
    if not client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ConfigurationError("stream primitives need a Redis client with decode_responses=True")


def _lane_stream(lane: str) -> str:
    if lane not in LANES:
        raise UnknownLane(f"{lane!r} is not a lane; lanes are {', '.join(LANES)}")
    return queue_stream(lane)


def entry_ms(entry_id: str) -> int:
    """Epoch ms at which Redis added a stream entry (the first part of its id)."""
    return int(entry_id.split("-", 1)[0])


def valid_reply_to(stream: object) -> bool:
    """Whether `stream` is a result stream a task may name as its `reply_to`."""
    return isinstance(stream, str) and _REPLY_TO.match(stream) is not None


def check_reply_to(request: Mapping[str, Any]) -> None:
    """Refuse a request whose `reply_to` lies outside `inferq:results:` (ContractError bad_reply_to)."""
    reply_to = request.get("reply_to")
    if reply_to is not None and not valid_reply_to(reply_to):
        raise ContractError.single(
            ErrorCode.BAD_REPLY_TO, "reply_to", f"must be a stream key under {RESULTS_PREFIX}"
        )


# ---------------------------------------------------------------------------------------------
# Deliveries and their decoding


@dataclass(frozen=True)
class Delivery:
    """One lane stream entry as this worker received it, decoded as far as it could be."""

    lane: str
    entry_id: str
    task_name: str | None
    task_id: str | None
    request: dict[str, Any] | None
    raw: dict[str, str]  # the entry's fields exactly as received
    deliveries: int  # times handed out, this one included, summed over requeued copies
    enqueued_ms: int  # when the task first entered its lane (epoch ms)
    decode_error: str | None = None
    decode_code: ErrorCode | None = None

    @property
    def kind(self) -> Kind | None:
        """`triage` or `fraud`, or None for a task name inferq does not run."""
        kind = KIND_BY_TASK.get(self.task_name or "")
        return cast(Kind, kind) if kind is not None else None

    @property
    def result_stream(self) -> str | None:
        """Where this task's result goes: a valid `reply_to`, else its kind's stream, else None."""
        reply_to = (self.request or {}).get("reply_to")
        if valid_reply_to(reply_to):
            return cast(str, reply_to)
        kind = self.kind
        return results_stream(kind) if kind is not None else None


@dataclass(frozen=True)
class _Decoded:
    task_name: str | None
    task_id: str | None
    request: dict[str, Any] | None
    error: str | None = None
    code: ErrorCode | None = None


class _Undecodable(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        super().__init__(message)


def _json_object(text: str, what: str) -> Any:
    # orjson: the ingress decodes every request once, and fraud histories make them ~25 KB.
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _Undecodable(ErrorCode.INVALID_JSON, f"{what} is not valid JSON") from None


def _request_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Undecodable(ErrorCode.WRONG_TYPE, f"{what} must be a JSON object")
    return value


def _envelope_body(message: Mapping[str, Any]) -> Any:
    if message.get("content-type") != JSON_CONTENT_TYPE:
        raise _Undecodable(ErrorCode.MALFORMED, "payload: only application/json Celery messages are accepted")
    body = message.get("body")
    if not isinstance(body, str):
        raise _Undecodable(ErrorCode.MALFORMED, "payload.body must be a string")
    properties = message.get("properties")
    if isinstance(properties, dict) and properties.get("body_encoding") == "base64":
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _Undecodable(ErrorCode.MALFORMED, "payload.body is not base64 of UTF-8") from None
    return _json_object(body, "payload.body")


def _envelope_request(body: Any) -> dict[str, Any]:
    # Celery message protocol 2: body = [args, kwargs, embed].
    shaped = isinstance(body, list) and len(body) == 3
    if not (shaped and isinstance(body[0], list) and isinstance(body[1], dict)):
        raise _Undecodable(ErrorCode.MALFORMED, "payload.body is not a protocol 2 body [args, kwargs, embed]")
    args, kwargs = body[0], body[1]
    if "request" in kwargs:
        return _request_object(kwargs["request"], "kwargs.request")
    if len(args) == 1 and not kwargs:
        return _request_object(args[0], "args[0]")
    raise _Undecodable(ErrorCode.MISSING_FIELD, "request: send it as kwargs={'request': {...}}")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _decode_envelope(payload: str) -> _Decoded:
    message = _json_object(payload, "payload")
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        return _Decoded(None, None, None, "payload is not a Celery message", ErrorCode.MALFORMED)
    headers = message["headers"]
    task_name, task_id = _text(headers.get("task")), _text(headers.get("id"))
    try:
        request = _envelope_request(_envelope_body(message))
    except _Undecodable as exc:
        return _Decoded(task_name, task_id, None, str(exc), exc.code)
    return _Decoded(task_name, task_id, request)


def _decode_raw(fields: Mapping[str, str]) -> _Decoded:
    task_name, task_id = fields.get(FIELD_TASK), fields.get(FIELD_ID)
    text = fields.get(FIELD_REQUEST)
    if text is None:
        return _Decoded(task_name, task_id, None, "request: field missing", ErrorCode.MISSING_FIELD)
    try:
        request = _request_object(_json_object(text, "request"), "request")
    except _Undecodable as exc:
        return _Decoded(task_name, task_id, None, str(exc), exc.code)
    return _Decoded(task_name, task_id, request)


def _decode_fields(fields: Mapping[str, str]) -> _Decoded:
    try:
        if FIELD_PAYLOAD in fields:
            return _decode_envelope(fields[FIELD_PAYLOAD])
        return _decode_raw(fields)
    except _Undecodable as exc:
        return _Decoded(None, None, None, str(exc), exc.code)


def _checked_identity(found: _Decoded) -> _Decoded:
    """Drop an unusable task id (it could not key a result) and flag a missing or unknown task."""
    task_id = found.task_id
    if task_id is not None and not 0 < len(task_id) <= MAX_TASK_ID_CHARS:
        return _Decoded(found.task_name, None, found.request, f"id: 1 to {MAX_TASK_ID_CHARS} characters",
                        ErrorCode.MALFORMED)
    if found.error is not None:
        return found
    if task_id is None:
        return _Decoded(found.task_name, None, found.request, "id: field missing", ErrorCode.MISSING_FIELD)
    if found.task_name not in KIND_BY_TASK:
        names = ", ".join(sorted(KIND_BY_TASK))
        return _Decoded(found.task_name, task_id, found.request, f"task: must be one of {names}",
                        ErrorCode.UNKNOWN_TASK)
    return found


def _int_field(fields: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(fields[name])
    except (KeyError, ValueError):
        return default


def decode_entry(lane: str, entry_id: str, fields: Mapping[str, str], times_delivered: int) -> Delivery:
    """A Delivery from one lane entry; never raises: what cannot be decoded is in `decode_error`."""
    found = _checked_identity(_decode_fields(fields))
    origin = fields.get(FIELD_ORIGIN, entry_id)
    enqueued_ms = entry_ms(origin) if re.fullmatch(r"\d+-\d+", origin) else entry_ms(entry_id)
    return Delivery(
        lane=lane,
        entry_id=entry_id,
        task_name=found.task_name,
        task_id=found.task_id,
        request=found.request,
        raw=dict(fields),
        deliveries=times_delivered + max(0, _int_field(fields, FIELD_PRIOR_DELIVERIES, 0)),
        enqueued_ms=enqueued_ms,
        decode_error=found.error,
        decode_code=found.code,
    )


# ---------------------------------------------------------------------------------------------
# Ingress: fetch and claim


def ensure_group(client: redis.Redis, lane: str) -> None:
    """Create the workers' consumer group on a lane stream (and the stream) unless it exists."""
    try:
        # Id 0: tasks queued before any worker ever ran are read too.
        client.xgroup_create(_lane_stream(lane), CONSUMER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Ingress:
    """Reads tasks for one consumer of the workers' group: new entries, then stale ones of others."""

    def __init__(self, client: redis.Redis, consumer_name: str, settings: Settings) -> None:
        _require_decoded(client)
        self._client = client
        self.consumer_name = consumer_name
        self._settings = settings
        self._claim_cursor: dict[str, str] = {}
        self._touch: Script = client.register_script(scripts.TOUCH)

    def ensure_groups(self, lanes: Iterable[str] | None = None) -> None:
        """Create the consumer group on each lane stream (and the stream) unless it exists."""
        for lane in lanes if lanes is not None else self._settings.lanes:
            ensure_group(self._client, lane)

    def fetch(self, lanes: Sequence[str], count: int, block_ms: int | None) -> list[Delivery]:
        """New entries of `lanes` in ONE XREADGROUP, realtime first; up to `count` per lane.

        `block_ms` None returns at once; otherwise it waits up to that long for a first entry
        (0 waits forever). The entries are pending for this consumer from the moment they return.
        """
        for lane in lanes:
            _lane_stream(lane)
        ordered = [lane for lane in LANES if lane in lanes]
        if not ordered:
            return []
        streams: dict[KeyT, StreamIdT] = {queue_stream(lane): ">" for lane in ordered}
        try:
            reply = self._read(streams, count, block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # A lane stream was deleted (purged, or the database flushed): recreate and read again.
            self.ensure_groups(ordered)
            reply = self._read(streams, count, block_ms)
        return self._deliveries(reply)

    def _read(self, streams: dict[KeyT, StreamIdT], count: int, block_ms: int | None) -> Any:
        return self._client.xreadgroup(
            CONSUMER_GROUP, self.consumer_name, streams, count=count, block=block_ms
        )

    @staticmethod
    def _deliveries(reply: Any) -> list[Delivery]:
        by_stream = {stream: entries for stream, entries in (reply or [])}
        found: list[Delivery] = []
        for lane in LANES:
            for entry_id, fields in by_stream.get(queue_stream(lane), []):
                found.append(decode_entry(lane, entry_id, fields or {}, 1))
        return found

    def touch(self, deliveries: Sequence[Delivery]) -> int:
        """Restart the idle clock of tasks this worker still holds (one round trip).

        A worker whose tasks wait in its own batches for a long time calls this well within
        `claim_idle_ms`, so that live work is not taken over. Returns how many it still held.
        """
        by_lane: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_lane.setdefault(delivery.lane, []).append(delivery.entry_id)
        if not by_lane:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for lane, entry_ids in by_lane.items():
            self._touch(keys=[queue_stream(lane)], args=[CONSUMER_GROUP, self.consumer_name, *entry_ids],
                        client=pipe)
        return sum(int(kept) for kept in pipe.execute())

    def claim_stale(self, count: int, lanes: Sequence[str] | None = None) -> list[Delivery]:
        """Take over entries idle for `claim_idle_ms` in other consumers' hands (XAUTOCLAIM).

        Up to `count` per lane, realtime first. Delivery counts come from XPENDING after the
        claim, so they are Redis' own counters (the claim itself counted as one delivery).
        """
        ordered = [lane for lane in LANES if lane in (lanes if lanes is not None else self._settings.lanes)]
        pipe = self._client.pipeline(transaction=False)
        for lane in ordered:
            pipe.xautoclaim(
                queue_stream(lane), CONSUMER_GROUP, self.consumer_name, self._settings.claim_idle_ms,
                start_id=self._claim_cursor.get(lane, "0-0"), count=count,
            )
        replies = pipe.execute(raise_on_error=False)
        claimed = self._claimed(ordered, replies)
        return self._with_counts(claimed)

    def _claimed(self, lanes: Sequence[str], replies: Sequence[Any]) -> list[tuple[str, str, dict[str, str]]]:
        claimed: list[tuple[str, str, dict[str, str]]] = []
        gone: list[tuple[str, list[str]]] = []
        for lane, reply in zip(lanes, replies, strict=True):
            if isinstance(reply, Exception):
                if "NOGROUP" in str(reply):
                    continue  # the stream is gone, so are its pending entries
                raise reply
            cursor, entries, deleted = reply[0], reply[1], reply[2] if len(reply) > 2 else []
            self._claim_cursor[lane] = cursor
            claimed.extend((lane, entry_id, fields) for entry_id, fields in entries if fields is not None)
            gone.append((lane, list(deleted)))
        self._ack_deleted(gone)
        return claimed

    def _ack_deleted(self, gone: Sequence[tuple[str, list[str]]]) -> None:
        # Redis already dropped these ids from the pending list; the XACK makes that explicit on
        # servers that only report them.
        todo = [(lane, ids) for lane, ids in gone if ids]
        if not todo:
            return
        pipe = self._client.pipeline(transaction=False)
        for lane, ids in todo:
            pipe.xack(queue_stream(lane), CONSUMER_GROUP, *ids)
        pipe.execute()

    def _with_counts(self, claimed: Sequence[tuple[str, str, dict[str, str]]]) -> list[Delivery]:
        if not claimed:
            return []
        pipe = self._client.pipeline(transaction=False)
        for lane, entry_id, _ in claimed:
            pipe.xpending_range(queue_stream(lane), CONSUMER_GROUP, entry_id, entry_id, 1)
        pending = pipe.execute()
        found: list[Delivery] = []
        for (lane, entry_id, fields), rows in zip(claimed, pending, strict=True):
            # An entry acked by its first worker between the claim and this read needs no work.
            if rows:
                found.append(decode_entry(lane, entry_id, fields, int(rows[0]["times_delivered"])))
        return found


# ---------------------------------------------------------------------------------------------
# Publishing: results, dead letters, requeue


def _message_json(message: ResultMessage) -> tuple[str, str, str]:
    """(task_id, status, JSON) of a result message."""
    if isinstance(message, str):
        parsed = TaskResultMessage.model_validate_json(message)
        return parsed.task_id, str(parsed.status.value), message
    return message.task_id, str(message.status.value), message.model_dump_json()


def _checked_stream(stream: str) -> str:
    if not stream.startswith(RESULTS_PREFIX):
        raise ValueError(f"result stream {stream!r} lies outside {RESULTS_PREFIX}")
    return stream


def _expiring(stream: str) -> str:
    return "1" if stream.startswith(CLIENT_RESULTS_PREFIX) else "0"


class Publisher:
    """Posts exactly one result per task id and acks the lane entry in the same atomic step."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        _require_decoded(client)
        self._client = client
        self._settings = settings
        self._publish: Script = client.register_script(scripts.PUBLISH)
        self._deadletter: Script = client.register_script(scripts.DEADLETTER)
        self._requeue: Script = client.register_script(scripts.REQUEUE)

    def publish(self, delivery: Delivery, message: ResultMessage, stream: str) -> bool:
        """Post `message` to `stream` unless its task id was already answered; ack either way.

        Returns True when this call posted the result, False for a duplicate.
        """
        return self.publish_many([(delivery, message, stream)])[0]

    def publish_many(self, items: Sequence[tuple[Delivery, ResultMessage, str]]) -> list[bool]:
        """`publish` for many results in one round trip; each result stays atomic on its own."""
        if not items:
            return []
        pipe = self._client.pipeline(transaction=False)
        for delivery, message, stream in items:
            self._publish_call(pipe, delivery, message, stream)
        return [bool(posted) for posted in pipe.execute()]

    def _publish_call(self, pipe: Any, delivery: Delivery, message: ResultMessage, stream: str) -> None:
        task_id, status, text = _message_json(message)
        if task_id != delivery.task_id:
            raise ValueError(f"result of task {task_id!r} is not for the delivery of {delivery.task_id!r}")
        stream = _checked_stream(stream)
        self._publish(
            keys=[done_key(task_id), stream, queue_stream(delivery.lane)],
            args=[CONSUMER_GROUP, delivery.entry_id, self._settings.result_ttl_s,
                  self._settings.result_stream_maxlen, task_id, status, text, _expiring(stream)],
            client=pipe,
        )

    def already_answered(self, task_ids: Iterable[str]) -> set[str]:
        """The task ids among `task_ids` that already have a result (one round trip)."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return set()
        markers = cast(list[str | None], self._client.mget([done_key(task_id) for task_id in ids]))
        return {task_id for task_id, marker in zip(ids, markers, strict=True) if marker is not None}

    def deadletter(self, delivery: Delivery, code: ErrorCode | str, message: str) -> bool:
        """Move a task to `inferq:deadletter` with its error and raw entry, answer it `failed`, ack it.

        The `failed` result (code too_many_deliveries) goes through the same exactly-once guard as
        any result; it is posted only when the task has an id and a result stream. Returns
        whether this call posted that result.
        """
        code_text = code.value if isinstance(code, ErrorCode) else code
        result = _failed_result(delivery)
        stream = delivery.result_stream
        post = result is not None and stream is not None
        # Without a result to post, the marker and result stream keys are named but never touched.
        keys = [DEADLETTER_STREAM, queue_stream(delivery.lane), done_key(delivery.task_id or ""),
                _checked_stream(stream) if stream is not None else DEADLETTER_STREAM]
        args: list[str | int] = [
            CONSUMER_GROUP, delivery.entry_id, self._settings.result_stream_maxlen,
            self._settings.result_ttl_s, self._settings.result_stream_maxlen, delivery.task_id or "",
            result or "", _expiring(stream or ""), "1" if post else "0",
            *_deadletter_fields(delivery, code_text, message),
        ]
        return bool(self._deadletter(keys=keys, args=args))

    def requeue(self, deliveries: Sequence[Delivery]) -> list[str]:
        """Put fetched but unstarted tasks back at the end of their lanes for any worker to take now.

        Each entry is copied (with its original enqueue time and its delivery count so far, this
        unstarted delivery not counted) and the original acked and deleted, atomically per entry.
        Returns the copies' entry ids.
        """
        if not deliveries:
            return []
        pipe = self._client.pipeline(transaction=False)
        for delivery in deliveries:
            args = [CONSUMER_GROUP, delivery.entry_id, *_requeue_fields(delivery)]
            self._requeue(keys=[queue_stream(delivery.lane)], args=args, client=pipe)
        return [str(entry_id) for entry_id in pipe.execute()]


def _failed_result(delivery: Delivery) -> str | None:
    kind = delivery.kind
    if delivery.task_id is None or kind is None:
        return None
    return failed_message(delivery, kind).model_dump_json()


def failed_message(delivery: Delivery, kind: Kind) -> TaskResultMessage:
    """The `failed` result (too_many_deliveries) that answers a dead-lettered task."""
    now_ms = int(time.time() * 1000)
    waited_ms = float(max(0, now_ms - delivery.enqueued_ms))
    return TaskResultMessage.failed(
        cast(str, delivery.task_id),
        kind,
        ErrorCode.TOO_MANY_DELIVERIES,
        f"delivered {delivery.deliveries} times without a result; moved to {DEADLETTER_STREAM}",
        timings=Timings(queue_ms=waited_ms, batch_size=0, compute_ms=0.0, total_ms=waited_ms),
        finished_at=now_ms,
    )


def _deadletter_fields(delivery: Delivery, code: str, message: str) -> list[str]:
    fields = {
        "task_id": delivery.task_id or "",
        "task": delivery.task_name or "",
        "lane": delivery.lane,
        "entry_id": delivery.entry_id,
        "deliveries": str(delivery.deliveries),
        "error_code": code,
        "error_message": message,
        "raw": json.dumps(delivery.raw, separators=(",", ":")),
        "failed_ms": str(int(time.time() * 1000)),
    }
    return [part for pair in fields.items() for part in pair]


def _requeue_fields(delivery: Delivery) -> list[str]:
    fields = {name: value for name, value in delivery.raw.items()
              if name not in (FIELD_ORIGIN, FIELD_PRIOR_DELIVERIES)}
    fields[FIELD_ORIGIN] = delivery.raw.get(FIELD_ORIGIN, delivery.entry_id)
    # This delivery never started, so it does not count towards the dead-letter rule.
    fields[FIELD_PRIOR_DELIVERIES] = str(max(0, delivery.deliveries - 1))
    return [part for pair in fields.items() for part in pair]


# ---------------------------------------------------------------------------------------------
# Enqueue (producers)


def raw_fields(task_name: str, task_id: str, request_json: str) -> dict[str, str]:
    """The raw-form fields of one task entry."""
    return {FIELD_TASK: task_name, FIELD_ID: task_id, FIELD_REQUEST: request_json}


@dataclass(frozen=True)
class EnqueueCall:
    """Keys and arguments of one ENQUEUE script call (shared by the sync and asyncio clients)."""

    keys: list[str]
    args: list[str | int]
    limits: dict[str, int]

    def entry_ids(self, reply: Sequence[Any]) -> list[str]:
        """The new entry ids, or Overloaded naming the first lane that was full."""
        if int(reply[0]) == 0:
            stream = self.keys[int(reply[1]) - 1]
            lane = stream.removeprefix(queue_stream(""))
            raise Overloaded(lane, self.limits[lane])
        return [str(entry_id) for entry_id in reply[1:]]


def enqueue_call(entries: Sequence[tuple[str, Mapping[str, str]]], limits: Mapping[str, int]) -> EnqueueCall:
    """Build the all-or-nothing ENQUEUE of `entries` ((lane, fields) pairs) under per-lane limits."""
    lanes = list(dict.fromkeys(lane for lane, _ in entries))
    keys = [_lane_stream(lane) for lane in lanes]
    counts = {lane: 0 for lane in lanes}
    body: list[str | int] = []
    for lane, fields in entries:
        counts[lane] += 1
        body += [lanes.index(lane) + 1, len(fields), *(part for pair in fields.items() for part in pair)]
    args: list[str | int] = [*(limits[lane] for lane in lanes), *(counts[lane] for lane in lanes), *body]
    return EnqueueCall(keys=keys, args=args, limits={lane: limits[lane] for lane in lanes})


def enqueue_many(
    client: redis.Redis, entries: Sequence[tuple[str, Mapping[str, str]]], limits: Mapping[str, int]
) -> list[str]:
    """Add all `entries` ((lane, fields) pairs) atomically, or none with Overloaded if a lane is full.

    The fields go in as given: callers validate requests first (the client against the whole
    contract, the Celery transport with `check_reply_to`).
    """
    if not entries:
        return []
    call = enqueue_call(entries, limits)
    reply = client.register_script(scripts.ENQUEUE)(keys=call.keys, args=call.args)
    return call.entry_ids(cast(Sequence[Any], reply))


def enqueue(client: redis.Redis, lane: str, fields: Mapping[str, str], limit: int) -> str:
    """XADD one entry to `lane` unless it already holds `limit` tasks (then Overloaded)."""
    return enqueue_many(client, [(lane, fields)], {lane: limit})[0]
