"""The v1 wire contract: round trips, refusals with their codes and fields, results' invariants."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts import (
    KINDS,
    SCHEMA_VERSION,
    ContractError,
    ErrorCode,
    ErrorInfo,
    FraudRequest,
    FraudResult,
    ReasonCode,
    TaskResultMessage,
    TaskStatus,
    Timings,
    TransactionEvent,
    TriageRequest,
    TriageResult,
    effective_deadline_ms,
    parse_request,
)
from contracts.iso import COUNTRIES, CURRENCIES
from contracts.requests import MAX_HISTORY, MAX_NOTE_CHARS

EXAMPLES = Path(__file__).resolve().parent.parent / "contracts" / "examples"
NOW = datetime.now(UTC)
DELETE = object()
CHANNELS = ("card_present", "ecommerce", "atm", "contactless", "recurring")


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _event(minutes_ago: float, **fields: Any) -> dict[str, Any]:
    event = {
        "amount": 42.1,
        "currency": "EUR",
        "mcc": "5411",
        "channel": "contactless",
        "country": "DE",
        "timestamp": _rfc3339(NOW - timedelta(minutes=minutes_ago)),
        "merchant_id": "m-groc-10442",
        "device_id": "term-88120",
    }
    return {**event, **fields}


TRIAGE: dict[str, Any] = {
    "tenant": "st-elsewhere-ed",
    "note": "34F c/o RLQ abd pain x2 days, nausea, no vomiting. LMP 6 wks ago. denies fever.",
    "age": 34,
    "sex": "F",
    "vitals": {"heart_rate": 96, "resp_rate": 18, "spo2": 98, "temperature_c": 37.4,
               "systolic_bp": 118, "diastolic_bp": 76, "pain": 6},
    "arrival_mode": "walk_in",
}
FRAUD: dict[str, Any] = {
    "tenant": "northwind-issuing",
    "timeout_ms": 50,
    "transaction": _event(1, amount=1849.0, mcc="5732", channel="ecommerce", device_id="dev-9f31c2"),
    "history": [_event(180), _event(120, mcc="5541"), _event(60, mcc="5812")],
}
BASES = {"triage": TRIAGE, "fraud": FRAUD}


def _set(data: dict[str, Any], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _request(kind: str, changes: dict[str, object]) -> dict[str, Any]:
    data = copy.deepcopy(BASES[kind])
    for dotted, value in changes.items():
        _set(data, dotted, value)
    return data


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_base_requests_are_valid(kind: str) -> None:
    request = parse_request(kind, BASES[kind])
    assert kind == request.KIND
    assert request.schema_version == SCHEMA_VERSION


@pytest.mark.parametrize("kind", KINDS)
def test_request_round_trips_through_json(kind: str) -> None:
    request = parse_request(kind, (EXAMPLES / f"{kind}-request.json").read_bytes())
    assert parse_request(kind, request.model_dump_json()) == request
    assert parse_request(kind, request.model_dump(mode="json")) == request


def test_dict_and_json_input_agree() -> None:
    assert parse_request("fraud", FRAUD) == parse_request("fraud", json.dumps(FRAUD).encode())


@pytest.mark.parametrize("name", ["triage-result", "fraud-result", "invalid-result"])
def test_result_examples_round_trip(name: str) -> None:
    message = TaskResultMessage.model_validate_json((EXAMPLES / f"{name}.json").read_bytes())
    assert TaskResultMessage.model_validate_json(message.model_dump_json()) == message
    assert TaskResultMessage.model_validate(json.loads(message.model_dump_json())) == message


def test_timestamps_keep_their_offset() -> None:
    event = TransactionEvent.model_validate(_event(5, timestamp="2026-10-09T17:32:05.250+02:00"))
    assert event.timestamp.utcoffset() == timedelta(hours=2)
    assert event.model_dump(mode="json")["timestamp"] == "2026-10-09T17:32:05.250000+02:00"


def test_python_callers_may_pass_aware_datetimes() -> None:
    event = TransactionEvent.model_validate(_event(5, timestamp=NOW))
    assert event.timestamp == NOW
    assert TransactionEvent.model_validate(event.model_dump()) == event
    with pytest.raises(ValidationError):
        TransactionEvent.model_validate(_event(5, timestamp=NOW.replace(tzinfo=None)))


# -- refusals ---------------------------------------------------------------------------------

E = ErrorCode
LONG_HISTORY = [_event(10)] * (MAX_HISTORY + 1)
REFUSALS = [
    # common fields
    ("triage", {"tenant": DELETE}, E.MISSING_FIELD, "tenant"),
    ("triage", {"tenant": ""}, E.OUT_OF_RANGE, "tenant"),
    ("triage", {"tenant": "t" * 65}, E.OUT_OF_RANGE, "tenant"),
    ("triage", {"tenant": " acme"}, E.MALFORMED, "tenant"),
    ("fraud", {"tenant": 42}, E.WRONG_TYPE, "tenant"),
    ("triage", {"deadline": 1_800_000_000}, E.OUT_OF_RANGE, "deadline"),
    ("triage", {"deadline": "1800000000000"}, E.WRONG_TYPE, "deadline"),
    ("fraud", {"deadline": 1_800_000_000_000}, E.DEADLINE_CONFLICT, "timeout_ms"),
    ("fraud", {"timeout_ms": 0}, E.OUT_OF_RANGE, "timeout_ms"),
    ("fraud", {"timeout_ms": 2.5}, E.WRONG_TYPE, "timeout_ms"),
    ("triage", {"reply_to": "inferq:queue:batch"}, E.BAD_REPLY_TO, "reply_to"),
    ("triage", {"reply_to": "inferq:results:"}, E.BAD_REPLY_TO, "reply_to"),
    ("fraud", {"reply_to": "inferq:results:a b"}, E.BAD_REPLY_TO, "reply_to"),
    ("fraud", {"reply_to": "inferq:results:" + "x" * 129}, E.BAD_REPLY_TO, "reply_to"),
    ("triage", {"schema_version": "2"}, E.UNSUPPORTED_SCHEMA_VERSION, "schema_version"),
    ("fraud", {"schema_version": "1.0"}, E.UNSUPPORTED_SCHEMA_VERSION, "schema_version"),
    ("fraud", {"lane": "fast"}, E.INVALID_CHOICE, "lane"),
    ("triage", {"priority": 1}, E.UNKNOWN_FIELD, "priority"),
    # triage
    ("triage", {"note": DELETE}, E.MISSING_FIELD, "note"),
    ("triage", {"note": ""}, E.EMPTY_NOTE, "note"),
    ("triage", {"note": " \n\t\u00a0"}, E.EMPTY_NOTE, "note"),
    ("triage", {"note": "x" * (MAX_NOTE_CHARS + 1)}, E.NOTE_TOO_LONG, "note"),
    ("triage", {"note": ["pt c/o CP"]}, E.WRONG_TYPE, "note"),
    ("triage", {"age": -1}, E.OUT_OF_RANGE, "age"),
    ("triage", {"age": 121}, E.OUT_OF_RANGE, "age"),
    ("triage", {"age": float("nan")}, E.NON_FINITE, "age"),
    ("triage", {"age": "34"}, E.WRONG_TYPE, "age"),
    ("triage", {"sex": "female"}, E.INVALID_CHOICE, "sex"),
    ("triage", {"arrival_mode": "helicopter"}, E.INVALID_CHOICE, "arrival_mode"),
    ("triage", {"vitals.heart_rate": 400}, E.VITAL_OUT_OF_RANGE, "vitals.heart_rate"),
    ("triage", {"vitals.heart_rate": 12}, E.VITAL_OUT_OF_RANGE, "vitals.heart_rate"),
    ("triage", {"vitals.resp_rate": 0}, E.VITAL_OUT_OF_RANGE, "vitals.resp_rate"),
    ("triage", {"vitals.spo2": 101}, E.VITAL_OUT_OF_RANGE, "vitals.spo2"),
    ("triage", {"vitals.spo2": 49.5}, E.VITAL_OUT_OF_RANGE, "vitals.spo2"),
    ("triage", {"vitals.temperature_c": 101.3}, E.VITAL_OUT_OF_RANGE, "vitals.temperature_c"),
    ("triage", {"vitals.temperature_c": 19.5}, E.VITAL_OUT_OF_RANGE, "vitals.temperature_c"),
    ("triage", {"vitals.temperature_c": float("inf")}, E.NON_FINITE, "vitals.temperature_c"),
    ("triage", {"vitals.systolic_bp": 30}, E.VITAL_OUT_OF_RANGE, "vitals.systolic_bp"),
    ("triage", {"vitals.diastolic_bp": 118}, E.VITAL_OUT_OF_RANGE, "vitals.diastolic_bp"),
    ("triage", {"vitals.pain": 11}, E.VITAL_OUT_OF_RANGE, "vitals.pain"),
    ("triage", {"vitals.pain": 7.5}, E.WRONG_TYPE, "vitals.pain"),
    ("triage", {"vitals.glucose": 5.4}, E.UNKNOWN_FIELD, "vitals.glucose"),
    ("triage", {"vitals": "stable"}, E.WRONG_TYPE, "vitals"),
    # fraud: the transaction
    ("fraud", {"transaction": DELETE}, E.MISSING_FIELD, "transaction"),
    ("fraud", {"transaction.amount": 0}, E.OUT_OF_RANGE, "transaction.amount"),
    ("fraud", {"transaction.amount": -5.0}, E.OUT_OF_RANGE, "transaction.amount"),
    ("fraud", {"transaction.amount": 1e13}, E.OUT_OF_RANGE, "transaction.amount"),
    ("fraud", {"transaction.amount": float("nan")}, E.NON_FINITE, "transaction.amount"),
    ("fraud", {"transaction.amount": "12.50"}, E.WRONG_TYPE, "transaction.amount"),
    ("fraud", {"transaction.amount": True}, E.WRONG_TYPE, "transaction.amount"),
    ("fraud", {"transaction.currency": "XYZ"}, E.UNKNOWN_CURRENCY, "transaction.currency"),
    ("fraud", {"transaction.currency": "eur"}, E.UNKNOWN_CURRENCY, "transaction.currency"),
    ("fraud", {"transaction.currency": "XAU"}, E.UNKNOWN_CURRENCY, "transaction.currency"),
    ("fraud", {"transaction.country": "XX"}, E.UNKNOWN_COUNTRY, "transaction.country"),
    ("fraud", {"transaction.country": "DEU"}, E.UNKNOWN_COUNTRY, "transaction.country"),
    ("fraud", {"transaction.country": "de"}, E.UNKNOWN_COUNTRY, "transaction.country"),
    ("fraud", {"transaction.mcc": "541"}, E.MALFORMED_MCC, "transaction.mcc"),
    ("fraud", {"transaction.mcc": "54111"}, E.MALFORMED_MCC, "transaction.mcc"),
    ("fraud", {"transaction.mcc": "54a1"}, E.MALFORMED_MCC, "transaction.mcc"),
    ("fraud", {"transaction.mcc": "\u0665\u0664\u0661\u0661"}, E.MALFORMED_MCC, "transaction.mcc"),
    ("fraud", {"transaction.mcc": 5411}, E.WRONG_TYPE, "transaction.mcc"),
    ("fraud", {"transaction.channel": "moto"}, E.INVALID_CHOICE, "transaction.channel"),
    ("fraud", {"transaction.timestamp": "2026-01-01"}, E.BAD_TIMESTAMP, "transaction.timestamp"),
    ("fraud", {"transaction.timestamp": NOW.replace(tzinfo=None).isoformat()}, E.BAD_TIMESTAMP,
     "transaction.timestamp"),
    ("fraud", {"transaction.timestamp": "yesterday 10pm"}, E.BAD_TIMESTAMP, "transaction.timestamp"),
    ("fraud", {"transaction.timestamp": "2026-02-30T10:00:00Z"}, E.BAD_TIMESTAMP, "transaction.timestamp"),
    ("fraud", {"transaction.timestamp": 1_764_000_000}, E.BAD_TIMESTAMP, "transaction.timestamp"),
    ("fraud", {"transaction.timestamp": "1764000000"}, E.BAD_TIMESTAMP, "transaction.timestamp"),
    ("fraud", {"transaction.timestamp": "2026-10-14T02:47Z"}, E.BAD_TIMESTAMP, "transaction.timestamp"),
    ("fraud", {"transaction.timestamp": "2026-10-14T02:47:13+0200"}, E.BAD_TIMESTAMP, "transaction.timestamp"),
    ("fraud", {"transaction.timestamp": _rfc3339(NOW + timedelta(days=2))}, E.TIMESTAMP_OUT_OF_RANGE,
     "transaction.timestamp"),
    ("fraud", {"transaction.cvv": "123"}, E.UNKNOWN_FIELD, "transaction.cvv"),
    # fraud: the history
    ("fraud", {"history.1.currency": "ABC"}, E.UNKNOWN_CURRENCY, "history.1.currency"),
    ("fraud", {"history.2.amount": DELETE}, E.MISSING_FIELD, "history.2.amount"),
    ("fraud", {"history.0.timestamp": _rfc3339(NOW - timedelta(days=11 * 365))}, E.TIMESTAMP_OUT_OF_RANGE,
     "history.0.timestamp"),
    ("fraud", {"history.2.timestamp": _rfc3339(NOW - timedelta(hours=5))}, E.HISTORY_OUT_OF_ORDER,
     "history.2.timestamp"),
    ("fraud", {"history.2.timestamp": _rfc3339(NOW)}, E.HISTORY_OUT_OF_ORDER, "history.2.timestamp"),
    ("fraud", {"history": LONG_HISTORY}, E.HISTORY_TOO_LONG, "history"),
    ("fraud", {"history": "none"}, E.WRONG_TYPE, "history"),
    ("fraud", {"history.0.merchant_id": ""}, E.OUT_OF_RANGE, "history.0.merchant_id"),
    ("fraud", {"history.0.device_id": "d" * 129}, E.OUT_OF_RANGE, "history.0.device_id"),
]


@pytest.mark.parametrize(
    ("kind", "changes", "code", "field"),
    REFUSALS,
    ids=[f"{i:02d}-{code.value}-{field}" for i, (_, _, code, field) in enumerate(REFUSALS)],
)
def test_refused_with_code_and_field(
    kind: str, changes: dict[str, object], code: ErrorCode, field: str
) -> None:
    with pytest.raises(ContractError) as caught:
        parse_request(kind, _request(kind, changes))
    error = caught.value
    assert (error.code, error.field) == (code, field), error.errors
    assert error.message.startswith(f"{field}: ")
    assert error.errors[0].code == code


RAW_REFUSALS = [
    ("triage", b'{"tenant": ', E.INVALID_JSON, "request"),
    ("fraud", b"\xff\xfe{}", E.INVALID_JSON, "request"),
    ("triage", b"[]", E.WRONG_TYPE, "request"),
    ("triage", b'{"tenant": "a", "note": "x", "age": NaN}', E.NON_FINITE, "age"),
    ("sepsis", b"{}", E.UNKNOWN_TASK, "kind"),
]


@pytest.mark.parametrize(("kind", "raw", "code", "field"), RAW_REFUSALS)
def test_raw_documents_refused(kind: str, raw: bytes, code: ErrorCode, field: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_request(kind, raw)
    assert (caught.value.code, caught.value.field) == (code, field)


def test_refusal_table_is_large_enough() -> None:
    assert len(REFUSALS) + len(RAW_REFUSALS) >= 45


def test_every_problem_is_reported() -> None:
    changes = {"transaction.currency": "XYZ", "history.1.mcc": "12", "extra": 1}
    with pytest.raises(ContractError) as caught:
        parse_request("fraud", _request("fraud", changes))
    found = {(p.code, p.field) for p in caught.value.errors}
    assert found == {
        (E.UNKNOWN_CURRENCY, "transaction.currency"),
        (E.MALFORMED_MCC, "history.1.mcc"),
        (E.UNKNOWN_FIELD, "extra"),
    }


def test_refusal_never_quotes_the_input() -> None:
    secret = "MRN 0048213 Jane Roe "
    with pytest.raises(ContractError) as caught:
        parse_request("triage", _request("triage", {"note": secret * 1000}))
    assert all(secret.strip() not in p.message for p in caught.value.errors)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# -- valid edges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"age": 14 / 365.25, "vitals.heart_rate": 170},  # a neonate
        {"note": "x" * MAX_NOTE_CHARS},
        {"vitals": {}},
        {"vitals": None, "sex": None, "age": None, "arrival_mode": None},
        {"deadline": 1_800_000_000_000, "reply_to": "inferq:results:client:7f3a.v1"},
    ],
)
def test_triage_edges_accepted(changes: dict[str, object]) -> None:
    parse_request("triage", _request("triage", changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"history": []},
        {"history.2.timestamp": FRAUD["transaction"]["timestamp"]},  # same instant as the transaction
        {"transaction.timestamp": _rfc3339(NOW + timedelta(hours=23))},
        {"transaction.currency": "HRK", "transaction.amount": 1e12},
        {"transaction.timestamp": NOW.strftime("%Y-%m-%dt%H:%M:%S.123456789z")},
        {"transaction.merchant_id": None, "transaction.device_id": None},
    ],
)
def test_fraud_edges_accepted(changes: dict[str, object]) -> None:
    parse_request("fraud", _request("fraud", changes))


def test_full_history_validates() -> None:
    start = NOW - timedelta(days=365)
    history = [_event(0, timestamp=_rfc3339(start + timedelta(minutes=90 * i))) for i in range(MAX_HISTORY)]
    request = parse_request("fraud", json.dumps({**FRAUD, "history": history}).encode())
    assert isinstance(request, FraudRequest)
    assert len(request.history) == MAX_HISTORY


def test_iso_lists() -> None:
    assert len(COUNTRIES) == 249
    assert {"USD", "EUR", "JPY", "GBP", "CHF", "XOF", "XCG"} <= CURRENCIES
    assert not {"XAU", "XTS", "XXX", "XDR", "BOV"} & CURRENCIES
    assert all(len(code) == 3 and code.isupper() for code in CURRENCIES)


def test_effective_deadline() -> None:
    triage = parse_request("triage", TRIAGE)
    assert effective_deadline_ms(triage, 1_000) is None
    fraud = parse_request("fraud", FRAUD)
    assert effective_deadline_ms(fraud, 1_790_000_000_000) == 1_790_000_000_050
    fixed = parse_request("triage", {**TRIAGE, "deadline": 1_800_000_000_000})
    assert effective_deadline_ms(fixed, 1_790_000_000_000) == 1_800_000_000_000


def test_requests_are_frozen() -> None:
    request = parse_request("triage", TRIAGE)
    assert isinstance(request, TriageRequest)
    with pytest.raises(ValidationError):
        request.note = "changed"  # type: ignore[misc]


# -- property tests ---------------------------------------------------------------------------

_OFFSETS = st.integers(min_value=-12 * 4, max_value=14 * 4).map(lambda q: timezone(timedelta(minutes=15 * q)))
_MOMENTS = st.builds(
    lambda seconds, micros, tz: (NOW + timedelta(seconds=seconds, microseconds=micros)).astimezone(tz),
    # Inside [now - 10 y, now + 24 h] with an hour's margin on each side.
    st.integers(min_value=-9 * 365 * 86_400, max_value=23 * 3600),
    st.integers(min_value=0, max_value=999_999),
    _OFFSETS,
)
_IDS = st.none() | st.text(min_size=1, max_size=128)
EVENTS = st.fixed_dictionaries(
    {
        "amount": st.floats(min_value=0.01, max_value=1e12, allow_nan=False, allow_infinity=False),
        "currency": st.sampled_from(sorted(CURRENCIES)),
        "mcc": st.from_regex(r"[0-9]{4}", fullmatch=True),
        "channel": st.sampled_from(CHANNELS),
        "country": st.sampled_from(sorted(COUNTRIES)),
        "timestamp": _MOMENTS.map(lambda m: m.isoformat()),
        "merchant_id": _IDS,
        "device_id": _IDS,
    }
)


@settings(max_examples=80, deadline=None)
@given(EVENTS)
def test_valid_events_parse_and_round_trip(event: dict[str, Any]) -> None:
    parsed = TransactionEvent.model_validate(event)
    assert parsed.amount == event["amount"]
    assert parsed.timestamp == datetime.fromisoformat(event["timestamp"])
    assert TransactionEvent.model_validate_json(parsed.model_dump_json()) == parsed


@settings(max_examples=25, deadline=None)
@given(st.lists(EVENTS, min_size=1, max_size=40))
def test_sorted_histories_are_accepted(events: list[dict[str, Any]]) -> None:
    ordered = sorted(events, key=lambda e: datetime.fromisoformat(e["timestamp"]))
    request = parse_request("fraud", {"tenant": "t1", "transaction": ordered[-1], "history": ordered[:-1]})
    assert parse_request("fraud", request.model_dump_json()) == request


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=4).filter(lambda s: s not in CURRENCIES))
def test_any_other_currency_is_refused(currency: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_request("fraud", _request("fraud", {"transaction.currency": currency}))
    assert (caught.value.code, caught.value.field) == (E.UNKNOWN_CURRENCY, "transaction.currency")


# -- results ----------------------------------------------------------------------------------

TIMINGS = Timings(queue_ms=1.5, batch_size=8, compute_ms=3.0, total_ms=4.9)
TRIAGE_RESULT = TriageResult(acuity=3, probabilities=[0.01, 0.09, 0.7, 0.15, 0.05], truncated=False, chunks=1)
FRAUD_RESULT = FraudResult(score=0.62, decision="review", reasons=[ReasonCode.NEW_DEVICE])


def _round_trip(message: TaskResultMessage) -> None:
    assert TaskResultMessage.model_validate_json(message.model_dump_json()) == message


def test_ok_constructor_takes_kind_from_result() -> None:
    triage = TaskResultMessage.ok("t-1", TRIAGE_RESULT, model="triage@1", timings=TIMINGS, finished_at=1)
    assert (triage.kind, triage.status, triage.error) == ("triage", TaskStatus.OK, None)
    fraud = TaskResultMessage.ok("t-2", FRAUD_RESULT, model="fraud-seq@1.0.0", timings=TIMINGS, finished_at=1)
    assert fraud.kind == "fraud"
    _round_trip(triage)
    _round_trip(fraud)


def test_invalid_constructor_carries_the_first_problem() -> None:
    with pytest.raises(ContractError) as caught:
        parse_request("fraud", {"tenant": "t"})
    message = TaskResultMessage.invalid("t-3", "fraud", caught.value, timings=Timings.none(), finished_at=2)
    assert message.status is TaskStatus.INVALID
    assert message.error == ErrorInfo(
        code=E.MISSING_FIELD, message="transaction: Field required", field="transaction"
    )
    _round_trip(message)


def test_service_outcome_constructors() -> None:
    none = Timings.none()
    expired = TaskResultMessage.expired("t-4", "fraud", timings=none, finished_at=3)
    rejected = TaskResultMessage.rejected("t-5", "triage", "batch lane is full", timings=none, finished_at=4)
    failed = TaskResultMessage.failed(
        "t-6", "triage", E.MODEL_ERROR, "forward pass failed", timings=TIMINGS, finished_at=5, model="m@1"
    )
    outcomes = [(m.status, m.error.code if m.error else None) for m in (expired, rejected, failed)]
    assert outcomes == [
        (TaskStatus.EXPIRED, E.EXPIRED),
        (TaskStatus.REJECTED, E.OVERLOADED),
        (TaskStatus.FAILED, E.MODEL_ERROR),
    ]
    for message in (expired, rejected, failed):
        assert message.result is None
        _round_trip(message)


_MESSAGE = {
    "task_id": "t-1", "kind": "triage", "status": "ok", "result": TRIAGE_RESULT.model_dump(),
    "error": None, "model": "triage-minilm@1.0.0", "timings": TIMINGS.model_dump(), "finished_at": 1,
}
_ERROR = {"code": "internal_error", "message": "worker lost"}


@pytest.mark.parametrize(
    "changes",
    [
        {"result": None},  # ok without a result
        {"error": _ERROR},  # ok with an error as well
        {"status": "failed"},  # failed with a result and no error
        {"status": "failed", "error": _ERROR},  # failed with a result
        {"kind": "fraud"},  # result of the other kind
        {"status": "done"},
        {"model": "triage-minilm"},  # no version
        {"task_id": ""},
        {"timings": {**TIMINGS.model_dump(), "queue_ms": -1.0}},
        {"result": {**TRIAGE_RESULT.model_dump(), "acuity": 6}},
        {"result": {**TRIAGE_RESULT.model_dump(), "probabilities": [0.2] * 4}},
        {"result": {**TRIAGE_RESULT.model_dump(), "probabilities": [0.5, 0.5, 0.5, 0.0, 0.0]}},
        {"result": {**TRIAGE_RESULT.model_dump(), "chunks": 0}},
        {"kind": "fraud", "result": {"score": 1.2, "decision": "decline", "reasons": []}},
        {"kind": "fraud", "result": {"score": 0.2, "decision": "allow", "reasons": []}},
        {"kind": "fraud", "result": {"score": 0.2, "decision": "approve", "reasons": ["gut_feeling"]}},
        {"status": "failed", "result": None, "error": {"code": "teapot", "message": "no"}},
    ],
)
def test_broken_results_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TaskResultMessage.model_validate({**_MESSAGE, **changes})


def test_failure_without_result_accepted() -> None:
    failed = {**_MESSAGE, "status": "failed", "result": None, "error": _ERROR}
    message = TaskResultMessage.model_validate(failed)
    assert message.error is not None and message.error.code is E.INTERNAL_ERROR


# -- history items: TransactionEvent's checks, held as dicts ------------------------------------

BAD_EVENT_FIELDS = [
    ("amount", None), ("amount", "42.1"), ("amount", 0), ("amount", -3.0), ("amount", float("nan")),
    ("amount", 2e12), ("amount", True), ("amount", DELETE), ("currency", "eur"), ("currency", 978),
    ("mcc", "541"), ("mcc", 5411), ("mcc", DELETE), ("channel", "moto"), ("country", "XX"),
    ("timestamp", "2026-03-01T12:00:00"), ("timestamp", 1_700_000_000), ("timestamp", "yesterday"),
    ("timestamp", datetime(2026, 3, 1, 12)), ("merchant_id", ""), ("device_id", "d" * 129),
    ("device_id", 7), ("surplus", 1),
]  # fmt: skip


def _with(event: dict[str, Any], field: str, value: object) -> dict[str, Any]:
    changed = {**event, field: value}
    if value is DELETE:
        del changed[field]
    return changed


def _problems(data: dict[str, Any] | bytes, prefix: str) -> list[tuple[ErrorCode, str, str]]:
    with pytest.raises(ContractError) as caught:
        parse_request("fraud", data)
    return [(p.code, p.field.removeprefix(prefix), p.message.removeprefix(prefix)) for p in caught.value.errors]


@pytest.mark.parametrize(("field", "value"), BAD_EVENT_FIELDS)
def test_a_history_event_is_refused_exactly_as_the_transaction_is(field: str, value: object) -> None:
    history = copy.deepcopy(FRAUD["history"])
    history[1] = _with(history[1], field, value)
    as_history = {**FRAUD, "history": history}
    as_transaction = {**FRAUD, "transaction": _with(FRAUD["transaction"], field, value)}
    assert _problems(as_history, "history.1.") == _problems(as_transaction, "transaction.")
    if not isinstance(value, datetime):  # JSON has no datetime
        raw_history, raw_transaction = json.dumps(as_history).encode(), json.dumps(as_transaction).encode()
        assert _problems(raw_history, "history.1.") == _problems(raw_transaction, "transaction.")


@pytest.mark.parametrize("item", [1, "x", None, [], 2.5])
def test_a_history_item_that_is_no_object_is_refused_in_the_models_words(item: object) -> None:
    data = {**FRAUD, "history": [FRAUD["history"][0], item]}
    (problem,) = _problems(data, "")
    in_models_words = "history.1: Input should be a valid dictionary or instance of TransactionEvent"
    assert problem == (E.WRONG_TYPE, "history.1", in_models_words)
    (problem,) = _problems(json.dumps(data).encode(), "")
    assert problem == (E.WRONG_TYPE, "history.1", "history.1: Input should be an object")


def test_history_items_are_dicts_of_every_event_field() -> None:
    data = {**FRAUD, "history": [_event(90, merchant_id=None), _event(30)]}
    request = parse_request("fraud", data)
    assert isinstance(request, FraudRequest)
    first = request.history[0]
    assert type(first) is dict and list(first) == list(TransactionEvent.model_fields)
    assert first == TransactionEvent.model_validate(_event(90, merchant_id=None)).model_dump()
    assert first["device_id"] == "term-88120" and first["merchant_id"] is None
    assert parse_request("fraud", json.dumps(data)) == request


def test_history_accepts_transaction_event_instances() -> None:
    events = [TransactionEvent.model_validate(e) for e in FRAUD["history"]]
    mixed = [events[0], FRAUD["history"][1], events[2]]
    request = FraudRequest(tenant="t1", transaction=FRAUD["transaction"], history=mixed)
    assert request == parse_request("fraud", {**FRAUD, "timeout_ms": None, "tenant": "t1"})
    assert request.history[2] == events[2].model_dump()
