"""Bytes-level fuzzing of the lane streams: generated entries, each with the outcome it must lead to.

A helper module (no tests here) for `tests/test_fuzz.py` (CI size) and `bench/fuzz.py` (the full run).

Every generated entry is a list of (name, value) byte pairs, XADDed as is into `inferq:queue:{lane}`,
tagged with a class (what was fuzzed) and an `Expect`: on which result stream it is answered, with
which status and error code, and whether it is dead-lettered and with which code. The oracle is
`expect_entry`, written from docs/wire-format.md (raw and envelope forms, limits, result streams,
dead-letter stream, error codes), not from the worker's code: an entry names a task by a usable id
(UTF-8, 1-200 characters) and a known task name, or it cannot be answered and is dead-lettered; a
named task whose request cannot be read is answered `invalid` with the decoding code; a readable
request is judged by the v1 contract (`contracts.parse_request`, the function producers' clients
run); a past deadline is `expired`; a task handed out more than `max_deliveries` times (a forged
`prior_deliveries`) is dead-lettered and answered `failed`. Where several problems meet in one entry
the docs do not say which is reported, and the oracle allows each of their codes.

Contents come from hypothesis strategies (arbitrary bytes and text in any field, missing and extra
fields, non-UTF-8, raw and escaped surrogates, deep nesting, NaN and Infinity, huge numbers, unknown
task names, forged Celery envelopes and headers, forged `origin`/`prior_deliveries`/signature fields);
`draw_corpus` runs one seeded `@given` function per class (`Phase.generate` only, no database), so a
seed gives the same entries every time. Huge entries (MiB-sized) come from a seeded `random.Random`.
Valid tasks (real triage notes and fraud requests from `training`) are interleaved with them.

Each entry carries a unique token (a UUID) in its raw bytes: its task id where it has a usable one,
else inside another field, so that its result or its dead letter is matched to it.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import random
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from contracts import ContractError, ErrorCode, TaskResultMessage, effective_deadline_ms, parse_request
from contracts.iso import COUNTRIES, CURRENCIES
from contracts.wire import (
    DEADLETTER_STREAM,
    LANES,
    RESULTS_PREFIX,
    TASK_FRAUD,
    TASK_NAMES,
    TASK_TRIAGE,
    Kind,
    Lane,
    queue_stream,
    results_stream,
)

Pairs = tuple[tuple[bytes, bytes], ...]

# ---------------------------------------------------------------------------------------------------
# The wire format, as docs/wire-format.md states it
# ---------------------------------------------------------------------------------------------------

KIND_OF_TASK: Final[dict[str, Kind]] = {TASK_TRIAGE: "triage", TASK_FRAUD: "fraud"}
MAX_ENTRY_BYTES: Final = 4 * 1024 * 1024  # names and values together; over it: invalid, out_of_range
MAX_ID_CHARS: Final = 200
MAX_JSON_DEPTH: Final = 1024  # deeper nesting: invalid_json
MAX_DELIVERIES: Final = 3  # INFERQ_MAX_DELIVERIES, the default the workers run with
# The documented reply_to pattern, with JSON Schema's (ECMA 262) anchors: `$` is the end of the text.
_REPLY_TO: Final = re.compile(r"\Ainferq:results:[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_ENTRY_ID: Final = re.compile(rb"\A[0-9]{1,20}-[0-9]{1,20}\Z")  # a Redis stream id: two 64-bit numbers
# Fields a producer may set besides task/id/request/payload; `origin` and `prior_deliveries` are the
# worker's own (a requeued copy), forged here on purpose.
SPECIAL: Final = frozenset({b"task", b"id", b"request", b"payload", b"reply_to", b"origin", b"prior_deliveries",
                            b"sig", b"sig_kid", b"sig_ts"})

# Result streams the fuzzer names as reply_to, and one key that exists as a string, not a stream:
# a task answered there is dead-lettered `bad_reply_to` with no result (the harness creates it).
REPLY_STREAMS: Final = ("inferq:results:fuzz-a", "inferq:results:fuzz.b:c-9", "inferq:results:client:fuzz")
OCCUPIED: Final = "inferq:results:fuzz-occupied"
PAST_DEADLINE: Final = 1_000_000_000_000 + 4242  # within the contract's range, long past: `expired`
E = ErrorCode


@dataclass(frozen=True)
class Expect:
    """What one entry must lead to.

    `stream` is None when the entry must get no result anywhere; otherwise exactly one result, on
    `stream`, with a status in `statuses` and (unless ok) an error code in `codes`. `deadletter`
    holds the allowed dead-letter codes; empty, the entry must not be dead-lettered. `kind` names the
    kind an answer of a task name inferq does not run is filed under (None: the task's own).
    """

    stream: str | None
    statuses: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    deadletter: frozenset[str] = frozenset()
    kind: Kind | None = None

    def label(self) -> str:
        parts = []
        if self.stream is not None:
            parts.append("|".join(sorted(self.statuses)) + ("/" + "|".join(sorted(self.codes)) if self.codes else ""))
        if self.deadletter:
            parts.append("deadletter/" + "|".join(sorted(self.deadletter)))
        return " + ".join(parts)


@dataclass(frozen=True)
class FuzzEntry:
    """One lane entry: its class, lane, exact fields, token, usable task id and oracle."""

    cls: str
    lane: Lane
    fields: Pairs
    token: str
    task_id: str | None
    expect: Expect
    kind: Kind | None = None  # the kind its task name names, where it names one
    reference: tuple[Kind, dict[str, Any]] | None = None  # a task to compute: its decoded request

    @property
    def size(self) -> int:
        return sum(len(name) + len(value) for name, value in self.fields)


# ---------------------------------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------------------------------


def _utf8(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")  # strict: encoded surrogates are not UTF-8
    except UnicodeDecodeError:
        return None


def reply_to_ok(value: object) -> bool:
    return isinstance(value, str) and _REPLY_TO.match(value) is not None


_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS: Final = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_BIG_NUMBER: Final = re.compile(r"[0-9][eE]\+?[0-9]{3,}|[0-9]{309}")


def json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects in JSON text (strings skipped); rough on broken text."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@contextmanager
def _recursion(limit: int) -> Iterator[None]:
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def _walk(value: Any) -> Iterator[Any]:
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _has_surrogate(value: Any) -> bool:
    return any(isinstance(v, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in v) for v in _walk(value))


def _beyond_double(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            return True
    return False


def _has_infinite(value: Any) -> bool:
    """A number beyond a double's range (1e400, or an integer of 309 digits): not finite when read."""
    return any(_beyond_double(v) for v in _walk(value))


def json_verdict(data: bytes) -> tuple[frozenset[str], Any]:
    """(codes, None) for text the wire format refuses as JSON, else (empty, the decoded value).

    Not UTF-8 (encoded surrogates included): invalid_unicode. Not JSON (RFC 8259: no NaN or Infinity,
    no byte order mark), or nested deeper than 1,024: invalid_json. A lone surrogate escape:
    invalid_unicode. A number too large to be finite as a double (1e400): non_finite.
    """
    text = _utf8(data)
    if text is None:
        return frozenset({E.INVALID_UNICODE}), None
    escapes = frozenset({E.INVALID_UNICODE}) if _SURROGATE_ESCAPE.search(text) else frozenset()
    if json_depth(text) > MAX_JSON_DEPTH:
        return frozenset({E.INVALID_JSON}) | escapes, None
    try:
        with _recursion(MAX_JSON_DEPTH * 4):
            value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        overflow = frozenset({E.NON_FINITE}) if _BIG_NUMBER.search(text) else frozenset()
        return frozenset({E.INVALID_JSON}) | escapes | overflow, None
    codes = set()
    if _has_surrogate(value):
        codes.add(E.INVALID_UNICODE)
    if _has_infinite(value):
        codes.add(E.NON_FINITE)
    return frozenset(codes), (None if codes else value)


@dataclass(frozen=True)
class Verdict:
    """A request's fate once its task is named: statuses and codes allowed."""

    statuses: frozenset[str]
    codes: frozenset[str] = frozenset()

    @staticmethod
    def invalid(*codes: str) -> Verdict:
        return Verdict(frozenset({"invalid"}), frozenset(codes))


OK = Verdict(frozenset({"ok"}))
EXPIRED = Verdict(frozenset({"expired"}), frozenset({E.EXPIRED}))


def contract_verdict(kind: Kind, request: Any, enqueued_ms: int | None) -> Verdict:
    """The v1 contract on a decoded request; a valid one is `expired` when its deadline has passed.

    `enqueued_ms` None: the entry's own XADD time (about now); a deadline within minutes of now may
    end either way.
    """
    if not isinstance(request, dict):
        return Verdict.invalid(E.WRONG_TYPE)
    try:
        parsed = parse_request(kind, request)
    except ContractError as exc:
        return Verdict.invalid(exc.code)
    now_ms = int(time.time() * 1000)
    deadline = effective_deadline_ms(parsed, enqueued_ms if enqueued_ms is not None else now_ms)
    if deadline is None or deadline > now_ms + 600_000:
        return OK
    if deadline < now_ms - 60_000:
        return EXPIRED
    return Verdict(OK.statuses | EXPIRED.statuses, EXPIRED.codes)


@dataclass
class _Read:
    """An entry as the wire format reads it: identity, request and where its answer goes."""

    task: str | None = None
    task_id: str | None = None
    id_problem: str | None = None  # why there is no usable id
    problems: frozenset[str] = frozenset()  # why the request cannot be read
    request: Any = None
    readable: bool = False


def _id_problem(raw: bytes | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, E.MISSING_FIELD
    text = _utf8(raw)
    if text is None:
        return None, E.INVALID_UNICODE
    if not 0 < len(text) <= MAX_ID_CHARS:
        return None, E.MALFORMED
    return text, None


def _text_id(value: str) -> tuple[str | None, str | None]:
    return (value, None) if 0 < len(value) <= MAX_ID_CHARS else (None, E.MALFORMED)


def _read_json(data: bytes) -> tuple[frozenset[str], Any]:
    codes, value = json_verdict(data)
    if codes:
        return codes, None
    if not isinstance(value, dict):
        return frozenset({E.WRONG_TYPE}), None
    return frozenset(), value


def _read_raw(fields: Mapping[bytes, bytes]) -> _Read:
    read = _Read(task=_utf8(fields.get(b"task")))
    read.task_id, read.id_problem = _id_problem(fields.get(b"id"))
    if b"request" not in fields:
        read.problems = frozenset({E.MISSING_FIELD})
        return read
    read.problems, read.request = _read_json(fields[b"request"])
    read.readable = not read.problems
    return read


def _nonempty_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _read_envelope(fields: Mapping[bytes, bytes]) -> _Read:
    """The envelope form: `payload` holds the Celery message; plain `task`/`id` fields name the task
    when the payload cannot be read or its headers do not name it (a missing or empty value)."""
    plain = _read_raw({k: v for k, v in fields.items() if k in (b"task", b"id")})
    read = _Read(task=plain.task, task_id=plain.task_id, id_problem=plain.id_problem)
    codes, message = json_verdict(fields[b"payload"])
    if codes:
        read.problems = codes
        return read
    headers = message.get("headers") if isinstance(message, dict) else None
    if not isinstance(headers, dict):
        read.problems = frozenset({E.MALFORMED})
        return read
    if (name := _nonempty_str(headers.get("task"))) is not None:
        read.task = name
    if (task_id := _nonempty_str(headers.get("id"))) is not None:
        read.task_id, read.id_problem = _text_id(task_id)
    if headers.get("eta") is not None or headers.get("compression") is not None:
        read.problems = frozenset({E.MALFORMED})  # countdown/eta and compressed bodies are refused
        return read
    read.problems, read.request = _envelope_request(message)
    read.readable = not read.problems
    return read


def _envelope_request(message: dict[str, Any]) -> tuple[frozenset[str], Any]:
    if message.get("content-type") != "application/json":
        return frozenset({E.MALFORMED}), None
    body = message.get("body")
    if not isinstance(body, str):
        return frozenset({E.MALFORMED}), None
    properties = message.get("properties")
    if isinstance(properties, dict) and properties.get("body_encoding") == "base64":
        try:
            data = base64.b64decode(body.encode("ascii"), validate=True)
        except ValueError:  # not ASCII, not the base64 alphabet, bad padding
            return frozenset({E.MALFORMED}), None
    else:
        data = body.encode("utf-8")
    codes, value = json_verdict(data)
    if codes:
        return codes, None
    # Celery's protocol 2 body: [args, kwargs, embed]; the request is kwargs.request or a lone argument.
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], list)
            and isinstance(value[1], dict)):
        return frozenset({E.MALFORMED}), None
    args, kwargs = value[0], value[1]
    if "request" in kwargs:
        request = kwargs["request"]
    elif len(args) == 1 and not kwargs:
        request = args[0]
    else:
        return frozenset({E.MISSING_FIELD}), None
    if not isinstance(request, dict):
        return frozenset({E.WRONG_TYPE}), None
    return frozenset(), request


def _prior(fields: Mapping[bytes, bytes]) -> int:
    value = fields.get(b"prior_deliveries")
    return int(value) if value is not None and re.fullmatch(rb"[0-9]{1,18}", value) else 0


def _origin_ms(fields: Mapping[bytes, bytes]) -> int | None:
    """When a requeued copy's task first entered its lane: its `origin` entry id, which is never later
    than the copy (added about now); None (the entry's own time) when it is no entry id."""
    value = fields.get(b"origin")
    if value is None or not _ENTRY_ID.match(value) or int(value.split(b"-")[0]) >= 2**64:
        return None
    return min(int(value.split(b"-")[0]), int(time.time() * 1000))


# The kind each lane is the default lane of: an unknown task name's answer is filed under it when its
# request looks like neither kind.
KIND_OF_LANE: Final[dict[str, Kind]] = {"realtime": "fraud", "batch": "triage"}


def _unknown_task(lane: Lane, request: Any, own: str | None, asked: Any) -> Expect:
    """A task name inferq does not run, with a usable id: answered `invalid` `unknown_task` on its
    reply_to, else on the stream of the kind its request looks like (`note` / `transaction`), else of
    the kind whose default lane it was queued on."""
    looks = request if isinstance(request, dict) else {}
    if ("transaction" in looks) != ("note" in looks):
        kind: Kind = "fraud" if "transaction" in looks else "triage"
    else:
        kind = KIND_OF_LANE[lane]
    stream = own if reply_to_ok(own) else asked if reply_to_ok(asked) else results_stream(kind)
    if stream == OCCUPIED:
        return Expect(None, deadletter=frozenset({E.BAD_REPLY_TO}))
    return Expect(stream, frozenset({"invalid"}), frozenset({E.UNKNOWN_TASK}), kind=kind)


def expect_entry(pairs: Pairs, verdict: Verdict | None = None, lane: Lane = "batch") -> Expect:
    """What the wire format promises for this entry on `lane`; `verdict` overrides the request's
    judgement (a generator that made one known contract violation states its documented code)."""
    fields = dict(pairs)
    if sum(len(n) + len(v) for n, v in pairs) > MAX_ENTRY_BYTES:
        # Refused unread: only the plain task and id fields can name it.
        read = _read_raw({k: v for k, v in fields.items() if k in (b"task", b"id")})
        read.problems, read.readable, read.request = frozenset({E.OUT_OF_RANGE}), False, None
    elif b"payload" in fields:
        read = _read_envelope(fields)
    else:
        read = _read_raw(fields)
    kind = KIND_OF_TASK.get(read.task or "")
    own = _utf8(fields.get(b"reply_to"))
    asked = read.request.get("reply_to") if isinstance(read.request, dict) else None
    stream = own if reply_to_ok(own) else asked if reply_to_ok(asked) else results_stream(kind) if kind else None
    answerable = read.task_id is not None and kind is not None and stream is not None
    if _prior(fields) + 1 > MAX_DELIVERIES:
        # Dead-lettered without being decoded for work, answered `failed` where it can be.
        letter = frozenset({E.TOO_MANY_DELIVERIES})
        if answerable and stream != OCCUPIED:
            return Expect(stream, frozenset({"failed"}), letter, letter)
        return Expect(None, deadletter=letter | ({E.BAD_REPLY_TO} if stream == OCCUPIED else frozenset()))
    if read.task_id is not None and kind is None:
        return _unknown_task(lane, read.request, own, asked)
    if not answerable:
        reason = read.id_problem if read.task_id is None else E.UNKNOWN_TASK
        return Expect(None, deadletter=frozenset({str(reason)}) | read.problems)
    assert kind is not None and stream is not None
    if stream == OCCUPIED:
        return Expect(None, deadletter=frozenset({E.BAD_REPLY_TO}))
    if read.problems:
        judged = Verdict.invalid(*read.problems)
    elif b"reply_to" in fields and not reply_to_ok(own):
        judged = Verdict.invalid(E.BAD_REPLY_TO)  # the entry's own field names no result stream
    elif verdict is not None:
        judged = verdict
    else:
        judged = contract_verdict(kind, read.request, _origin_ms(fields))
    return Expect(stream, judged.statuses, judged.codes)


# ---------------------------------------------------------------------------------------------------
# Building blocks. Strategies are module constants (hypothesis builds and validates each once); an
# entry is drawn with PLACEHOLDER where its token goes, replaced once drawn (same length).
# ---------------------------------------------------------------------------------------------------

PLACEHOLDER: Final = "ffffffff-ffff-4fff-bfff-ffffffffffff"
PH: Final = PLACEHOLDER.encode()
COMMON_CURRENCIES: Final = ("EUR", "USD", "GBP", "JPY", "CHF", "SEK", "BRL", "INR", "KWD", "NOK")
ALL_CURRENCIES: Final = tuple(sorted(CURRENCIES))
ALL_COUNTRIES: Final = tuple(sorted(COUNTRIES))
CHANNELS: Final = ("card_present", "ecommerce", "atm", "contactless", "recurring")
SAMPLE_NOTES: Final = (
    "c/o crushing chest pain radiating to left arm x30 min, diaphoretic",
    "pt states sore throat x3 days, no fever, eating and drinking",
    "fall from standing, wrist pain and swelling, no LOC",
    "71F fall at home, L hip pain, cannot bear weight",
    "rash on forearm x2d, itchy, no fever",
    "58M substernal chest pressure since 0640. HR 104 BP 158/94",
)
NEAR_MISS_TASKS: Final = (
    "inferq.Fraud", "inferq.fraud ", " inferq.triage", "inferq.fraud\x00", "inferq.triage\n", "inferq.fraud.v2",
    "celery.ping", "inferq.", "", "INFERQ.TRIAGE", "inferq_fraud", "inferq.frauds", "inferq.triag",
    "\uff49nferq.fraud", "inferq.tri\u0430ge", "inferq:triage", "triage", "fraud",
)
BAD_REPLY_TO: Final = (
    "inferq:queue:batch", "inferq:results:", "inferq:results:a b", "inferq:results:{x}", "inferq:deadletter",
    "inferq:results:-x", "inferq:results:" + "x" * 129, "results:x", "inferq:results:\u00e9", "inferq:results:x\n",
    "inferq:results:x\r\n", " inferq:results:x",
)
# Byte sequences that are not UTF-8: a lone continuation, an overlong NUL, past U+10FFFF, truncated,
# Latin-1 text, an encoded surrogate.
NOT_UTF8: Final = (b"\xff", b"\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xfe\xfe", b"caf\xe9",
                   b"\xf8\x88", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xb2\x80")
_DELETE: Final = "@@DELETE@@"

Timestamp = tuple[int, str, int, str]  # offset minutes, separator, fraction digits, how UTC is written
ts_formats: st.SearchStrategy[Timestamp] = st.tuples(
    st.sampled_from((0, 0, 0, 60, -300, 330, 545, 840, -720, -59)), st.sampled_from("TTt "), st.integers(0, 9),
    st.sampled_from(("Z", "z", "+00:00", "-00:00")))


def rfc3339(epoch_s: float, offset_min: int = 0, sep: str = "T", frac: int = 3, zulu: str = "Z") -> str:
    """An RFC 3339 timestamp of `epoch_s` written at a UTC offset of `offset_min` minutes."""
    local = time.gmtime(epoch_s + offset_min * 60)
    text = time.strftime(f"%Y-%m-%d{sep}%H:%M:%S", local)
    if frac:
        text += "." + f"{epoch_s % 1:.9f}"[2:2 + frac]
    if offset_min == 0:
        return text + zulu
    sign = "+" if offset_min > 0 else "-"
    return text + f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"


tenants = st.builds(lambda first, rest: first + rest, st.sampled_from("abcXYZ0189"),
                    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-", max_size=20))
ids_text = st.text(min_size=1, max_size=128)
_PLAIN_EVENT = st.fixed_dictionaries(
    {"amount": st.integers(50, 500_000).map(lambda cents: cents / 100), "currency": st.sampled_from(COMMON_CURRENCIES),
     "mcc": st.integers(0, 9999).map("{:04d}".format), "channel": st.sampled_from(CHANNELS),
     "country": st.sampled_from(("DE", "NL", "US", "GB", "FR", "BR"))},
    optional={"merchant_id": st.integers(0, 99999).map("m-{}".format),
              "device_id": st.integers(0, 999).map("dev-{}".format)})
_FUZZY_EVENT = st.fixed_dictionaries(
    {"amount": st.one_of(st.floats(min_value=1e-300, max_value=1e12), st.sampled_from((1e12, 5e-324, 0.01))),
     "currency": st.sampled_from(ALL_CURRENCIES), "mcc": st.integers(0, 9999).map("{:04d}".format),
     "channel": st.sampled_from(CHANNELS), "country": st.sampled_from(ALL_COUNTRIES), "@ts": ts_formats},
    optional={"merchant_id": ids_text, "device_id": ids_text})


def _fraud_request(fuzzy: bool) -> st.SearchStrategy[dict[str, Any]]:
    event = _FUZZY_EVENT if fuzzy else _PLAIN_EVENT

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        now = time.time()
        at = now - draw(st.integers(60, 86_400))
        moments = list(itertools.accumulate(draw(st.lists(st.integers(0, 30 * 86_400), max_size=6))))
        events = [(at - moment, draw(event)) for moment in reversed(moments)] + [(at, draw(event))]
        for epoch_s, ev in events:
            fmt: Timestamp | None = ev.pop("@ts", None)  # type: ignore[assignment]
            ev["timestamp"] = rfc3339(epoch_s, *fmt) if fmt is not None else rfc3339(epoch_s)
        return {"tenant": draw(tenants), "transaction": events[-1][1], "history": [ev for _, ev in events[:-1]]}

    return build()


_VITALS = st.fixed_dictionaries({}, optional={
    "heart_rate": st.integers(20, 300), "resp_rate": st.integers(2, 80), "spo2": st.floats(50, 100),
    "temperature_c": st.floats(20, 45), "pain": st.integers(0, 10),
    "@bp": st.integers(60, 300).flatmap(lambda s: st.tuples(st.just(s), st.integers(20, min(200, s - 1))))})


def _no_bp(vitals: dict[str, Any]) -> dict[str, Any]:
    bp = vitals.pop("@bp", None)
    if bp is not None:
        vitals["systolic_bp"], vitals["diastolic_bp"] = bp
    return vitals


def _triage_request(fuzzy: bool) -> st.SearchStrategy[dict[str, Any]]:
    # A fuzzed note is any text around a word, so that it is never blank.
    note = (st.builds(lambda a, b: f"{a} pain {b}", st.text(max_size=80), st.text(max_size=80)) if fuzzy
            else st.sampled_from(SAMPLE_NOTES))
    return st.fixed_dictionaries({"tenant": tenants, "note": note}, optional={
        "age": st.floats(min_value=0, max_value=120), "sex": st.sampled_from("FMXU"), "vitals": _VITALS.map(_no_bp),
        "arrival_mode": st.sampled_from(("walk_in", "ems", "transfer", "police", "other")), "explain": st.booleans()})


def _templates(count: int) -> dict[Kind, list[Any]]:
    """Valid requests to carry a fault (most classes), from a fixed seed: one hypothesis choice each
    instead of the dozens a drawn request takes. Fraud timestamps are ages, made absolute when drawn."""
    rng = random.Random(20_261_202)
    fraud = []
    for _ in range(count):
        def event() -> dict[str, Any]:
            ev: dict[str, Any] = {"amount": rng.randint(50, 500_000) / 100, "currency": rng.choice(COMMON_CURRENCIES),
                                  "mcc": f"{rng.randint(0, 9999):04d}", "channel": rng.choice(CHANNELS),
                                  "country": rng.choice(("DE", "NL", "US", "GB", "FR", "BR"))}
            if rng.random() < 0.5:
                ev["merchant_id"] = f"m-{rng.randint(0, 99_999)}"
            return ev
        ages = sorted((rng.randint(120, 60 * 86_400) for _ in range(rng.randint(0, 6))), reverse=True)
        fraud.append((f"t{rng.randint(0, 999)}", [(age, event()) for age in ages], (60, event())))
    triage = []
    for _ in range(count):
        request: dict[str, Any] = {"tenant": f"ed-{rng.randint(0, 99)}", "note": rng.choice(SAMPLE_NOTES)}
        if rng.random() < 0.5:
            request["age"] = rng.randint(0, 1200) / 10
        if rng.random() < 0.3:
            request["vitals"] = {"heart_rate": rng.randint(40, 180), "systolic_bp": 120, "diastolic_bp": 80}
        if rng.random() < 0.3:
            request["sex"] = rng.choice("FMXU")
        triage.append(request)
    return {"fraud": fraud, "triage": triage}


_TEMPLATES: Final = _templates(64)


def _from_template(kind: Kind, index: int) -> dict[str, Any]:
    template = _TEMPLATES[kind][index]
    if kind == "triage":
        copy: dict[str, Any] = json.loads(json.dumps(template))  # a copy the draw may change
        return copy
    tenant, history, (age, transaction) = template
    now = time.time()
    return {"tenant": tenant, "transaction": {**transaction, "timestamp": rfc3339(now - age)},
            "history": [{**ev, "timestamp": rfc3339(now - ago)} for ago, ev in history]}


REQUESTS: Final[dict[tuple[Kind, bool], st.SearchStrategy[dict[str, Any]]]] = {
    ("fraud", False): st.integers(0, 63).map(lambda i: _from_template("fraud", i)),
    ("fraud", True): _fraud_request(True),
    ("triage", False): st.integers(0, 63).map(lambda i: _from_template("triage", i)),
    ("triage", True): _triage_request(True),
}


def expired(request: dict[str, Any]) -> dict[str, Any]:
    """The request with a deadline long past: validated in full, then `expired`, never computed."""
    return {**request, "deadline": PAST_DEADLINE}


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
styles = st.tuples(st.booleans(), st.booleans())


def dumps(value: Any, style: tuple[bool, bool] = (False, False)) -> bytes:
    """JSON text of `value`: ASCII escapes or UTF-8, compact or spaced."""
    ascii_only, spaced = style
    return json.dumps(value, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else (",", ":")).encode()


def _splice(data: bytes, where: int, insert: bytes) -> bytes:
    return data[:where] + insert + data[where:]


def _inside_string(text: bytes, pick: int) -> int:
    """An offset just after the opening quote of one of the JSON text's strings (`pick` chooses)."""
    quotes = [m.start() + 1 for m in re.finditer(rb'"', text)]
    return quotes[pick % len(quotes)] if quotes else 0


anywhere = st.integers(0, 2**16)
extra_names = st.binary(max_size=24).filter(lambda b: b not in SPECIAL and b != b"marker")
extra_values = st.one_of(st.binary(max_size=120), st.text(max_size=60).map(lambda t: t.encode("utf-8")))
extras = st.lists(st.tuples(extra_names, extra_values, anywhere), min_size=1, max_size=6)


Fields = list[tuple[bytes, bytes]]


def with_extras(pairs: Fields, added: Sequence[tuple[bytes, bytes, int]]) -> Fields:
    """`pairs` with extra fields (names the wire format does not use) spread among them."""
    out = list(pairs)
    names = {name for name, _ in out}
    for name, value, where in added:
        if name not in names:
            names.add(name)
            out.insert(where % (len(out) + 1), (name, value))
    return out


def shuffled(pairs: list[tuple[bytes, bytes]], how: int) -> list[tuple[bytes, bytes]]:
    """`pairs` in their order (how even) or shuffled by `how`."""
    if how % 2 == 0:
        return pairs
    out = list(pairs)
    random.Random(how).shuffle(out)
    return out


# ---------------------------------------------------------------------------------------------------
# Drafts: what a class strategy draws, with PLACEHOLDER for the entry's token.
# ---------------------------------------------------------------------------------------------------


@dataclass
class Draft:
    pairs: list[tuple[bytes, bytes]]
    lane: Lane
    verdict: Verdict | None = None  # the documented code of a known single contract violation
    computed: bool = False  # a valid task that reaches the model


lanes: st.SearchStrategy[Lane] = st.sampled_from(LANES)
kinds: st.SearchStrategy[Kind] = st.sampled_from(("triage", "fraud"))


def raw(task: bytes, task_id: bytes, request: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"task", task), (b"id", task_id), (b"request", request)]


def _task(kind: Kind) -> bytes:
    return TASK_NAMES[kind].encode()


def _request(draw: st.DrawFn, kind: Kind, fuzzy: bool = False) -> dict[str, Any]:
    return draw(REQUESTS[(kind, fuzzy)])


@st.composite
def raw_request_bytes(draw: st.DrawFn) -> Draft:
    kind = draw(kinds)
    request = draw(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda t: t.encode("utf-8")),
                             st.text(max_size=60).map(lambda t: t.encode("utf-16"))))
    return Draft(shuffled(raw(_task(kind), PH, request), draw(anywhere)), draw(lanes))


@st.composite
def raw_request_not_utf8(draw: st.DrawFn) -> Draft:
    """A request whose JSON holds bytes that are not UTF-8, raw encoded surrogates included."""
    kind = draw(kinds)
    text = dumps(expired(_request(draw, kind)), draw(styles))
    request = _splice(text, _inside_string(text, draw(anywhere)), draw(st.sampled_from(NOT_UTF8)))
    return Draft(raw(_task(kind), PH, request), draw(lanes), Verdict.invalid(E.INVALID_UNICODE))


@st.composite
def raw_request_surrogate_escape(draw: st.DrawFn) -> Draft:
    """A lone surrogate written as a JSON escape: high alone, low alone, reversed, high before a non-low."""
    kind = draw(kinds)
    high, low = draw(st.integers(0xD800, 0xDBFF)), draw(st.integers(0xDC00, 0xDFFF))
    escape = draw(st.sampled_from((f"\\u{high:04x}", f"\\u{low:04X}", f"\\u{low:04x}\\u{high:04x}",
                                   f"\\u{high:04x}\\u0041", f"\\u{high:04x}x", f"\\u{high:04X}\\n"))).encode()
    text = dumps(expired(_request(draw, kind)), draw(styles))
    where = draw(st.sampled_from(("value", "key", "tenant")))
    if where == "key":
        text = text[:-1] + b', "k' + escape + b'": 1}'
    elif where == "tenant":
        text = text.replace(b'"tenant"', b'"tenant' + escape + b'"', 1)
    else:
        text = _splice(text, _inside_string(text, draw(anywhere)), escape)
    return Draft(raw(_task(kind), PH, text), draw(lanes), Verdict.invalid(E.INVALID_UNICODE))


@st.composite
def raw_request_paired_escape(draw: st.DrawFn) -> Draft:
    """Control: a surrogate pair escape is one valid character; the task reaches its (past) deadline."""
    kind = draw(kinds)
    pair = json.dumps(chr(draw(st.integers(0x10000, 0x10FFFF))))[1:-1]  # a high and a low escape
    request = expired(_request(draw, kind))
    if kind == "triage":
        request["note"] = "pain @@P@@"
    else:
        request["transaction"]["merchant_id"] = "m@@P@@"
    text = dumps(request, draw(styles)).replace(b"@@P@@", pair.encode())
    return Draft(raw(_task(kind), PH, text), draw(lanes))


@st.composite
def raw_request_json_value(draw: st.DrawFn) -> Draft:
    """Any JSON value: a non-object is wrong_type; an object is judged by the contract."""
    kind = draw(kinds)
    value = draw(st.one_of(json_values, st.dictionaries(st.text(max_size=12), json_values, max_size=6)))
    if isinstance(value, dict) and draw(st.booleans()):
        value = {**expired(_request(draw, kind)), **value}
    return Draft(raw(_task(kind), PH, dumps(value, draw(styles))), draw(lanes))


@st.composite
def raw_request_numbers(draw: st.DrawFn) -> Draft:
    """NaN and Infinity (not JSON), numbers too large for a double, integers past 64 bits."""
    kind = draw(kinds)
    request = expired(_request(draw, kind))
    place, int_place = ("transaction.amount", "timeout_ms") if kind == "fraud" else ("age", "vitals.heart_rate")
    form = draw(st.sampled_from(("nan", "huge", "bigint", "bigfloat")))
    target = place
    if form == "nan":
        literal = draw(st.sampled_from(("NaN", "Infinity", "-Infinity", "nan", "inf", "+1", ".5", "1.", "0x10")))
        verdict = Verdict.invalid(E.INVALID_JSON)
    elif form == "huge":
        literal = draw(st.sampled_from(("1e400", "-1e400", "1E999", "2e308", "-123456789e400")))
        verdict = Verdict.invalid(E.NON_FINITE)
    elif form == "bigint":
        literal = str(draw(st.sampled_from((10**19, 2**64, 10**30, 10**300, -(2**63) - 1, -(10**25)))))
        verdict = Verdict.invalid(E.VITAL_OUT_OF_RANGE if int_place.startswith("vitals") else E.OUT_OF_RANGE)
        target = int_place
        if kind == "fraud":
            request.pop("deadline")  # timeout_ms alone, or the two conflict
    else:
        literal = "1" + "0" * draw(st.integers(20, 300)) + ".5"
        verdict = Verdict.invalid(E.OUT_OF_RANGE)
    holder = request
    *parents, leaf = target.split(".")
    for parent in parents:
        holder = holder.setdefault(parent, {})
    holder[leaf] = "@@NUMBER@@"
    text = dumps(request, draw(styles)).replace(b'"@@NUMBER@@"', literal.encode())
    return Draft(raw(_task(kind), PH, text), draw(lanes), verdict)


def nested(depth: int, shape: str) -> bytes:
    if shape == "list":
        return b"[" * depth + b"]" * depth
    if shape == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'[{"a":' * (depth // 2) + b"[]" + b"}]" * (depth // 2)


@st.composite
def raw_request_deep(draw: st.DrawFn) -> Draft:
    """Deep nesting: up to 1,024 levels is JSON the contract judges; deeper is invalid_json."""
    kind = draw(kinds)
    depth = draw(st.sampled_from((2, 100, 1000, 1023, 1024, 1025, 1100, 5000, 60_000)))
    shape = draw(st.sampled_from(("list", "object", "mixed")))
    where = draw(st.sampled_from(("top", "extra", "field")))
    if where == "top":
        text = nested(depth, shape)
    else:
        request = expired(_request(draw, kind))
        name = "xtra" if where == "extra" else ("vitals" if kind == "triage" else "history")
        request[name] = "@@DEEP@@"
        text = dumps(request, draw(styles)).replace(b'"@@DEEP@@"', nested(depth - 1, shape))
    return Draft(raw(_task(kind), PH, text), draw(lanes))


Mutation = tuple[str, str, st.SearchStrategy[Any], frozenset[str]]  # name, path, value, documented codes


def _m(name: str, path: str, value: Any, *codes: str) -> Mutation:
    strategy = value if isinstance(value, st.SearchStrategy) else st.just(value)
    return name, path, strategy, frozenset(codes)


def _one_of(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


# One contract violation each, with the code docs/wire-format.md's table gives it.
_COMMON_MUTATIONS: Final[list[Mutation]] = [
    _m("tenant.missing", "tenant", _DELETE, E.MISSING_FIELD),
    _m("tenant.empty", "tenant", "", E.OUT_OF_RANGE),
    _m("tenant.long", "tenant", "t" * 65, E.OUT_OF_RANGE),
    _m("tenant.shape", "tenant", _one_of("a b", "-x", "x/y", "caf\u00e9", "x\n"), E.MALFORMED),
    _m("tenant.type", "tenant", _one_of(5, None, [], {}, True), E.WRONG_TYPE),
    _m("unknown_field", "surprise", json_values, E.UNKNOWN_FIELD),
    _m("schema_version", "schema_version", _one_of("2", "1.0", "v1", ""), E.UNSUPPORTED_SCHEMA_VERSION),
    _m("deadline_conflict", "timeout_ms", 60_000, E.DEADLINE_CONFLICT),
    _m("deadline.range", "deadline", _one_of(0, 1_700_000_000, 5_000_000_000_000), E.OUT_OF_RANGE),
    _m("deadline.type", "deadline", _one_of("soon", 1.7e12, [1]), E.WRONG_TYPE),
    _m("reply_to.pattern", "reply_to", st.sampled_from(BAD_REPLY_TO), E.BAD_REPLY_TO),
    _m("lane.choice", "lane", _one_of("fast", "Realtime", ""), E.INVALID_CHOICE),
]
MUTATIONS: Final[dict[Kind, list[Mutation]]] = {
    "triage": _COMMON_MUTATIONS + [
        _m("note.empty", "note", _one_of("", " ", "\n\t  ", "\u3000 \u2003"), E.EMPTY_NOTE),
        _m("note.long", "note", st.integers(20_001, 21_000).map(lambda n: "x" * n), E.NOTE_TOO_LONG),
        _m("note.type", "note", _one_of(7, None, ["a"], {"a": "b"}), E.WRONG_TYPE),
        _m("note.missing", "note", _DELETE, E.MISSING_FIELD),
        _m("age.range", "age", _one_of(-1, 120.5, 1e9), E.OUT_OF_RANGE),
        _m("age.type", "age", _one_of("12", [12], True), E.WRONG_TYPE),
        _m("sex.choice", "sex", _one_of("Q", "female", "f", ""), E.INVALID_CHOICE),
        _m("arrival.choice", "arrival_mode", "car", E.INVALID_CHOICE),
        _m("vitals.hr", "vitals", _one_of(19, 301, 0, -5).map(lambda v: {"heart_rate": v}), E.VITAL_OUT_OF_RANGE),
        _m("vitals.spo2", "vitals", _one_of(49.9, 100.1).map(lambda v: {"spo2": v}), E.VITAL_OUT_OF_RANGE),
        _m("vitals.bp", "vitals", {"systolic_bp": 100, "diastolic_bp": 100}, E.VITAL_OUT_OF_RANGE),
        _m("vitals.unknown", "vitals", {"pulse": 80}, E.UNKNOWN_FIELD),
        _m("vitals.type", "vitals", _one_of([80], "80", 80), E.WRONG_TYPE),
        _m("vitals.int", "vitals", {"heart_rate": 80.5}, E.WRONG_TYPE),
        _m("explain.type", "explain", "yes", E.WRONG_TYPE),
    ],
    "fraud": _COMMON_MUTATIONS + [
        _m("currency", "transaction.currency", _one_of("XXX", "eur", "EURO", "", "E\u00dcR", "CLF"),
           E.UNKNOWN_CURRENCY),
        _m("country", "transaction.country", _one_of("XX", "de", "DEU", "UK", ""), E.UNKNOWN_COUNTRY),
        _m("mcc", "transaction.mcc", _one_of("541", "54a1", "\u0665\u0664\u0661\u0661", "5411 ", "5411\n", "05411",
                                             ""), E.MALFORMED_MCC),
        _m("mcc.type", "transaction.mcc", 5411, E.WRONG_TYPE),
        _m("channel", "transaction.channel", "mail", E.INVALID_CHOICE),
        _m("amount.range", "transaction.amount", _one_of(0, -5, 1e13, 0.0), E.OUT_OF_RANGE),
        _m("amount.type", "transaction.amount", _one_of("12.5", None, [1]), E.WRONG_TYPE),
        _m("timestamp.shape", "transaction.timestamp", _one_of(
            "2026-01-01", "yesterday", 1_700_000_000, "2026-01-01T00:00:00", "2026-02-30T00:00:00Z",
            "2026-01-01T25:00:00Z", "2026-01-01T00:00:00+2400", "2026-13-01T00:00:00Z"), E.BAD_TIMESTAMP),
        _m("timestamp.future", "transaction.timestamp", "@@FUTURE@@", E.TIMESTAMP_OUT_OF_RANGE),
        _m("timestamp.past", "transaction.timestamp", "@@ANCIENT@@", E.TIMESTAMP_OUT_OF_RANGE),
        _m("history.type", "history", _one_of({}, "[]", 3), E.WRONG_TYPE),
        _m("history.item", "history", _one_of(1, "e", None, []).map(lambda v: [v]), E.WRONG_TYPE),
        _m("history.later", "history", "@@LATER@@", E.HISTORY_OUT_OF_ORDER),
        _m("history.order", "history", "@@UNORDERED@@", E.HISTORY_OUT_OF_ORDER),
        _m("transaction.missing", "transaction", _DELETE, E.MISSING_FIELD),
        _m("transaction.unknown", "transaction.cvv", "123", E.UNKNOWN_FIELD),
        _m("merchant.empty", "transaction.merchant_id", "", E.OUT_OF_RANGE),
        _m("merchant.long", "transaction.merchant_id", "m" * 129, E.OUT_OF_RANGE),
    ],
}


def _timely(request: dict[str, Any], value: Any) -> Any:
    """Values that depend on now, filled in when drawn."""
    now = time.time()
    if value == "@@FUTURE@@":
        return rfc3339(now + 2 * 86_400)
    if value == "@@ANCIENT@@":
        return rfc3339(now - 3660 * 86_400)
    if value in ("@@LATER@@", "@@UNORDERED@@"):
        first = dict(request["transaction"])
        if value == "@@LATER@@":
            first["timestamp"] = rfc3339(now + 3600)
            return [*request["history"], first]
        first["timestamp"] = rfc3339(now - 7200)
        return [first, {**first, "timestamp": rfc3339(now - 9000)}]
    return value


def mutate(request: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    holder = request
    *parents, leaf = path.split(".")
    for parent in parents:
        holder = holder.setdefault(parent, {})
    if value == _DELETE:
        holder.pop(leaf, None)
    else:
        holder[leaf] = _timely(request, value)
    return request


@st.composite
def raw_request_mutation(draw: st.DrawFn) -> Draft:
    kind = draw(kinds)
    name, path, value, codes = draw(st.sampled_from(MUTATIONS[kind]))
    request = _request(draw, kind)
    if name not in ("deadline.range", "deadline.type"):
        request = expired(request)
    request = mutate(request, path, draw(value))
    verdict = Verdict(frozenset({"invalid"}), codes)
    return Draft(raw(_task(kind), PH, dumps(request, draw(styles))), draw(lanes), verdict)


@st.composite
def raw_request_wrong_kind(draw: st.DrawFn) -> Draft:
    """A triage request sent as a fraud task and the reverse."""
    kind = draw(kinds)
    request = expired(_request(draw, "fraud" if kind == "triage" else "triage"))
    return Draft(raw(_task(kind), PH, dumps(request, draw(styles))), draw(lanes),
                 Verdict.invalid(E.MISSING_FIELD, E.UNKNOWN_FIELD))


@st.composite
def raw_request_missing(draw: st.DrawFn) -> Draft:
    kind = draw(kinds)
    pairs = [(b"task", _task(kind)), (b"id", PH)]
    if draw(st.booleans()):
        pairs = with_extras(pairs, draw(extras))
    return Draft(pairs, draw(lanes), Verdict.invalid(E.MISSING_FIELD))


@st.composite
def raw_id(draw: st.DrawFn) -> Draft:
    """Task ids: missing, empty, too long, not UTF-8, raw surrogates, and odd but usable ones."""
    kind = draw(kinds)
    request = dumps(expired(_request(draw, kind)), draw(styles))
    form = draw(st.sampled_from(("missing", "empty", "long", "not_utf8", "odd", "boundary", "huge")))
    pairs = raw(_task(kind), b"", request)
    room = MAX_ID_CHARS - len(PLACEHOLDER)
    if form == "missing":
        del pairs[1]
        pairs.append((b"marker", PH))
    elif form == "empty":
        pairs.append((b"marker", PH))
    elif form == "long":
        filler = draw(st.sampled_from(("x", "\u00e9", "\U0001f600", "\u4e2d")))
        pairs[1] = (b"id", (PLACEHOLDER + filler * (room + draw(st.integers(1, 50)))).encode())
    elif form == "not_utf8":
        bad = draw(st.sampled_from(NOT_UTF8))
        pairs[1] = (b"id", bad + PH if draw(st.booleans()) else PH + bad)
    elif form == "odd":
        pairs[1] = (b"id", (PLACEHOLDER + draw(st.text(max_size=room))).encode())
    elif form == "boundary":
        filler = draw(st.sampled_from(("x", "\u00e9", "\U0001f600", " ", "\x00")))
        pairs[1] = (b"id", (PLACEHOLDER + filler * room).encode())
    else:
        pairs[1] = (b"id", PH + b"y" * draw(st.integers(10_000, 200_000)))
    return Draft(shuffled(pairs, draw(anywhere)), draw(lanes))


@st.composite
def raw_task(draw: st.DrawFn) -> Draft:
    """Task names inferq does not run (or none): answered invalid unknown_task."""
    kind = draw(kinds)
    request = dumps(expired(_request(draw, kind)), draw(styles))
    name = draw(st.one_of(st.sampled_from(NEAR_MISS_TASKS).map(str.encode), st.binary(max_size=40),
                          st.text(max_size=40).map(str.encode), st.just(b"\xed\xa0\x80inferq.fraud")))
    pairs = raw(name, PH, request)
    if name == b"" and draw(st.booleans()):
        del pairs[0]
    return Draft(shuffled(pairs, draw(anywhere)), draw(lanes))


@st.composite
def raw_extra_fields(draw: st.DrawFn) -> Draft:
    """Valid tasks with extra fields (any bytes as names and values): the extras are ignored."""
    kind = draw(kinds)
    computed = draw(st.integers(0, 4)) == 0
    request = _request(draw, kind)
    if not computed:
        request = expired(request)
    pairs = with_extras(raw(_task(kind), PH, dumps(request, draw(styles))), draw(extras))
    return Draft(pairs, draw(lanes), computed=computed)


@st.composite
def raw_fuzzed_valid(draw: st.DrawFn) -> Draft:
    """Contract-valid requests with fuzzed content (any text in ids and notes, odd amounts, time
    zones, every currency and country): computed, answered ok."""
    kind = draw(kinds)
    request = _request(draw, kind, fuzzy=True)
    return Draft(raw(_task(kind), PH, dumps(request, draw(styles))), draw(lanes), computed=True)


@st.composite
def raw_reply_to(draw: st.DrawFn) -> Draft:
    """reply_to as a field of the entry and in the request: valid, refused, or a key of another type."""
    kind = draw(kinds)
    request = expired(_request(draw, kind))
    good = st.sampled_from(REPLY_STREAMS)
    in_request = draw(st.one_of(st.none(), good, st.sampled_from(BAD_REPLY_TO), st.just(OCCUPIED)))
    if in_request is not None:
        request["reply_to"] = in_request
    text = dumps(request, draw(styles))
    if draw(st.integers(0, 3)) == 0:
        text = text[: len(text) // 2]  # unreadable: only the entry's own reply_to can name a stream
    pairs = raw(_task(kind), PH, text)
    own = draw(st.one_of(st.none(), good, st.sampled_from(BAD_REPLY_TO), st.just(OCCUPIED),
                         st.binary(max_size=30).map(lambda b: b.decode("latin-1"))))
    if own is not None:
        value = own.encode("utf-8") if draw(st.integers(0, 5)) else own.encode("utf-8") + b"\xff"
        pairs.insert(draw(st.integers(0, 3)), (b"reply_to", value))
    return Draft(pairs, draw(lanes))


@st.composite
def raw_forged(draw: st.DrawFn) -> Draft:
    """The worker's own fields (origin, prior_deliveries) and signature fields, forged by a producer."""
    kind = draw(kinds)
    form = draw(st.sampled_from(("prior_many", "prior_few", "origin_old", "origin_junk", "signature")))
    request = _request(draw, kind)
    if form == "origin_old":
        request["timeout_ms"] = 3_600_000  # an hour from an origin in 1970: expired
    else:
        request = expired(request)
    pairs = raw(_task(kind), PH, dumps(request, draw(styles)))
    if form == "prior_many":
        pairs.append((b"prior_deliveries", str(draw(st.integers(MAX_DELIVERIES, 10**6))).encode()))
        if draw(st.booleans()):  # a poisoned entry that also has no usable id
            pairs[1] = (b"id", draw(st.sampled_from((b"", b"\xff" + PH))))
            pairs.append((b"marker", PH))
    elif form == "prior_few":
        pairs.append((b"prior_deliveries", draw(st.sampled_from((b"0", b"1", b"2", b"-7", b"many", b"", b"\xff",
                                                                 b"two", b"-")))))
    elif form == "origin_old":
        pairs.append((b"origin", b"1-0"))
    elif form == "origin_junk":
        pairs.append((b"origin", draw(st.one_of(
            st.sampled_from((b"yesterday", b"1-", b"-1-0", b"\xff", b"1700000000000", b"0x10-0", b"")),
            st.integers(400, 6000).map(lambda n: b"9" * n + b"-0"),
            st.integers(21, 60).map(lambda n: b"1" * n + b"-" + b"2" * n)))))
    else:
        for name in draw(st.lists(st.sampled_from((b"sig", b"sig_kid", b"sig_ts")), min_size=1, unique=True)):
            pairs.append((name, draw(st.one_of(st.binary(max_size=70), st.sampled_from((b"k1", b"0" * 64))))))
    return Draft(shuffled(pairs, draw(anywhere)), draw(lanes))


@st.composite
def raw_random_fields(draw: st.DrawFn) -> Draft:
    """Entries of arbitrary fields; some of the wire format's names with arbitrary values."""
    pairs = with_extras([(b"marker", PH)], draw(extras))
    for name in draw(st.lists(st.sampled_from((b"task", b"id", b"request", b"reply_to")), unique=True)):
        value = draw(st.one_of(st.binary(max_size=60), st.sampled_from((b"inferq.fraud", b"inferq.triage", b"{}")),
                               st.text(max_size=30).map(str.encode)))
        if name == b"id":
            value = PH + value
        pairs.insert(draw(anywhere) % (len(pairs) + 1), (name, value))
    return Draft(pairs, draw(lanes))


# Celery envelopes -------------------------------------------------------------------------------------


def celery_headers(task: Any, task_id: Any) -> dict[str, Any]:
    return {"lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": "<omitted>", "kwargsrepr": "<omitted>", "origin": "gen1@fuzz",
            "ignore_result": False}


def celery_message(headers: Any, body: Any, *, b64: bool = False) -> dict[str, Any]:
    """The JSON message kombu builds for send_task (body: protocol 2 `[args, kwargs, embed]`)."""
    text = body if isinstance(body, str) else json.dumps(body)
    properties: dict[str, Any] = {"correlation_id": "c", "reply_to": "r", "delivery_mode": 2,
                                  "delivery_info": {"exchange": "", "routing_key": "batch"}, "priority": 0,
                                  "delivery_tag": "t"}
    if b64:
        text = base64.b64encode(text.encode("utf-8")).decode("ascii")
        properties["body_encoding"] = "base64"
    return {"body": text, "content-encoding": "utf-8", "content-type": "application/json", "headers": headers,
            "properties": properties}


def envelope_pairs(message: Any, plain: tuple[bytes, bytes] | None) -> list[tuple[bytes, bytes]]:
    """The entry the transport writes: `payload`, with the plain task and id fields where given."""
    payload = message if isinstance(message, bytes) else json.dumps(message).encode("utf-8")
    if plain is None:
        return [(b"payload", payload)]
    return [(b"task", plain[0]), (b"payload", payload), (b"id", plain[1])]


def _marked(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`pairs`, with a marker field holding the token where no other field does."""
    return pairs if PH in b"".join(v for _, v in pairs) else [*pairs, (b"marker", PH)]


@st.composite
def envelope_valid(draw: st.DrawFn) -> Draft:
    """Celery envelopes as a stock producer sends them, in every documented variant."""
    kind = draw(kinds)
    computed = kind == "fraud" and draw(st.integers(0, 3)) == 0
    request = _request(draw, kind)
    if not computed:
        request = expired(request)
    body: Any = [[request], {}, {}] if draw(st.booleans()) else [[], {"request": request}, {"callbacks": None}]
    headers = celery_headers(TASK_NAMES[kind], PLACEHOLDER)
    for name in draw(st.lists(st.sampled_from(("eta", "countdown", "expires", "retries", "timelimit", "x-extra")),
                              unique=True)):
        headers[name] = draw(json_scalars)
    message = celery_message(headers, body, b64=draw(st.booleans()))
    plain = (_task(kind), PH) if draw(st.booleans()) else None
    pairs = envelope_pairs(message, plain)
    own = draw(st.one_of(st.none(), st.sampled_from(REPLY_STREAMS), st.sampled_from(BAD_REPLY_TO)))
    if own is not None:  # either form may carry a reply_to field of its own
        pairs.append((b"reply_to", own.encode()))
    return Draft(pairs, draw(lanes), computed=computed)


@st.composite
def envelope_headers(draw: st.DrawFn) -> Draft:
    """Forged headers: unknown or missing task names, ids that are missing, empty, not text or too long,
    headers that are not an object; with or without the plain task and id fields beside them."""
    kind = draw(kinds)
    request = expired(_request(draw, kind))
    task: Any = TASK_NAMES[kind]
    task_id: Any = PLACEHOLDER
    form = draw(st.sampled_from(("task_unknown", "task_type", "id_missing", "id_type", "id_long", "headers_type",
                                 "headers_missing", "plain_conflict", "poisoned")))
    if form == "task_unknown":
        task = draw(st.one_of(st.sampled_from(NEAR_MISS_TASKS[:-3]), st.text(max_size=30)))
    elif form == "task_type":
        task = draw(_one_of(None, 1, ["inferq.fraud"], {"n": 1}))
    elif form == "id_missing":
        task_id = None
    elif form == "id_type":
        task_id = draw(_one_of(7, None, [PLACEHOLDER], {"id": PLACEHOLDER}, True, ""))
    elif form == "id_long":
        task_id = PLACEHOLDER + "z" * draw(st.integers(MAX_ID_CHARS - len(PLACEHOLDER) + 1, 5000))
    headers: Any = celery_headers(task, task_id)
    if form == "headers_type":
        headers = draw(_one_of([], "headers", 5, None))
    message = celery_message(headers, [[], {"request": request}, {}])
    if form == "headers_missing":
        del message["headers"]
    plain: tuple[bytes, bytes] | None = None
    if form == "plain_conflict":
        plain = (_task(kind), b"plain-" + PH[:20])  # the headers' id wins
    elif draw(st.booleans()):
        plain = (_task(kind), PH)
    pairs = envelope_pairs(message, plain)
    if plain is not None and draw(st.booleans()):
        dropped = draw(st.sampled_from((b"task", b"id")))
        pairs = [pair for pair in pairs if pair[0] != dropped]
    if form == "poisoned":  # a forged delivery count: the task is named by its headers
        pairs.append((b"prior_deliveries", str(draw(st.integers(MAX_DELIVERIES, 99))).encode()))
    return Draft(_marked(pairs), draw(lanes))


@st.composite
def envelope_body(draw: st.DrawFn) -> Draft:
    """Forged content types and bodies: not text, not JSON, not Celery's protocol 2, bad base64."""
    kind = draw(kinds)
    request = expired(_request(draw, kind))
    good = json.dumps([[], {"request": request}, {}])
    encoded = base64.b64encode(good.encode()).decode()
    form = draw(st.sampled_from(("content_type", "body_type", "body_json", "body_shape", "request_type",
                                 "no_request", "b64_alphabet", "b64_non_ascii", "b64_not_utf8", "b64_padding",
                                 "body_surrogate", "body_deep")))
    message = celery_message(celery_headers(TASK_NAMES[kind], PLACEHOLDER), good)
    if form == "content_type":
        message["content-type"] = draw(_one_of("application/x-python-serialize", "application/json; charset=utf-8",
                                               "APPLICATION/JSON", "text/plain", None, 5, ""))
    elif form == "body_type":
        message["body"] = draw(st.sampled_from(({"args": []}, [[], {"request": request}, {}], 5, None)))
    elif form == "body_json":
        message["body"] = draw(_one_of("[[], {", "", "not json", "[[],{},{}] x", "[NaN]", "\ufeff[[],{},{}]"))
    elif form == "body_shape":
        message["body"] = json.dumps(draw(st.sampled_from((
            [[], {}], [{}, {}, {}], {"args": [], "kwargs": {}}, [[], [], []], [[], {"request": request}], "x", 3))))
    elif form == "request_type":
        message["body"] = json.dumps([[], {"request": draw(_one_of([1], "req", None, 3))}, {}])
    elif form == "no_request":
        message["body"] = json.dumps(draw(st.sampled_from((
            [[], {}, {}], [[request, request], {}, {}], [[request], {"x": 1}, {}], [[], {"req": request}, {}]))))
    elif form.startswith("b64"):
        message["properties"]["body_encoding"] = "base64"
        if form == "b64_alphabet":
            message["body"] = "!!!!" + encoded
        elif form == "b64_non_ascii":
            message["body"] = draw(_one_of("\u00e9t\u00e9", encoded + "\u00a0", "\U0001f600" + encoded))
        elif form == "b64_not_utf8":
            message["body"] = base64.b64encode(b'[[],{"request":{"tenant":"\xff"}},{}]').decode()
        else:
            message["body"] = encoded[:-1]
    elif form == "body_surrogate":
        message["body"] = good.replace('"tenant"', '"tenant\\udc80"', 1)
    else:
        message["body"] = "[" * 1100 + "]" * 1100
    plain = (_task(kind), PH) if draw(st.booleans()) else None
    return Draft(envelope_pairs(message, plain), draw(lanes))


@st.composite
def envelope_payload(draw: st.DrawFn) -> Draft:
    """Payloads that are no Celery message: any bytes, non-UTF-8, escaped surrogates, deep, not an object."""
    kind = draw(kinds)
    message = json.dumps(celery_message(celery_headers(TASK_NAMES[kind], PLACEHOLDER),
                                        [[], {"request": expired(_request(draw, kind))}, {}])).encode()
    form = draw(st.sampled_from(("bytes", "text", "not_utf8", "surrogate", "deep", "value", "truncated")))
    if form == "bytes":
        payload = draw(st.binary(max_size=300))
    elif form == "text":
        payload = draw(st.text(max_size=200)).encode()
    elif form == "not_utf8":
        payload = _splice(message, _inside_string(message, draw(anywhere)), draw(st.sampled_from(NOT_UTF8)))
    elif form == "surrogate":
        payload = _splice(message, _inside_string(message, draw(anywhere)), b"\\udbff")
    elif form == "deep":
        payload = message[:-1] + b', "x": ' + nested(draw(_one_of(1023, 1024, 3000)), "list") + b"}"
    elif form == "value":
        payload = dumps(draw(json_values), draw(styles))
    else:
        payload = message[: draw(anywhere) % len(message)]
    plain = (_task(kind), PH) if draw(st.booleans()) else None
    return Draft(_marked(envelope_pairs(payload, plain)), draw(lanes))


@st.composite
def envelope_random(draw: st.DrawFn) -> Draft:
    """Messages of Celery's keys with arbitrary values."""
    kind = draw(kinds)
    message: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(("body", "content-type", "content-encoding", "headers",
                                              "properties")), unique=True)):
        message[key] = draw(json_values)
    if draw(st.booleans()):
        message["headers"] = {"task": draw(_one_of(TASK_NAMES[kind], "x")), "id": PLACEHOLDER}
    if draw(st.booleans()):
        message["content-type"] = "application/json"
    plain = (_task(kind), PH) if draw(st.booleans()) else None
    return Draft(_marked(envelope_pairs(message, plain)), draw(lanes))


@st.composite
def duplicate_fields(draw: st.DrawFn) -> Draft:
    """A field name twice in one entry (Redis keeps both pairs); off by default (a known bug)."""
    kind = draw(kinds)
    pairs = [(b"marker", PH), (b"request", b"{}"), (b"marker", b"second")]
    if draw(st.booleans()):
        pairs.insert(0, (b"task", _task(kind)))
    return Draft(pairs, draw(lanes))


# Class name -> (strategy, share of the fuzz entries).
CLASSES: Final[dict[str, tuple[st.SearchStrategy[Draft], float]]] = {
    "raw.request.bytes": (raw_request_bytes(), 6),
    "raw.request.not_utf8": (raw_request_not_utf8(), 5),
    "raw.request.surrogate_escape": (raw_request_surrogate_escape(), 4),
    "raw.request.paired_escape": (raw_request_paired_escape(), 1),
    "raw.request.json_value": (raw_request_json_value(), 8),
    "raw.request.numbers": (raw_request_numbers(), 4),
    "raw.request.deep": (raw_request_deep(), 2),
    "raw.request.mutation": (raw_request_mutation(), 12),
    "raw.request.wrong_kind": (raw_request_wrong_kind(), 1),
    "raw.request.missing": (raw_request_missing(), 1),
    "raw.id": (raw_id(), 6),
    "raw.task": (raw_task(), 5),
    "raw.extra_fields": (raw_extra_fields(), 6),
    "raw.fuzzed_valid": (raw_fuzzed_valid(), 3),
    "raw.reply_to": (raw_reply_to(), 5),
    "raw.forged": (raw_forged(), 5),
    "raw.random_fields": (raw_random_fields(), 4),
    "envelope.valid": (envelope_valid(), 5),
    "envelope.headers": (envelope_headers(), 6),
    "envelope.body": (envelope_body(), 6),
    "envelope.payload": (envelope_payload(), 5),
    "envelope.random": (envelope_random(), 3),
}
OPTIONAL_CLASSES: Final[dict[str, tuple[st.SearchStrategy[Draft], float]]] = {
    "raw.duplicate_fields": (duplicate_fields(), 1)}


# ---------------------------------------------------------------------------------------------------
# Huge entries (from the seeded random, not hypothesis: MiB are not drawn byte by byte)
# ---------------------------------------------------------------------------------------------------


HUGE_FORMS: Final = ("request_over", "boundary_exact", "boundary_over", "extra_field", "id", "envelope_over",
                     "history", "many_keys", "many_fields", "note_max")


def _huge_drafts(rng: random.Random, token: str, index: int) -> tuple[str, Draft]:
    """One MiB-sized entry (or one of thousands of parts); the forms in turn."""
    lane: Lane = rng.choice(LANES)
    tok = token.encode()
    form = HUGE_FORMS[index % len(HUGE_FORMS)]
    draft: Draft
    if form == "request_over":  # a request over 4 MiB: invalid, out_of_range, unread
        text = json.dumps({"tenant": "t", "note": "x" * (MAX_ENTRY_BYTES + rng.randint(1, 500_000))}).encode()
        draft = Draft(raw(b"inferq.triage", tok, text), lane)
    elif form in ("boundary_exact", "boundary_over"):  # 4 MiB is read (its note is too long), a byte more is not
        pairs = raw(b"inferq.triage", tok, b"")
        head = b'{"tenant":"t","note":"'
        fixed = sum(len(n) + len(v) for n, v in pairs) + len(head) + 2
        note = b"y" * (MAX_ENTRY_BYTES - fixed + (form == "boundary_over"))
        pairs[2] = (b"request", head + note + b'"}')
        draft = Draft(pairs, lane)
    elif form == "extra_field":  # a field of MiB beside a small valid task
        event = {"amount": 9.5, "currency": "EUR", "mcc": "5411", "channel": "atm", "country": "DE",
                 "timestamp": rfc3339(time.time() - 60)}
        text = json.dumps({"tenant": "t", "deadline": PAST_DEADLINE, "transaction": event}).encode()
        draft = Draft([*raw(b"inferq.fraud", tok, text), (b"blob", rng.randbytes(rng.randint(500_000, 3_000_000)))],
                      lane)
    elif form == "id":  # an id of MiB
        draft = Draft(raw(b"inferq.fraud", tok + b"i" * rng.randint(100_000, 1_000_000), b"{}"), lane)
    elif form == "envelope_over":  # an envelope over 4 MiB, with or without plain fields
        big = {"tenant": "t", "note": "n" * MAX_ENTRY_BYTES}
        message = celery_message(celery_headers(TASK_TRIAGE, token), [[], {"request": big}, {}])
        plain = (b"inferq.triage", tok) if rng.random() < 0.5 else None
        draft = Draft(_marked(envelope_pairs(message, plain)), lane)
    elif form == "history":  # a history of 4,097 events
        now = time.time()
        event = {"amount": 1.0, "currency": "EUR", "mcc": "5411", "channel": "atm", "country": "DE"}
        history = [{**event, "timestamp": rfc3339(now - 86_400 + i)} for i in range(4097)]
        text = json.dumps({"tenant": "t", "transaction": {**event, "timestamp": rfc3339(now - 60)},
                           "history": history, "deadline": PAST_DEADLINE}).encode()
        draft = Draft(raw(b"inferq.fraud", tok, text), lane, Verdict.invalid(E.HISTORY_TOO_LONG))
    elif form == "many_keys":  # a request of many unknown keys
        keys = {f"k{i}": i for i in range(rng.randint(20_000, 100_000))}
        text = json.dumps({"tenant": "t", "note": "n", **keys}).encode()
        draft = Draft(raw(b"inferq.triage", tok, text), lane, Verdict.invalid(E.UNKNOWN_FIELD))
    elif form == "many_fields":  # thousands of extra fields beside a valid task
        text = json.dumps({"tenant": "t", "note": "n", "deadline": PAST_DEADLINE}).encode()
        extra = [(b"x%d" % i, rng.randbytes(rng.randint(0, 40))) for i in range(rng.randint(2000, 20_000))]
        draft = Draft([*raw(b"inferq.triage", tok, text), *extra], lane)
    else:  # the longest valid note, with a past deadline: read in full, expired
        text = json.dumps({"tenant": "t", "note": "word " * 3999, "deadline": PAST_DEADLINE}).encode()
        draft = Draft(raw(b"inferq.triage", tok, text), lane)
    return f"huge.{form}", draft


# ---------------------------------------------------------------------------------------------------
# Valid tasks from the training generators
# ---------------------------------------------------------------------------------------------------


def valid_requests(n_fraud: int, n_triage: int, seed: int) -> list[tuple[Kind, dict[str, Any]]]:
    """Real fraud requests (short histories) and triage notes, as producers send them."""
    from training import samples
    from training.fraud_sim import FraudSimulator, SimConfig
    from training.triage_data import generate

    simulator = FraudSimulator(SimConfig(seed=seed, lengths=((2, 24, 1.0),)))
    out: list[tuple[Kind, dict[str, Any]]] = []
    for index in itertools.count():
        if len(out) >= n_fraud:
            break
        try:
            example = simulator.example(index)
        except ValueError:  # the simulator fails on a few very short histories (e.g. seed 5, index 6)
            continue
        out.append(("fraud", samples.fraud_request(example.input, "fuzz-valid", age_s=30.0)))
    notes = sorted(generate(max(4 * n_triage, 1), seed), key=lambda ex: len(ex.note))[: n_triage]
    out += [("triage", samples.triage_request(ex, "fuzz-valid")) for ex in notes]
    return out


# ---------------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------------


def _token(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def finish(cls: str, token: str, draft: Draft) -> FuzzEntry:
    """The entry with its token in place of PLACEHOLDER, and its oracle."""
    pairs = tuple((name, value.replace(PH, token.encode())) for name, value in draft.pairs)
    expect = expect_entry(pairs, draft.verdict, draft.lane)
    read = _read_entry(pairs)
    kind = KIND_OF_TASK.get(read.task or "") or expect.kind
    reference = None
    if kind is not None and read.readable and isinstance(read.request, dict) and "ok" in expect.statuses:
        reference = (kind, read.request)
    entry = FuzzEntry(cls, draft.lane, pairs, token, read.task_id if expect.stream else None, expect, kind, reference)
    if token.encode() not in b"".join(n + v for n, v in pairs):
        raise AssertionError(f"{cls}: the token is not in the entry's bytes")
    if entry.task_id is not None and token not in entry.task_id:
        raise AssertionError(f"{cls}: an answered entry whose task id does not hold its token")
    return entry


def _read_entry(pairs: Pairs) -> _Read:
    fields = dict(pairs)
    if sum(len(n) + len(v) for n, v in pairs) > MAX_ENTRY_BYTES:
        return _read_raw({k: v for k, v in fields.items() if k in (b"task", b"id")})
    return _read_envelope(fields) if b"payload" in fields else _read_raw(fields)


def class_counts(n: int, classes: Mapping[str, tuple[Any, float]]) -> dict[str, int]:
    """`n` split among the classes in their shares (largest remainders)."""
    total = sum(share for _, share in classes.values())
    exact = {name: n * share / total for name, (_, share) in classes.items()}
    counts = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


def draw_class(cls: str, strategy: st.SearchStrategy[Draft], tokens: Sequence[str], seed: int) -> list[FuzzEntry]:
    """One entry per token, drawn by hypothesis from the class's strategy (one seeded run per class)."""
    out: list[FuzzEntry] = []
    round_seed = seed
    while len(out) < len(tokens):
        before = len(out)

        @hypothesis_seed(round_seed)
        @settings(max_examples=len(tokens) - len(out), database=None, phases=[Phase.generate], deadline=None,
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(strategy)
        def collect(draft: Draft) -> None:
            if len(out) < len(tokens):
                out.append(finish(cls, tokens[len(out)], draft))

        collect()
        round_seed += 1_000_003
        if len(out) == before:
            raise RuntimeError(f"hypothesis produced no {cls} entries")
    return out


def draw_corpus(n: int, seed: int, *, duplicates: bool = False,
                classes: Mapping[str, tuple[st.SearchStrategy[Draft], float]] | None = None) -> list[FuzzEntry]:
    """`n` fuzz entries in the classes' shares, the same for the same seed; hypothesis draws each
    entry's content, the seeded random its token and the order."""
    rng = random.Random(seed)
    table = dict(classes if classes is not None else CLASSES)
    if duplicates:
        table.update(OPTIONAL_CLASSES)
    out: list[FuzzEntry] = []
    for index, (cls, count) in enumerate(sorted(class_counts(n, table).items())):
        tokens = [_token(rng) for _ in range(count)]
        if count:
            out += draw_class(cls, table[cls][0], tokens, seed * 1009 + index)
    rng.shuffle(out)
    return out


def build_corpus(n_fuzz: int, seed: int, *, n_huge: int, n_fraud: int, n_triage: int,
                 duplicates: bool = False) -> list[FuzzEntry]:
    """Fuzz entries, huge entries and valid tasks, interleaved in a seeded order."""
    rng = random.Random(seed ^ 0x5EED)
    entries = draw_corpus(n_fuzz, seed, duplicates=duplicates)
    for index in range(n_huge):
        token = _token(rng)
        cls, draft = _huge_drafts(rng, token, index)
        entries.append(finish(cls, token, draft))
    for kind, request in valid_requests(n_fraud, n_triage, seed):
        token = _token(rng)
        lane: Lane = rng.choice(LANES)
        pairs = tuple(raw(_task(kind), token.encode(), json.dumps(request).encode()))
        entries.append(FuzzEntry(f"valid.{kind}", lane, pairs, token, token, Expect(results_stream(kind), OK.statuses),
                                 kind, (kind, request)))
    rng.shuffle(entries)
    return entries


# ---------------------------------------------------------------------------------------------------
# The harness: push, wait, collect, check
# ---------------------------------------------------------------------------------------------------


def push(client: redis.Redis, entries: Sequence[FuzzEntry], chunk: int = 200) -> dict[tuple[str, str], FuzzEntry]:
    """XADD every entry as is (field order and duplicates kept); (lane, entry id) -> entry."""
    placed: dict[tuple[str, str], FuzzEntry] = {}
    for start in range(0, len(entries), chunk):
        part = entries[start:start + chunk]
        pipe = client.pipeline(transaction=False)
        for entry in part:
            pipe.execute_command("XADD", queue_stream(entry.lane), "*",  # type: ignore[no-untyped-call]
                                 *(piece for pair in entry.fields for piece in pair))
        for entry, entry_id in zip(part, pipe.execute(), strict=True):
            placed[(entry.lane, entry_id.decode())] = entry
    return placed


def prepare_keys(client: redis.Redis) -> None:
    """The key of another type that the fuzzer names as a reply_to."""
    client.set(OCCUPIED, "a string, not a stream")


def lanes_drained(client: redis.Redis) -> bool:
    pipe = client.pipeline(transaction=False)
    for lane in LANES:
        pipe.xlen(queue_stream(lane))
    for lane in LANES:
        pipe.xpending(queue_stream(lane), "inferq-workers")
    replies = pipe.execute(raise_on_error=False)
    lengths, pending = replies[: len(LANES)], replies[len(LANES):]
    return all(int(n) == 0 for n in lengths) and all(
        isinstance(p, dict) and int(p["pending"]) == 0 for p in pending)


def lane_state(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """(length, pending) of each lane."""
    out: dict[str, tuple[int, int]] = {}
    for lane in LANES:
        try:
            pending = int(client.xpending(queue_stream(lane), "inferq-workers")["pending"])
        except redis.ResponseError:
            pending = -1
        out[lane] = (int(client.xlen(queue_stream(lane))), pending)
    return out


def _read_stream(client: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    start = b"-"
    while True:
        batch: list[tuple[bytes, dict[bytes, bytes]]] = list(client.xrange(key, start, "+", count=5000))  # type: ignore
        if start != b"-":
            batch = batch[1:]
        if not batch:
            return out
        out += batch
        start = batch[-1][0]


@dataclass
class Observed:
    results: list[tuple[str, dict[bytes, bytes]]]  # (stream, fields)
    deadletters: list[dict[bytes, bytes]]


def result_streams(client: redis.Redis) -> list[str]:
    keys = {k.decode("utf-8", "backslashreplace") if isinstance(k, bytes) else k
            for k in client.scan_iter(match=RESULTS_PREFIX + "*", count=1000)}
    return sorted(k for k in keys if client.type(k) in (b"stream", "stream"))


def observe(client: redis.Redis) -> Observed:
    results = []
    for key in result_streams(client):
        results += [(key, fields) for _, fields in _read_stream(client, key)]
    return Observed(results, [fields for _, fields in _read_stream(client, DEADLETTER_STREAM)])


def counted(client: redis.Redis) -> int:
    """Results and dead letters so far (cheap: XLEN of each)."""
    pipe = client.pipeline(transaction=False)
    keys = [*result_streams(client), DEADLETTER_STREAM]
    for key in keys:
        pipe.xlen(key)
    return sum(int(n) for n in pipe.execute())


def expected_outputs(entries: Iterable[FuzzEntry]) -> int:
    return sum((e.expect.stream is not None) + bool(e.expect.deadletter) for e in entries)


_TOKEN: Final = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def raw_pairs(raw_text: bytes) -> list[tuple[bytes, bytes]]:
    """The dead letter's `raw`: [[name, value], ...], text or {"base64": ...}, back to bytes."""
    def part(item: Any) -> bytes:
        if isinstance(item, dict):
            return base64.b64decode(item["base64"])
        return str(item).encode("utf-8")

    return [(part(name), part(value)) for name, value in json.loads(raw_text)]


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    by_class: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    by_class_outcome: Counter[tuple[str, str]] = field(default_factory=Counter)
    references_checked: int = 0
    max_gap: dict[str, float] = field(default_factory=dict)  # kind -> largest difference from alone

    def fail(self, entry: FuzzEntry | None, what: str) -> None:
        where = f"{entry.cls} token={entry.token} expect=[{entry.expect.label()}]" if entry else "?"
        self.failures.append(f"{where}: {what}")


def check(entries: Sequence[FuzzEntry], placed: Mapping[tuple[str, str], FuzzEntry], seen: Observed,
          references: Mapping[str, Any] | None = None,
          compare: Callable[[FuzzEntry, dict[str, Any], Any], tuple[float, str | None]] | None = None) -> Report:
    """Every oracle against what the workers wrote. Failure messages name classes, tokens and codes,
    never an entry's contents."""
    report = Report()
    by_token = {e.token: e for e in entries}
    by_id = {e.task_id: e for e in entries if e.task_id is not None}
    answers: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for stream, fields in seen.results:
        task_id = fields.get(b"task_id", b"").decode("utf-8", "replace")
        entry = by_id.get(task_id)
        if entry is None:
            report.fail(None, f"a result on {stream!r} for an unknown task id ({len(task_id)} chars)")
            continue
        try:
            parsed = TaskResultMessage.model_validate_json(fields[b"message"])
        except Exception as exc:  # noqa: BLE001 - any contract break is a failure to report
            report.fail(entry, f"result message breaks the result contract: {type(exc).__name__}")
            continue
        answers.setdefault(entry.token, []).append((stream, parsed.model_dump(mode="json")))
        if fields.get(b"status", b"").decode() != parsed.status.value:
            report.fail(entry, "the result entry's status field differs from its message")
    letters: dict[str, list[dict[bytes, bytes]]] = {}
    for fields in seen.deadletters:
        try:
            pairs = raw_pairs(fields[b"raw"])
        except Exception as exc:  # noqa: BLE001
            report.fail(None, f"a dead letter whose raw is unreadable: {type(exc).__name__}")
            continue
        found = {m.decode() for m in _TOKEN.findall(b"".join(n + v for n, v in pairs))} & by_token.keys()
        lane, entry_id = fields.get(b"lane", b"").decode(), fields.get(b"entry_id", b"").decode()
        if not found and (lane, entry_id) in placed:
            found = {placed[(lane, entry_id)].token}  # its token was lost from the raw: matched by entry id
        if len(found) != 1:
            report.fail(None, f"a dead letter matching {len(found)} entries (entry {entry_id})")
            continue
        entry = by_token[found.pop()]
        letters.setdefault(entry.token, []).append(fields)
        copy = _requeued_copy(entry, pairs)
        if tuple(pairs) != entry.fields and copy is None:
            report.fail(entry, "dead letter raw differs from the entry's bytes")
        if placed.get((lane, entry_id)) is not entry and placed.get((lane, copy or "")) is not entry:
            report.fail(entry, "dead letter lane/entry_id do not name the entry")
        if not fields.get(b"error_message"):
            report.fail(entry, "dead letter without an error message")
    for entry in entries:
        got = answers.get(entry.token, [])
        dead = letters.get(entry.token, [])
        outcome = _outcome(got, dead)
        report.by_class[entry.cls] += 1
        report.by_outcome[outcome] += 1
        report.by_class_outcome[(entry.cls, outcome)] += 1
        expect = entry.expect
        if expect.stream is None and got:
            report.fail(entry, f"answered ({outcome}) but must not be")
        if expect.stream is not None:
            if len(got) != 1:
                report.fail(entry, f"{len(got)} results, expected one ({outcome})")
            for stream, message in got:
                code = (message.get("error") or {}).get("code")
                if message["kind"] != entry.kind:
                    report.fail(entry, f"answered as a {message['kind']} task")
                if message["status"] == "ok" and not message.get("model"):
                    report.fail(entry, "an ok result without its model")
                if stream != expect.stream:
                    report.fail(entry, f"answered on {stream!r}, expected {expect.stream!r}")
                if message["status"] not in expect.statuses or (message["status"] != "ok"
                                                                and code not in expect.codes):
                    report.fail(entry, f"answered {message['status']}/{code}")
                if message["status"] == "ok" and references is not None and compare is not None:
                    ref = references.get(entry.token)
                    if ref is not None:
                        report.references_checked += 1
                        gap, problem = compare(entry, message, ref)
                        report.max_gap[message["kind"]] = max(report.max_gap.get(message["kind"], 0.0), gap)
                        if problem:
                            report.fail(entry, problem)
        if not expect.deadletter and dead:
            report.fail(entry, f"dead-lettered ({outcome}) but must not be")
        if expect.deadletter:
            if len(dead) != 1:
                report.fail(entry, f"{len(dead)} dead letters, expected one ({outcome})")
            for letter in dead:
                code = letter.get(b"error_code", b"").decode()
                if code not in expect.deadletter:
                    report.fail(entry, f"dead-lettered with {code}")
    return report


def _requeued_copy(entry: FuzzEntry, pairs: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The original's entry id where `pairs` are a copy a stopping worker put back (the entry's fields,
    then `origin` and `prior_deliveries`, docs/wire-format.md); None otherwise."""
    own = {name for name, _ in entry.fields}
    if b"origin" in own or b"prior_deliveries" in own or len(pairs) != len(entry.fields) + 2:
        return None
    if tuple(pairs[:-2]) != entry.fields or [name for name, _ in pairs[-2:]] != [b"origin", b"prior_deliveries"]:
        return None
    return pairs[-2][1].decode("ascii", "replace")


def _outcome(got: list[tuple[str, dict[str, Any]]], dead: list[dict[bytes, bytes]]) -> str:
    parts = []
    for _, message in got:
        code = (message.get("error") or {}).get("code")
        parts.append(message["status"] + (f"/{code}" if code else ""))
    for letter in dead:
        parts.append("deadletter/" + letter.get(b"error_code", b"").decode())
    return " + ".join(parts) or "nothing"


# ---------------------------------------------------------------------------------------------------
# Reference results: each valid task computed alone in this process
# ---------------------------------------------------------------------------------------------------

# Batched against alone: padding to a batch's length changes the float sums a little. The triage model
# runs in bf16 on CPUs (its card's default policy): a fuzzed note differed by 0.022 from itself alone.
TOLERANCE: Final[dict[str, float]] = {"fraud": 0.02, "triage": 0.05}


def compute_references(entries: Sequence[FuzzEntry], adapters: Mapping[Kind, Any]) -> dict[str, Any]:
    """token -> the result (FraudResult / TriageResult) of the task computed alone, or the error."""
    out: dict[str, Any] = {}
    for entry in entries:
        if entry.reference is None:
            continue
        kind, request = entry.reference
        adapter = adapters[kind]
        try:
            out[entry.token] = adapter.compute([adapter.prepare(parse_request(kind, request))])[0]
        except Exception as exc:  # noqa: BLE001 - a reference that fails is compared as a failure
            out[entry.token] = exc
    return out


def compare_result(entry: FuzzEntry, message: dict[str, Any], ref: Any) -> tuple[float, str | None]:
    """How far the worker's result is from the task computed alone, and the problem if too far."""
    if isinstance(ref, Exception):
        return 0.0, f"the reference computation raised {type(ref).__name__}, the worker answered ok"
    got = message["result"]
    want = ref.model_dump(mode="json")
    tolerance = TOLERANCE[message["kind"]]
    if message["kind"] == "fraud":
        gap = abs(got["score"] - want["score"])
        if gap > tolerance:
            return gap, f"fraud score {got['score']:.4f}, alone {want['score']:.4f}"
        if got["decision"] != want["decision"] and gap < 1e-9:
            return gap, f"fraud decision {got['decision']}, alone {want['decision']}"
        return gap, None
    gap = max(abs(a - b) for a, b in zip(got["probabilities"], want["probabilities"], strict=True))
    if gap > tolerance:
        return gap, f"triage probabilities differ by {gap:.4f} from the note computed alone"
    ranked = sorted(want["probabilities"], reverse=True)
    if got["acuity"] != want["acuity"] and ranked[0] - ranked[1] > 2 * tolerance:
        return gap, f"triage acuity {got['acuity']}, alone {want['acuity']}"
    if (got["chunks"], got["truncated"]) != (want["chunks"], want["truncated"]):
        return gap, "triage chunks/truncated differ from the note computed alone"
    return gap, None


def summary(entries: Sequence[FuzzEntry], report: Report) -> str:
    """Counts per class and per outcome, for a log or docs/reliability.md (no entry contents)."""
    lines = [f"entries: {len(entries)} ({sum(e.size for e in entries) / 1e6:.1f} MB)",
             f"valid tasks compared with the same task computed alone: {report.references_checked} (largest "
             "difference: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(report.max_gap.items())) + ")",
             "per class (entries: outcomes):"]
    for cls in sorted(report.by_class):
        outcomes = sorted(((n, o) for (c, o), n in report.by_class_outcome.items() if c == cls), reverse=True)
        shown = ", ".join(f"{o} {n}" for n, o in outcomes[:6]) + (", ..." if len(outcomes) > 6 else "")
        lines.append(f"  {cls:32s} {report.by_class[cls]:7d}: {shown}")
    lines.append("per outcome:")
    for outcome, n in report.by_outcome.most_common():
        lines.append(f"  {n:7d}  {outcome}")
    lines.append(f"failures: {len(report.failures)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# One run against real worker processes (the CI test and the full run share it)
# ---------------------------------------------------------------------------------------------------

WORKER_ENV: Final = {
    "INFERQ_DEVICE": "cpu",
    "INFERQ_LOG_LEVEL": "WARNING",
    "INFERQ_MAX_DELIVERIES": str(MAX_DELIVERIES),
    "INFERQ_CLAIM_IDLE_MS": "10000",
    "INFERQ_DRAIN_TIMEOUT_S": "10",
}
STALL_S: Final = 60.0  # no new result or dead letter for this long while entries remain: stalled


@dataclass
class Run:
    """What one run did: its entries, where they went, the check, timings and the workers' fate."""

    seed: int
    entries: list[FuzzEntry]
    report: Report
    timings: dict[str, float]
    restarts: int
    alive_ready: list[tuple[str, bool, bool, bool]]  # name, process running, /livez, /readyz
    lanes: dict[str, tuple[int, int]]  # lane -> (length, pending) at the end
    drained: bool
    exits: list[str] = field(default_factory=list)  # workers that exited, with their codes

    @property
    def ok(self) -> bool:
        return (not self.report.failures and self.restarts == 0 and self.drained
                and all(running and live and ready for _, running, live, ready in self.alive_ready))

    def describe(self) -> str:
        lines = [f"seed {self.seed}; workers restarted: {self.restarts}; lanes drained: {self.drained} {self.lanes}",
                 "workers (name, running, live, ready): " + ", ".join(map(str, self.alive_ready)),
                 "timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()),
                 summary(self.entries, self.report)]
        lines += [f"exited: {exit_}" for exit_ in self.exits]
        lines += ["FAIL " + failure for failure in self.report.failures[:60]]
        return "\n".join(lines)


def _probe(port: int, path: str) -> bool:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def run_fuzz(redis_url: str, log_dir: Any, *, n_fuzz: int, seed: int, n_huge: int, n_fraud: int, n_triage: int,
             n_workers: int = 2, wait_s: float = 600.0, duplicates: bool = False,
             say: Callable[[str], None] = print) -> Run:
    """Start `n_workers` workers (both kinds, both lanes), build the corpus and the references while
    they load, push everything, wait for the lanes to drain, and check every oracle. A worker that
    exits is restarted (and counted), so that one crash does not hide the rest."""
    import threading

    import torch

    from worker.adapters import load_adapters
    from worker.config import Settings
    from worker.processes import WorkerProcess, spawn_worker

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    timings: dict[str, float] = {}
    workers: list[WorkerProcess] = [spawn_worker(redis_url, f"fuzz-{i}", log_dir, dict(WORKER_ENV))
                                    for i in range(n_workers)]
    exits: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def supervise() -> None:
        while not stop.wait(0.5):
            with lock:
                for index, worker in enumerate(workers):
                    code = worker.proc.poll()
                    if code is not None and not worker.terminated:
                        exits.append(f"{worker.name} exited {code}; log tail: {_crash_lines(worker.log_tail(6000))}")
                        workers[index] = spawn_worker(redis_url, f"{worker.name}-r{len(exits)}", log_dir,
                                                      dict(WORKER_ENV))

    started = time.monotonic()
    try:
        entries = build_corpus(n_fuzz, seed, n_huge=n_huge, n_fraud=n_fraud, n_triage=n_triage,
                               duplicates=duplicates)
        timings["generate"] = time.monotonic() - started
        say(f"fuzz: seed {seed}, {len(entries)} entries ({sum(e.size for e in entries) / 1e6:.1f} MB) "
            f"in {timings['generate']:.1f}s")
        mark = time.monotonic()
        torch.set_num_threads(1)
        adapters = load_adapters(Settings(kinds=["triage", "fraud"], device="cpu"))
        references = compute_references(entries, adapters)
        timings["references"] = time.monotonic() - mark
        mark = time.monotonic()
        for worker in workers:
            worker.wait_ready(180.0)
        timings["workers_ready"] = time.monotonic() - started
        threading.Thread(target=supervise, name="fuzz-supervisor", daemon=True).start()
        prepare_keys(client)
        mark = time.monotonic()
        placed = push(client, entries)
        timings["push"] = time.monotonic() - mark
        want = expected_outputs(entries)
        seen_count, last_change, drained = -1, time.monotonic(), False
        while time.monotonic() - mark < wait_s:
            count = counted(client)
            if count != seen_count:
                seen_count, last_change = count, time.monotonic()
            drained = lanes_drained(client)
            if drained and count >= want:
                break
            if time.monotonic() - last_change > STALL_S:
                say(f"fuzz: no progress for {STALL_S:.0f}s ({count}/{want} outputs, lanes {lane_state(client)})")
                break
            time.sleep(0.25)
        timings["drain"] = time.monotonic() - mark
        time.sleep(0.5)  # anything written late would show as a second result
        mark = time.monotonic()
        seen = observe(client)
        report = check(entries, placed, seen, references, compare_result)
        timings["check"] = time.monotonic() - mark
        stop.set()
        with lock:
            alive_ready = [(w.name, w.proc.poll() is None, _probe(w.port, "/livez"), _probe(w.port, "/readyz"))
                           for w in workers]
        timings["total"] = time.monotonic() - started
        return Run(seed, entries, report, timings, len(exits), alive_ready, lane_state(client),
                   lanes_drained(client), exits)
    finally:
        stop.set()
        with lock:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.stop(timeout_s=20.0)
        client.close()


def _crash_lines(log: str) -> str:
    """The worker log's error lines (event names and exception types; the log holds no payloads)."""
    keep = [line for line in log.splitlines() if '"error"' in line or "Error" in line or "crashed" in line]
    return " | ".join(line[:300] for line in keep[-6:])
