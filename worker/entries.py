"""Lane stream entries as the worker receives them: bytes in, a `Delivery` out, never an exception.

Two entry forms share the lane streams: the Celery envelope (field `payload`, the JSON message kombu
builds) and the raw form (`task`, `id`, `request`) that any language can XADD; either may also carry
`reply_to` as a field of its own. Every field arrives as bytes and is decoded on its own, strictly
(UTF-8 without surrogates, JSON without NaN or lone surrogate escapes), so one bad field makes its
task `invalid` or dead-lettered, and nothing else. `docs/wire-format.md` documents both forms.

Stock Celery producers' messages arrive in the envelope form too: `worker.celery_lists` moves them
from kombu's lists into the lanes, and the message kombu built is the `payload`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from contracts import ErrorCode
from contracts.wire import (
    DEFAULT_LANE,
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
# A stream entry id: two 64-bit decimal numbers (a forged `origin` of thousands of digits is none).
_ENTRY_ID: Final = re.compile(rb"[0-9]{1,20}-[0-9]{1,20}")
# orjson reads an integer beyond 64 bits as a float, which an integer field refuses as wrong_type where
# the number is out of range: a request holding a float this large is read again, exactly.
_EXACT_BELOW: Final = float(2**63)
# The kind each lane is the default lane of (one each), for answering a task name inferq does not run.
_KIND_BY_LANE: Final[dict[Lane, Kind]] = {lane: kind for kind, lane in DEFAULT_LANE.items()}


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

    @property
    def unknown_task_kind(self) -> Kind | None:
        """The kind an `unknown_task` answer is filed under, for an entry with a usable id whose task
        name inferq does not run (None for any other entry): the kind its request looks like (`note`:
        triage, `transaction`: fraud), else the kind whose default lane it was queued on."""
        if self.kind is not None or self.task_id is None or self.decode_code is not ErrorCode.UNKNOWN_TASK:
            return None
        looks = self.request or {}
        if "transaction" in looks and "note" not in looks:
            return "fraud"
        if "note" in looks and "transaction" not in looks:
            return "triage"
        return _KIND_BY_LANE[self.lane]

    @property
    def unknown_task_stream(self) -> str | None:
        """Where an `unknown_task` answer goes: the entry's valid `reply_to`, else `unknown_task_kind`'s stream."""
        kind = self.unknown_task_kind
        if kind is None:
            return None
        return self.reply_to if self.reply_to is not None else results_stream(kind)


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
    # orjson refuses invalid UTF-8, lone surrogates (raw or escaped), NaN and Infinity, a byte order
    # mark, numbers beyond a double's range and nesting past 1,024 levels, each with an error rather
    # than a crash.
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _refused(data, str(exc), what) from None


def _refused(data: bytes | str, reason: str, what: str) -> _Undecodable:
    """The code for JSON text orjson refused: its bytes, not orjson's wording, say whether it is UTF-8."""
    if isinstance(data, bytes) and _utf8(data) is None or "surrogate" in reason:
        return _Undecodable(ErrorCode.INVALID_UNICODE, f"{what} holds bytes that are not UTF-8 or a lone surrogate")
    if "infinity" in reason:
        return _Undecodable(ErrorCode.NON_FINITE, f"{what} holds a number too large to be finite")
    return _Undecodable(ErrorCode.INVALID_JSON, f"{what} is not valid JSON")


def _inexact(request: dict[str, Any]) -> bool:
    """Whether the request's own fields, or those of an object in it (where the contract's integers are:
    deadline, timeout_ms, vitals), hold a float past 64 bits that may have been an integer."""
    for value in request.values():
        if isinstance(value, float) and abs(value) >= _EXACT_BELOW:
            return True
        if isinstance(value, dict) and any(isinstance(v, float) and abs(v) >= _EXACT_BELOW for v in value.values()):
            return True
    return False


def _exact(data: bytes | str, what: str) -> Any:
    """JSON text orjson accepted (valid, finite, at most 1,024 deep), read with integers exact."""
    try:
        return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (ValueError, RecursionError):
        return _json(data, what)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Undecodable(ErrorCode.WRONG_TYPE, f"{what} must be a JSON object")
    return value


def _envelope_body(message: Mapping[str, Any], exact: bool = False) -> Any:
    if message.get("content-type") != JSON_CONTENT_TYPE:
        raise _Undecodable(ErrorCode.MALFORMED, "payload: only application/json Celery messages are accepted")
    body = message.get("body")
    if not isinstance(body, str):
        raise _Undecodable(ErrorCode.MALFORMED, "payload.body must be a string")
    properties = message.get("properties")
    if isinstance(properties, dict) and properties.get("body_encoding") == "base64":
        try:
            decoded = base64.b64decode(body, validate=True)
        except ValueError:  # binascii.Error, and text that is not ASCII
            raise _Undecodable(ErrorCode.MALFORMED, "payload.body is not base64") from None
        return (_exact if exact else _json)(decoded, "payload.body")
    return (_exact if exact else _json)(body, "payload.body")


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
    # A stock Celery producer can send what inferq's transport refuses before queueing.
    if headers.get("eta") is not None:
        return _Found(task_name, task_id, None, "payload: countdown/eta are not supported; give the request "
                      "a deadline or timeout_ms", ErrorCode.MALFORMED)
    if headers.get("compression") is not None:
        return _Found(task_name, task_id, None, "payload: compressed messages are not accepted",
                      ErrorCode.MALFORMED)
    try:
        request = _envelope_request(_envelope_body(message))
        if _inexact(request):
            request = _envelope_request(_envelope_body(message, exact=True))
        return _Found(task_name, task_id, request)
    except _Undecodable as exc:
        return _Found(task_name, task_id, None, str(exc), exc.code)


def _decode_raw(fields: RawFields) -> _Found:
    task_name, task_id = _utf8(fields.get(FIELD_TASK.encode())), _utf8(fields.get(FIELD_ID.encode()))
    text = fields.get(FIELD_REQUEST.encode())
    if text is None:
        return _Found(task_name, task_id, None, "request: field missing", ErrorCode.MISSING_FIELD)
    try:
        request = _object(_json(text, "request"), "request")
        if _inexact(request):
            request = _object(_exact(text, "request"), "request")
        return _Found(task_name, task_id, request)
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
    """Drop an unusable task id (it could not key a result), flag a task name inferq does not run (before
    any fault of the request: with a usable id it is answered `unknown_task`) and a missing id."""
    task_id = found.task_id
    if task_id is not None and not 0 < len(task_id) <= MAX_TASK_ID_CHARS:
        return _Found(found.task_name, None, found.request, f"id: 1 to {MAX_TASK_ID_CHARS} characters",
                      ErrorCode.MALFORMED)
    if task_id is not None and found.task_name not in KIND_BY_TASK:
        # Answered `unknown_task` whatever its request holds: the task name is the first thing wrong.
        names = ", ".join(sorted(KIND_BY_TASK))
        return _Found(found.task_name, task_id, found.request, f"task: must be one of {names}", ErrorCode.UNKNOWN_TASK)
    if found.error is not None:
        return found
    if task_id is None:
        if fields.get(FIELD_ID.encode()) is not None:
            return _Found(found.task_name, None, found.request, "id: holds bytes that are not UTF-8",
                          ErrorCode.INVALID_UNICODE)
        return _Found(found.task_name, None, found.request, "id: field missing", ErrorCode.MISSING_FIELD)
    return found


def prior_deliveries(fields: RawFields) -> int:
    """Deliveries of earlier copies of this entry (a copy put back at a graceful stop carries them)."""
    try:
        return max(0, int(fields.get(FIELD_PRIOR_DELIVERIES.encode(), b"0")))
    except ValueError:
        return 0


def _enqueued_ms(entry_id: str, fields: RawFields) -> int:
    """When the task first entered its lane: its `origin` (a copy put back at a graceful stop), which
    is never later than the copy itself; a forged one can only move it earlier."""
    own = entry_ms(entry_id)
    origin = fields.get(FIELD_ORIGIN.encode())
    if origin is not None and _ENTRY_ID.fullmatch(origin):
        return min(own, entry_ms(origin.decode()))
    return own


def _valid_reply_to(value: object) -> bool:
    # The documented pattern ends with `$`, which for JSON Schema (and pydantic) is the end of the text;
    # Python's `$` also matches before a final newline, so "inferq:results:x\n" would pass alone.
    return valid_reply_to(value) and isinstance(value, str) and not value.endswith("\n")


def _reply_to(fields: RawFields, request: dict[str, Any] | None) -> str | None:
    own = _utf8(fields.get(FIELD_REPLY_TO.encode()))
    if _valid_reply_to(own):
        return own
    asked = (request or {}).get("reply_to")
    return asked if _valid_reply_to(asked) else None


def _checked_reply_to(found: _Found, fields: RawFields) -> _Found:
    """Refuse an entry whose own `reply_to` field names no result stream (`bad_reply_to`); it is answered
    on the request's `reply_to` or its kind's stream instead. An entry refused for another reason keeps it."""
    own = fields.get(FIELD_REPLY_TO.encode())
    if own is None or found.error is not None or _valid_reply_to(_utf8(own)):
        return found
    return _Found(found.task_name, found.task_id, found.request,
                  "reply_to: the entry's field must be inferq:results:<name>, name of letters, digits, "
                  "'.', '_', ':', '-'", ErrorCode.BAD_REPLY_TO)


def decode_entry(lane: Lane, entry_id: str, fields: RawFields, deliveries: int) -> Delivery:
    """A Delivery from one lane entry; never raises: what cannot be decoded is in `decode_error`."""
    found = _checked_reply_to(_checked_identity(_decode_fields(fields), fields), fields)
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
    """A Delivery of a poisoned entry: its identity and where to answer it, no request.

    It is answered `failed` like any task that names an id and a kind: identity and `reply_to` (the
    entry's field, else the request's own, where the Python client and the documented raw form put
    it) are read with the same bounded, never-raising decoder as any entry (an envelope names its
    task in its headers), and nothing else of the request is kept.
    """
    try:
        found = _checked_identity(_decode_fields(fields), fields)
    except Exception:  # the decoder never raises; a poisoned entry is dead-lettered whatever happens
        found = _identity(fields)
    return Delivery(
        lane=lane, entry_id=entry_id, task_name=found.task_name, task_id=found.task_id, request=None,
        raw=dict(fields), deliveries=deliveries, enqueued_ms=_enqueued_ms(entry_id, fields),
        reply_to=_reply_to(fields, found.request), poisoned=True,
    )


def _readable(part: bytes) -> str | dict[str, str]:
    text = _utf8(part)
    return text if text is not None else {"base64": base64.b64encode(part).decode("ascii")}


def raw_json(fields: RawFields) -> str:
    """The entry's fields as lossless JSON: [[name, value], ...], bytes that are not UTF-8 as {"base64": ...}."""
    pairs = [[_readable(name), _readable(value)] for name, value in fields.items()]
    return orjson.dumps(pairs).decode()
