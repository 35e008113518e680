"""worker.entries: lane entries decoded from raw bytes, one field at a time, never raising."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import orjson
import pytest
import structlog

from contracts import ContractError, ErrorCode, parse_request
from contracts.wire import FIELD_PAYLOAD, FIELD_REPLY_TO, results_stream, valid_reply_to
from worker.client import raw_fields
from worker.entries import (
    MAX_ENTRY_BYTES,
    Delivery,
    decode_entry,
    identity_only,
    prior_deliveries,
    raw_json,
)
from worker.keys import FIELD_ORIGIN, FIELD_PRIOR_DELIVERIES
from worker.transport import check_reply_to

ENTRY_ID = "1700000000000-0"


def _bytes(fields: Mapping[str, str | bytes]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def _decode(fields: Mapping[str, str | bytes], deliveries: int = 1) -> Delivery:
    return decode_entry("batch", ENTRY_ID, _bytes(fields), deliveries)


def _envelope(headers: dict[str, object], body: object, **extra: object) -> dict[str, str]:
    message = {"body": json.dumps(body), "content-type": "application/json", "content-encoding": "utf-8",
               "headers": headers, "properties": {}, **extra}
    return {FIELD_PAYLOAD: json.dumps(message)}


def test_raw_form_decodes() -> None:
    delivery = _decode(raw_fields("inferq.fraud", "t1", json.dumps({"tenant": "acme"})), deliveries=2)
    assert (delivery.task_id, delivery.task_name, delivery.kind) == ("t1", "inferq.fraud", "fraud")
    assert delivery.request == {"tenant": "acme"} and delivery.decode_error is None and delivery.decode_code is None
    assert delivery.deliveries == 2 and delivery.enqueued_ms == 1_700_000_000_000 and not delivery.poisoned
    assert delivery.result_stream == results_stream("fraud")
    assert delivery.raw == _bytes(raw_fields("inferq.fraud", "t1", json.dumps({"tenant": "acme"})))


def test_decode_envelope_forms() -> None:
    headers = {"task": "inferq.triage", "id": "c1"}
    plain = _decode(_envelope(headers, [[], {"request": {"note": "x"}}, {}]))
    assert (plain.task_id, plain.kind, plain.request) == ("c1", "triage", {"note": "x"})
    assert plain.decode_error is None
    positional = _decode(_envelope(headers, [[{"note": "y"}], {}, {}]))
    assert positional.request == {"note": "y"}
    encoded = json.loads(_envelope(headers, [[], {"request": {"note": "z"}}, {}])[FIELD_PAYLOAD])
    encoded["body"] = base64.b64encode(encoded["body"].encode()).decode()
    encoded["properties"] = {"body_encoding": "base64"}
    assert _decode({FIELD_PAYLOAD: json.dumps(encoded)}).request == {"note": "z"}
    encoded["body"] = "not base64!"
    assert _decode({FIELD_PAYLOAD: json.dumps(encoded)}).decode_code is ErrorCode.MALFORMED
    assert plain.enqueued_ms == 1_700_000_000_000


def test_envelope_plain_fields_name_a_task_whose_payload_cannot_be_read() -> None:
    # inferq's transport writes task and id beside the payload, so even a broken payload is answered.
    delivery = _decode({"task": "inferq.triage", "id": "e1", FIELD_PAYLOAD: "{not json"})
    assert (delivery.task_id, delivery.kind) == ("e1", "triage")
    assert delivery.decode_code is ErrorCode.INVALID_JSON and delivery.result_stream == results_stream("triage")


@pytest.mark.parametrize(
    ("fields", "code", "has_id"),
    [
        ({"task": "inferq.fraud", "id": "a", "request": "{"}, ErrorCode.INVALID_JSON, True),
        ({"task": "inferq.fraud", "id": "a", "request": "[1]"}, ErrorCode.WRONG_TYPE, True),
        ({"task": "inferq.fraud", "id": "a", "request": '{"amount": NaN}'}, ErrorCode.INVALID_JSON, True),
        ({"task": "inferq.fraud", "id": "a"}, ErrorCode.MISSING_FIELD, True),
        ({"task": "inferq.other", "id": "a", "request": "{}"}, ErrorCode.UNKNOWN_TASK, True),
        ({"task": "inferq.fraud", "request": "{}"}, ErrorCode.MISSING_FIELD, False),
        ({"task": "inferq.fraud", "id": "", "request": "{}"}, ErrorCode.MALFORMED, False),
        ({"task": "inferq.fraud", "id": "x" * 201, "request": "{}"}, ErrorCode.MALFORMED, False),
        (_envelope({"task": "inferq.fraud", "id": "a"}, [[], {}, {}]), ErrorCode.MISSING_FIELD, True),
        (_envelope({"task": "inferq.fraud", "id": "a"}, {"args": []}), ErrorCode.MALFORMED, True),
        (_envelope({"task": "inferq.fraud", "id": "a"}, [[], {"request": [1]}, {}]), ErrorCode.WRONG_TYPE, True),
        ({FIELD_PAYLOAD: json.dumps({"body": "", "content-type": "application/x-python-serialize",
                                     "headers": {"task": "inferq.fraud", "id": "a"}})},
         ErrorCode.MALFORMED, True),
        ({FIELD_PAYLOAD: "[]"}, ErrorCode.MALFORMED, False),
    ],
)
def test_decode_refusals(fields: dict[str, str], code: ErrorCode, has_id: bool) -> None:
    delivery = _decode(fields)
    assert delivery.decode_code is code and delivery.decode_error
    assert (delivery.task_id is not None) is has_id
    assert delivery.raw == _bytes(fields)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b'{"tenant": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"tenant": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"tenant": "\\ud800"}',  # a lone surrogate escape
        b'{"tenant": "\\udc00x"}',  # a lone low surrogate escape
    ],
)
def test_requests_that_are_not_unicode_are_invalid_unicode(request_bytes: bytes) -> None:
    delivery = _decode({"task": "inferq.triage", "id": "u1", "request": request_bytes})
    assert delivery.task_id == "u1" and delivery.request is None
    assert delivery.decode_code is ErrorCode.INVALID_UNICODE
    assert delivery.raw[b"request"] == request_bytes


def test_an_id_that_is_not_utf8_leaves_no_identity() -> None:
    delivery = _decode({"task": "inferq.triage", "id": b"\xff\xfe", "request": "{}"})
    assert delivery.task_id is None and delivery.result_stream == results_stream("triage")
    assert delivery.decode_code is ErrorCode.INVALID_UNICODE
    assert delivery.decode_error == "id: holds bytes that are not UTF-8"
    assert _decode({"task": b"\xff", "id": "a", "request": "{}"}).decode_code is ErrorCode.UNKNOWN_TASK


def test_an_oversize_entry_is_refused_before_it_is_parsed() -> None:
    huge = b'{"tenant": "' + b"x" * MAX_ENTRY_BYTES + b'"}'
    delivery = _decode({"task": "inferq.fraud", "id": "big", "reply_to": "inferq:results:big", "request": huge})
    assert delivery.task_id == "big" and delivery.request is None
    assert delivery.decode_code is ErrorCode.OUT_OF_RANGE and "MiB" in (delivery.decode_error or "")
    assert delivery.result_stream == "inferq:results:big"
    too_long_id = _decode({"task": "inferq.fraud", "id": "y" * 201, "request": huge})
    assert too_long_id.task_id is None and too_long_id.decode_code is ErrorCode.OUT_OF_RANGE


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    delivery = _decode({"task": "inferq.fraud", "id": "deep", "request": "[" * 5000})
    assert delivery.decode_code is ErrorCode.INVALID_JSON and delivery.task_id == "deep"


def test_result_stream_choice() -> None:
    good = _decode(raw_fields("inferq.fraud", "a", json.dumps({"reply_to": "inferq:results:x"})))
    assert good.result_stream == "inferq:results:x" and good.reply_to == "inferq:results:x"
    bad = _decode(raw_fields("inferq.fraud", "a", json.dumps({"reply_to": "inferq:queue:batch"})))
    assert bad.result_stream == results_stream("fraud") and bad.reply_to is None
    # The entry's own reply_to field wins, and still names a stream when the request is unreadable.
    own = _decode({**raw_fields("inferq.fraud", "a", "{not json"), FIELD_REPLY_TO: "inferq:results:own"})
    assert own.result_stream == "inferq:results:own" and own.decode_code is ErrorCode.INVALID_JSON
    both = _decode({**raw_fields("inferq.fraud", "a", json.dumps({"reply_to": "inferq:results:req"})),
                    FIELD_REPLY_TO: "inferq:results:own"})
    assert both.result_stream == "inferq:results:own"
    unknown = _decode(raw_fields("inferq.other", "a", "{}"))
    assert unknown.kind is None and unknown.result_stream is None


def test_reply_to_outside_results_refused() -> None:
    check_reply_to({"reply_to": "inferq:results:mine"})
    check_reply_to({})
    assert valid_reply_to("inferq:results:payments-switch")
    for bad in ("inferq:queue:realtime", "inferq:results:", "x", 5, "inferq:results:a b", "inferq:results:{x}"):
        assert not valid_reply_to(bad)
        with pytest.raises(ContractError) as refused:
            check_reply_to({"reply_to": bad})
        assert refused.value.code is ErrorCode.BAD_REPLY_TO


def test_a_requeued_copy_keeps_its_queue_time_and_delivery_count() -> None:
    fields = {**raw_fields("inferq.fraud", "t1", "{}"), FIELD_ORIGIN: "1690000000000-3", FIELD_PRIOR_DELIVERIES: "2"}
    delivery = _decode(fields)
    assert delivery.enqueued_ms == 1_690_000_000_000 and delivery.deliveries == 1  # ingress adds the prior count
    assert prior_deliveries(_bytes(fields)) == 2
    assert prior_deliveries(_bytes({FIELD_PRIOR_DELIVERIES: "many"})) == 0
    assert prior_deliveries(_bytes({FIELD_PRIOR_DELIVERIES: "-4"})) == 0
    forged = _decode({**fields, FIELD_ORIGIN: "yesterday"})
    assert forged.enqueued_ms == 1_700_000_000_000


def test_identity_only_reads_no_request_but_keeps_where_to_answer() -> None:
    request = json.dumps({"tenant": "acme", "reply_to": "inferq:results:client:abc"})
    delivery = identity_only("realtime", ENTRY_ID, _bytes(raw_fields("inferq.fraud", "p1", request)), 4)
    assert delivery.poisoned and delivery.request is None and delivery.decode_error is None
    assert (delivery.task_id, delivery.kind, delivery.deliveries) == ("p1", "fraud", 4)
    assert delivery.result_stream == "inferq:results:client:abc"
    unreadable = identity_only("batch", ENTRY_ID, _bytes({"task": "inferq.triage", "id": "p2", "request": b"\xff"}), 9)
    assert unreadable.poisoned and unreadable.result_stream == results_stream("triage")
    nameless = identity_only("batch", ENTRY_ID, _bytes({"request": "{}"}), 9)
    assert nameless.task_id is None and nameless.result_stream is None


def test_raw_json_is_lossless() -> None:
    fields = {b"task": b"inferq.fraud", b"request": b"\xff\x00ok", b"\xfe": b"v"}
    pairs = orjson.loads(raw_json(fields))
    assert pairs[0] == ["task", "inferq.fraud"]
    assert base64.b64decode(pairs[1][1]["base64"]) == b"\xff\x00ok"
    assert base64.b64decode(pairs[2][0]["base64"]) == b"\xfe" and pairs[2][1] == "v"


# Found by bytes-level fuzzing (tests/test_fuzz.py): each of these once crashed a worker or gave a
# code or a result stream other than docs/wire-format.md's.


def _b64_envelope(body: str) -> dict[str, str]:
    message = {"body": body, "content-type": "application/json", "headers": {"task": "inferq.triage", "id": "b1"},
               "properties": {"body_encoding": "base64"}}
    return {FIELD_PAYLOAD: json.dumps(message)}


@pytest.mark.parametrize("body", ["\u00e9t\u00e9", "W1tdLHt9LHt9XQ==\u00a0", "\U0001f600W1tdLHt9LHt9XQ=="])
def test_a_base64_body_that_is_not_ascii_is_malformed_not_a_crash(body: str) -> None:
    # base64 raised ValueError (not binascii.Error) out of decode_entry: the fetcher thread died, and
    # so did every worker that claimed the entry after it.
    delivery = _decode(_b64_envelope(body))
    assert delivery.decode_code is ErrorCode.MALFORMED and delivery.task_id == "b1" and delivery.kind == "triage"
    poisoned = identity_only("batch", ENTRY_ID, _bytes(_b64_envelope(body)), 4)
    assert poisoned.task_id == "b1"


@pytest.mark.parametrize("origin", ["9" * 400 + "-0", "9" * 5000 + "-0", "99999999999999999999-0", "1" * 21 + "-1"])
def test_a_forged_origin_cannot_move_the_enqueue_time_past_the_entry(origin: str) -> None:
    # Thousands of digits raised ValueError in the fetcher; hundreds made queue_ms an int too large for
    # a float, and OverflowError killed the preparer thread.
    fields = {**raw_fields("inferq.fraud", "o1", "{}"), FIELD_ORIGIN: origin}
    assert _decode(fields).enqueued_ms == 1_700_000_000_000
    assert identity_only("batch", ENTRY_ID, _bytes(fields), 4).enqueued_ms == 1_700_000_000_000
    earlier = {**raw_fields("inferq.fraud", "o1", "{}"), FIELD_ORIGIN: "1-0"}
    assert _decode(earlier).enqueued_ms == 1


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b'\xef\xbb\xbf{"tenant": "a"}', ErrorCode.INVALID_JSON),  # a byte order mark is UTF-8, not JSON text
        (b'{"tenant": "a", "age": 1e400}', ErrorCode.NON_FINITE),  # valid JSON, infinite as a double
        (b'{"tenant": "a", "age": -2E999}', ErrorCode.NON_FINITE),
        (b'{"tenant": "a", "age": NaN}', ErrorCode.INVALID_JSON),  # not JSON at all
        (b'{"tenant": "a", "age": Infinity}', ErrorCode.INVALID_JSON),
        (b'{"tenant": "caf\xe9"}', ErrorCode.INVALID_UNICODE),
    ],
)
def test_json_refusals_name_what_is_wrong(request_bytes: bytes, code: ErrorCode) -> None:
    assert _decode({"task": "inferq.triage", "id": "j1", "request": request_bytes}).decode_code is code


def test_integers_past_64_bits_are_read_exactly() -> None:
    # orjson reads them as floats, which an integer field refused as wrong_type instead of out of range.
    request = b'{"tenant": "a", "note": "x", "vitals": {"heart_rate": 100000000000000000000}}'
    delivery = _decode({"task": "inferq.triage", "id": "i1", "request": request})
    assert delivery.request is not None and delivery.request["vitals"]["heart_rate"] == 10**20
    with pytest.raises(ContractError) as refused:
        parse_request("triage", delivery.request)
    assert refused.value.code is ErrorCode.VITAL_OUT_OF_RANGE
    deadline = _decode({"task": "inferq.triage", "id": "i2", "request": b'{"deadline": -9223372036854775809}'})
    assert deadline.request == {"deadline": -(2**63) - 1}
    body = [[], {"request": {"tenant": "a", "timeout_ms": 10**25}}, {}]
    envelope = _decode(_envelope({"task": "inferq.fraud", "id": "i3"}, body))
    assert envelope.request == {"tenant": "a", "timeout_ms": 10**25}
    floats = _decode({"task": "inferq.triage", "id": "i4", "request": b'{"age": 1e20, "x": {"y": 3e19}}'})
    assert floats.request == {"age": 1e20, "x": {"y": 3e19}} and isinstance(floats.request["age"], float)


@pytest.mark.parametrize("stream", ["inferq:results:x\n", "inferq:results:payments\n"])
def test_a_reply_to_ending_in_a_newline_is_no_result_stream(stream: str) -> None:
    # Python's `$` matches before a final newline; the documented pattern (and the contract) do not.
    asked = _decode(raw_fields("inferq.fraud", "r1", json.dumps({"reply_to": stream})))
    assert asked.result_stream == results_stream("fraud")
    own = _decode({**raw_fields("inferq.fraud", "r2", "{}"), FIELD_REPLY_TO: stream})
    assert own.result_stream == results_stream("fraud")


def test_a_poisoned_envelope_is_named_by_its_headers() -> None:
    # Only the plain task and id fields were read: an envelope without them was dead-lettered unanswered.
    fields = _bytes(_envelope({"task": "inferq.fraud", "id": "p9"},
                              [[], {"request": {"reply_to": "inferq:results:mine"}}, {}]))
    delivery = identity_only("realtime", ENTRY_ID, fields, 4)
    assert delivery.poisoned and delivery.request is None
    assert (delivery.task_id, delivery.kind, delivery.result_stream) == ("p9", "fraud", "inferq:results:mine")
    unreadable = identity_only("realtime", ENTRY_ID, _bytes({FIELD_PAYLOAD: "{not json", "id": "p8",
                                                             "task": "inferq.triage"}), 4)
    assert (unreadable.task_id, unreadable.kind) == ("p8", "triage")


def test_an_unknown_field_is_answered_with_its_name_but_never_logs_it() -> None:
    # The log line of an invalid task carried the field path, which for an unknown field is the
    # producer's own key: any text of the request, of any size.
    from worker.preparing import Preparer

    class NoPublisher:
        signatures = None

        def already_answered(self, task_ids: object) -> set[str]:
            return set()

    emitted: list[object] = []
    key = "patient secret-phi-marker " + "k" * 5000
    delivery = decode_entry("batch", ENTRY_ID, _bytes(raw_fields("inferq.triage", "u9", json.dumps(
        {"tenant": "ed", "note": "x", key: 1}))), 1)
    preparer = Preparer({"triage": object()}, NoPublisher(), emitted.append,  # type: ignore[dict-item, arg-type]
                        lambda *a: None, lambda d: None)
    with structlog.testing.capture_logs() as logs:
        preparer.prepare_all([delivery], 0.0)
    (answer,) = emitted
    assert answer.message.error.code is ErrorCode.UNKNOWN_FIELD and answer.message.error.field == key  # type: ignore[attr-defined]
    assert [entry["event"] for entry in logs] == ["task.invalid"]
    assert "secret-phi-marker" not in repr(logs)


def test_an_unknown_task_with_a_usable_id_is_named_before_its_request_is_read() -> None:
    # Even an unreadable request: the task name is the first thing wrong, and the id can carry an answer.
    broken = _decode({"task": "inferq.triag", "id": "k1", "request": "{not json",
                      FIELD_REPLY_TO: "inferq:results:ed-intake"})
    assert broken.decode_code is ErrorCode.UNKNOWN_TASK and broken.kind is None
    assert broken.unknown_task_kind == "triage"  # the lane's (batch) default kind
    assert broken.unknown_task_stream == "inferq:results:ed-intake"
    looks = decode_entry("batch", ENTRY_ID, _bytes(raw_fields("fraud", "k2", json.dumps(
        {"tenant": "a", "transaction": {}, "reply_to": "inferq:results:switch"}))), 1)
    assert (looks.unknown_task_kind, looks.unknown_task_stream) == ("fraud", "inferq:results:switch")
    missing = _decode({"id": "k3", "request": "{}"})
    assert missing.decode_code is ErrorCode.UNKNOWN_TASK and missing.unknown_task_stream == "inferq:results:triage"
    no_id = _decode({"task": "inferq.triag", "request": "{}"})
    assert no_id.unknown_task_kind is None and no_id.decode_code is ErrorCode.MISSING_FIELD
    known = _decode(raw_fields("inferq.fraud", "k4", "{}"))
    assert known.unknown_task_kind is None and known.unknown_task_stream is None


def test_an_unknown_task_is_answered_invalid_where_its_producer_listens() -> None:
    from worker.outcomes import Answer
    from worker.preparing import Preparer

    class NoPublisher:
        signatures = None

        def already_answered(self, task_ids: object) -> set[str]:
            return set()

    emitted: list[object] = []
    delivery = decode_entry("realtime", ENTRY_ID, _bytes({"task": "inferq.frauds", "id": "u1", "request": "[]",
                                                          FIELD_REPLY_TO: "inferq:results:switch"}), 1)
    preparer = Preparer({}, NoPublisher(), emitted.append, lambda *a: None, lambda d: None)  # type: ignore[arg-type]
    preparer.prepare_all([delivery], 0.0)
    (answer,) = emitted
    assert isinstance(answer, Answer) and answer.stream == "inferq:results:switch"
    assert answer.message.kind == "fraud" and answer.message.status.value == "invalid"
    assert answer.message.error is not None and answer.message.error.code is ErrorCode.UNKNOWN_TASK


def test_a_reply_to_field_that_names_no_result_stream_is_refused() -> None:
    fields = {**raw_fields("inferq.fraud", "r1", json.dumps({"reply_to": "inferq:results:req"})),
              FIELD_REPLY_TO: "inferq:queue:batch"}
    delivery = _decode(fields)
    # Answered `bad_reply_to` on the request's own reply_to, the stream the producer named there.
    assert delivery.decode_code is ErrorCode.BAD_REPLY_TO and delivery.result_stream == "inferq:results:req"
    bytes_field = _decode({**raw_fields("inferq.fraud", "r2", "{}"), FIELD_REPLY_TO: b"\xff"})
    assert bytes_field.decode_code is ErrorCode.BAD_REPLY_TO and bytes_field.result_stream == results_stream("fraud")
    # Another fault of the entry is reported first.
    assert _decode({**raw_fields("inferq.fraud", "r3", "{"), FIELD_REPLY_TO: "x"}).decode_code is ErrorCode.INVALID_JSON


@pytest.mark.parametrize("header", [{"eta": "2026-12-02T10:00:00+00:00"}, {"compression": "application/x-gzip"}])
def test_an_envelope_with_eta_or_compression_is_malformed(header: dict[str, str]) -> None:
    # inferq's transport refuses both before queueing; a stock Celery producer's message is refused here.
    delivery = _decode(_envelope({"task": "inferq.fraud", "id": "e1", **header}, [[], {"request": {}}, {}]))
    assert delivery.decode_code is ErrorCode.MALFORMED and delivery.task_id == "e1"
    assert delivery.result_stream == results_stream("fraud")
