"""Lane stream entries as the worker receives them: bytes in, a `Delivery` out, never an exception.

Two entry forms share the lane streams: the Celery envelope (field `payload`, the JSON message kombu
builds) and the raw form (`task`, `id`, `request`) that any language can XADD; either may also carry
`reply_to` as a field of its own. Every field arrives as bytes and is decoded on its own, strictly
(UTF-8 without surrogates, JSON without NaN or lone surrogate escapes), so one bad field makes its
task `invalid` or dead-lettered, and nothing else. `docs/wire-format.md` documents both forms.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from contracts import ErrorCode
from contracts.wire import (
    FIELD_ID,
    FIELD_PAYLOAD,
    FIELD_REPLY_TO,
    FIELD_REQUEST,
    FIELD_TASK,
    KIND_BY_TASK,
    MAX_TASK_ID_CHARS,
    Kind,
    Lane,
    results_stream,
    valid_reply_to,
)
from worker.keys import FIELD_ORIGIN, FIELD_PRIOR_DELIVERIES

RawFields = Mapping[bytes, bytes]

JSON_CONTENT_TYPE: Final = "application/json"
# A whole entry larger than this is no request of the contract (a 4,096-event history is ~1 MB):
# it is answered `invalid` without being parsed.
MAX_ENTRY_BYTES: Final = 4 * 1024 * 1024
_ENTRY_ID: Final = re.compile(rb"\d+-\d+")


@dataclass(frozen=True)
class Delivery:
    """One lane stream entry as this worker received it, decoded as far as it could be."""

    lane: Lane
    entry_id: str
    task_name: str | None
    task_id: str | None
    request: dict[str, Any] | None  # the request object as JSON decoded it; validated later
    raw: RawFields  # the entry's fields exactly as received
    deliveries: int  # times handed out, this one included, summed over requeued copies
    enqueued_ms: int  # when the task first entered its lane (epoch ms)
    reply_to: str | None = None  # a valid `reply_to` from the entry's own field or from the request
    decode_error: str | None = None
    decode_code: ErrorCode | None = None
    poisoned: bool = False  # delivered too often: dead-lettered without decoding its request

    @property
    def kind(self) -> Kind | None:
        """`triage` or `fraud`, or None for a task name inferq does not run."""
        return KIND_BY_TASK.get(self.task_name or "")

    @property
    def result_stream(self) -> str | None:
        """Where this task's result goes: its valid `reply_to`, else its kind's stream, else None."""
        if self.reply_to is not None:
            return self.reply_to
        kind = self.kind
        return results_stream(kind) if kind is not None else None


class _Undecodable(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        super().__init__(message)


def entry_ms(entry_id: str) -> int:
    """Epoch ms at which Redis added a stream entry (the first part of its id)."""
    return int(entry_id.split("-", 1)[0])


def _utf8(value: bytes | None) -> str | None:
    """Strict UTF-8 (Python refuses encoded surrogates too); None when absent or not UTF-8."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _json(data: bytes | str, what: str) -> Any:
    # orjson refuses invalid UTF-8, lone surrogates (raw or escaped), NaN and Infinity, and nesting
    # past 1,024 levels, each with an error rather than a crash.
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "surrogate" in str(exc) or "UTF-8" in str(exc):
            raise _Undecodable(ErrorCode.INVALID_UNICODE, f"{what} holds bytes that are not UTF-8 or a lone "
                                                          "surrogate") from None
        raise _Undecodable(ErrorCode.INVALID_JSON, f"{what} is not valid JSON") from None


def _object(value: Any, what: str) -> dict[str, Any]:
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
            return _json(base64.b64decode(body, validate=True), "payload.body")
        except binascii.Error:
            raise _Undecodable(ErrorCode.MALFORMED, "payload.body is not base64") from None
    return _json(body, "payload.body")


def _envelope_request(body: Any) -> dict[str, Any]:
    # Celery message protocol 2: body = [args, kwargs, embed].
    shaped = isinstance(body, list) and len(body) == 3
    if not (shaped and isinstance(body[0], list) and isinstance(body[1], dict)):
        raise _Undecodable(ErrorCode.MALFORMED, "payload.body is not a protocol 2 body [args, kwargs, embed]")
    args, kwargs = body[0], body[1]
    if "request" in kwargs:
        return _object(kwargs["request"], "kwargs.request")
    if len(args) == 1 and not kwargs:
        return _object(args[0], "args[0]")
    raise _Undecodable(ErrorCode.MISSING_FIELD, "request: send it as kwargs={'request': {...}}")


@dataclass(frozen=True)
class _Found:
    task_name: str | None
    task_id: str | None
    request: dict[str, Any] | None = None
    error: str | None = None
    code: ErrorCode | None = None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _decode_envelope(fields: RawFields) -> _Found:
    # Plain `task`/`id` fields beside the payload (inferq's transports write them) name the task
    # even when the payload cannot be read.
    plain_name, plain_id = _utf8(fields.get(FIELD_TASK.encode())), _utf8(fields.get(FIELD_ID.encode()))
    try:
        message = _json(fields[FIELD_PAYLOAD.encode()], "payload")
    except _Undecodable as exc:
        return _Found(plain_name, plain_id, None, str(exc), exc.code)
    headers = message.get("headers") if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(headers, dict):
        return _Found(plain_name, plain_id, None, "payload is not a Celery message", ErrorCode.MALFORMED)
    task_name = _str_or_none(headers.get("task")) or plain_name
    task_id = _str_or_none(headers.get("id")) or plain_id
    try:
        return _Found(task_name, task_id, _envelope_request(_envelope_body(message)))
    except _Undecodable as exc:
        return _Found(task_name, task_id, None, str(exc), exc.code)


def _decode_raw(fields: RawFields) -> _Found:
    task_name, task_id = _utf8(fields.get(FIELD_TASK.encode())), _utf8(fields.get(FIELD_ID.encode()))
    text = fields.get(FIELD_REQUEST.encode())
    if text is None:
        return _Found(task_name, task_id, None, "request: field missing", ErrorCode.MISSING_FIELD)
    try:
        return _Found(task_name, task_id, _object(_json(text, "request"), "request"))
    except _Undecodable as exc:
        return _Found(task_name, task_id, None, str(exc), exc.code)


def _decode_fields(fields: RawFields) -> _Found:
    if sum(len(name) + len(value) for name, value in fields.items()) > MAX_ENTRY_BYTES:
        found = _identity(fields)
        return _Found(found.task_name, found.task_id, None,
                      f"request: the entry is over {MAX_ENTRY_BYTES // (1024 * 1024)} MiB", ErrorCode.OUT_OF_RANGE)
    if FIELD_PAYLOAD.encode() in fields:
        return _decode_envelope(fields)
    return _decode_raw(fields)


def _checked_identity(found: _Found, fields: RawFields) -> _Found:
    """Drop an unusable task id (it could not key a result) and flag a missing or unknown task."""
    task_id = found.task_id
    if task_id is not None and not 0 < len(task_id) <= MAX_TASK_ID_CHARS:
        return _Found(found.task_name, None, found.request, f"id: 1 to {MAX_TASK_ID_CHARS} characters",
                      ErrorCode.MALFORMED)
    if found.error is not None:
        return found
    if task_id is None:
        if fields.get(FIELD_ID.encode()) is not None:
            return _Found(found.task_name, None, found.request, "id: holds bytes that are not UTF-8",
                          ErrorCode.INVALID_UNICODE)
        return _Found(found.task_name, None, found.request, "id: field missing", ErrorCode.MISSING_FIELD)
    if found.task_name not in KIND_BY_TASK:
        names = ", ".join(sorted(KIND_BY_TASK))
        return _Found(found.task_name, task_id, found.request, f"task: must be one of {names}", ErrorCode.UNKNOWN_TASK)
    return found


def prior_deliveries(fields: RawFields) -> int:
    """Deliveries of earlier copies of this entry (a copy put back at a graceful stop carries them)."""
    try:
        return max(0, int(fields.get(FIELD_PRIOR_DELIVERIES.encode(), b"0")))
    except ValueError:
        return 0


def _enqueued_ms(entry_id: str, fields: RawFields) -> int:
    origin = fields.get(FIELD_ORIGIN.encode())
    if origin is not None and _ENTRY_ID.fullmatch(origin):
        return entry_ms(origin.decode())
    return entry_ms(entry_id)


def _reply_to(fields: RawFields, request: dict[str, Any] | None) -> str | None:
    own = _utf8(fields.get(FIELD_REPLY_TO.encode()))
    if valid_reply_to(own):
        return own
    asked = (request or {}).get("reply_to")
    return asked if valid_reply_to(asked) else None


def decode_entry(lane: Lane, entry_id: str, fields: RawFields, deliveries: int) -> Delivery:
    """A Delivery from one lane entry; never raises: what cannot be decoded is in `decode_error`."""
    found = _checked_identity(_decode_fields(fields), fields)
    return Delivery(
        lane=lane, entry_id=entry_id, task_name=found.task_name, task_id=found.task_id, request=found.request,
        raw=dict(fields), deliveries=deliveries, enqueued_ms=_enqueued_ms(entry_id, fields),
        reply_to=_reply_to(fields, found.request), decode_error=found.error, decode_code=found.code,
    )


def _identity(fields: RawFields) -> _Found:
    task_id = _utf8(fields.get(FIELD_ID.encode()))
    if task_id is not None and not 0 < len(task_id) <= MAX_TASK_ID_CHARS:
        task_id = None
    return _Found(_utf8(fields.get(FIELD_TASK.encode())), task_id)


def identity_only(lane: Lane, entry_id: str, fields: RawFields, deliveries: int) -> Delivery:
    """A Delivery of a poisoned entry: identity from its plain `task` and `id` fields, no request.

    Its answer still goes where the producer asked: the `reply_to` field, else the request's own
    `reply_to` (the Python client and the documented raw form put it there only), read with the
    same bounded, never-raising decoder and nothing else of the request kept.
    """
    found = _identity(fields)
    return Delivery(
        lane=lane, entry_id=entry_id, task_name=found.task_name, task_id=found.task_id, request=None,
        raw=dict(fields), deliveries=deliveries, enqueued_ms=_enqueued_ms(entry_id, fields),
        reply_to=_reply_to(fields, _request_of(fields)), poisoned=True,
    )


def _request_of(fields: RawFields) -> dict[str, Any] | None:
    try:
        return _decode_fields(fields).request
    except Exception:  # the decoder never raises; a poisoned entry is dead-lettered whatever happens
        return None


def _readable(part: bytes) -> str | dict[str, str]:
    text = _utf8(part)
    return text if text is not None else {"base64": base64.b64encode(part).decode("ascii")}


def raw_json(fields: RawFields) -> str:
    """The entry's fields as lossless JSON: [[name, value], ...], bytes that are not UTF-8 as {"base64": ...}."""
    pairs = [[_readable(name), _readable(value)] for name, value in fields.items()]
    return orjson.dumps(pairs).decode()
