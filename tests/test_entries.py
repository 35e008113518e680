"""worker.entries: lane entries decoded from raw bytes, one field at a time, never raising."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import orjson
import pytest

from contracts import ContractError, ErrorCode
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
