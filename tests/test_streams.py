"""Ingress and publishing primitives against a real Redis."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
import redis

from contracts import ErrorCode, TaskResultMessage, TaskStatus, Timings
from worker.config import Settings
from worker.constants import (
    CONSUMER_GROUP,
    DEADLETTER_STREAM,
    FIELD_PAYLOAD,
    done_key,
    queue_stream,
    results_stream,
)
from worker.errors import Overloaded, UnknownLane
from worker.streams import (
    Delivery,
    Ingress,
    Publisher,
    check_reply_to,
    connect,
    decode_entry,
    enqueue,
    enqueue_many,
    raw_fields,
)

pytestmark = pytest.mark.integration

LIMITS = {"realtime": 1000, "batch": 1000}
FRAUD_REQUEST = {"tenant": "acme"}  # decoding does not validate the contract; the runtime does


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_url=None, claim_idle_ms=200, max_deliveries=2)


@pytest.fixture
def client(redis_client: redis.Redis, redis_url: str) -> Iterator[redis.Redis]:
    conn = connect(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def ingress(client: redis.Redis, settings: Settings) -> Ingress:
    found = Ingress(client, "worker-a", settings)
    found.ensure_groups()
    return found


@pytest.fixture
def publisher(client: redis.Redis, settings: Settings) -> Publisher:
    return Publisher(client, settings)


def _submit(client: redis.Redis, lane: str, task_id: str, task: str = "inferq.fraud") -> str:
    return enqueue(client, lane, raw_fields(task, task_id, json.dumps(FRAUD_REQUEST)), 1000)


def _ok_failed(task_id: str) -> TaskResultMessage:
    # A failed message needs no model output, so these tests stay independent of the engine.
    return TaskResultMessage.failed(
        task_id, "fraud", ErrorCode.MODEL_ERROR, "test", timings=Timings.none(), finished_at=1
    )


def test_fetch_records_pending_atomically(client: redis.Redis, ingress: Ingress) -> None:
    _submit(client, "realtime", "t1")
    [delivery] = ingress.fetch(["realtime", "batch"], 10, None)
    pending = client.xpending_range(queue_stream("realtime"), CONSUMER_GROUP, "-", "+", 10)
    assert [row["message_id"] for row in pending] == [delivery.entry_id]
    assert pending[0]["consumer"] == "worker-a"
    assert (delivery.task_id, delivery.task_name, delivery.request) == ("t1", "inferq.fraud", FRAUD_REQUEST)
    assert delivery.deliveries == 1 and delivery.decode_error is None


def test_one_fetch_takes_many_realtime_first(client: redis.Redis, ingress: Ingress) -> None:
    entries = [("batch", raw_fields("inferq.triage", f"b{i}", "{}")) for i in range(50)]
    entries += [("realtime", raw_fields("inferq.fraud", f"r{i}", "{}")) for i in range(50)]
    enqueue_many(client, entries, LIMITS)
    deliveries = ingress.fetch(["batch", "realtime"], 100, 10)
    assert [d.task_id for d in deliveries] == [f"r{i}" for i in range(50)] + [f"b{i}" for i in range(50)]
    assert ingress.fetch(["batch", "realtime"], 100, None) == []


def test_fetch_blocks_until_an_entry_or_timeout(ingress: Ingress) -> None:
    started = time.monotonic()
    assert ingress.fetch(["realtime"], 10, 50) == []
    assert time.monotonic() - started >= 0.04


def test_fetch_recreates_a_deleted_lane(client: redis.Redis, ingress: Ingress) -> None:
    client.delete(queue_stream("realtime"))
    assert ingress.fetch(["realtime"], 10, None) == []
    _submit(client, "realtime", "t1")
    assert [d.task_id for d in ingress.fetch(["realtime"], 10, None)] == ["t1"]


def test_claim_after_idle_counts_deliveries(
    client: redis.Redis, settings: Settings, ingress: Ingress
) -> None:
    _submit(client, "realtime", "t1")
    ingress.fetch(["realtime"], 10, None)
    other = Ingress(client, "worker-b", settings)
    assert other.claim_stale(10) == []  # not idle long enough yet
    time.sleep(0.25)
    [claimed] = other.claim_stale(10)
    assert (claimed.task_id, claimed.deliveries) == ("t1", 2)
    time.sleep(0.25)
    [again] = Ingress(client, "worker-c", settings).claim_stale(10)
    assert again.deliveries == 3
    pending = client.xpending_range(queue_stream("realtime"), CONSUMER_GROUP, "-", "+", 10)
    assert pending[0]["consumer"] == "worker-c"


def test_claim_acks_away_deleted_entries(client: redis.Redis, settings: Settings, ingress: Ingress) -> None:
    entry_id = _submit(client, "batch", "t1")
    ingress.fetch(["batch"], 10, None)
    client.xdel(queue_stream("batch"), entry_id)
    time.sleep(0.25)
    assert Ingress(client, "worker-b", settings).claim_stale(10) == []
    assert client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 0


def test_publish_exactly_once(client: redis.Redis, ingress: Ingress, publisher: Publisher) -> None:
    _submit(client, "realtime", "dup")
    _submit(client, "realtime", "dup")  # the same task submitted twice
    first, second = ingress.fetch(["realtime"], 10, None)
    stream = results_stream("fraud")
    assert publisher.publish(first, _ok_failed("dup"), stream) is True
    assert publisher.already_answered(["dup", "other"]) == {"dup"}
    assert publisher.publish(second, _ok_failed("dup").model_dump_json(), stream) is False
    entries = client.xrange(stream)
    assert len(entries) == 1
    assert entries[0][1]["task_id"] == "dup" and entries[0][1]["status"] == "failed"
    assert TaskResultMessage.model_validate_json(entries[0][1]["message"]).task_id == "dup"
    # Both lane entries are acked and gone, duplicate included.
    assert client.xpending(queue_stream("realtime"), CONSUMER_GROUP)["pending"] == 0
    assert client.xlen(queue_stream("realtime")) == 0
    assert 0 < client.ttl(done_key("dup")) <= Settings().result_ttl_s


def test_publish_same_delivery_twice(client: redis.Redis, ingress: Ingress, publisher: Publisher) -> None:
    _submit(client, "batch", "t1")
    [delivery] = ingress.fetch(["batch"], 10, None)
    results = publisher.publish_many([(delivery, _ok_failed("t1"), results_stream("fraud"))] * 2)
    assert results == [True, False]
    assert client.xlen(results_stream("fraud")) == 1


def test_publish_refuses_foreign_stream_and_wrong_task(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    _submit(client, "batch", "t1")
    [delivery] = ingress.fetch(["batch"], 10, None)
    with pytest.raises(ValueError, match="outside"):
        publisher.publish(delivery, _ok_failed("t1"), "somewhere:else")
    with pytest.raises(ValueError, match="not for the delivery"):
        publisher.publish(delivery, _ok_failed("t2"), results_stream("fraud"))
    assert client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 1


def test_deadletter_keeps_raw_and_answers_once(
    client: redis.Redis, settings: Settings, ingress: Ingress, publisher: Publisher
) -> None:
    reply_to = "inferq:results:acme"
    fields = raw_fields("inferq.fraud", "poison", json.dumps({"tenant": "acme", "reply_to": reply_to}))
    enqueue(client, "realtime", fields, 10)
    ingress.fetch(["realtime"], 10, None)
    time.sleep(0.25)
    [delivery] = Ingress(client, "worker-b", settings).claim_stale(10)
    assert publisher.deadletter(delivery, ErrorCode.MODEL_ERROR, "forward pass crashed") is True
    [(_, dead)] = client.xrange(DEADLETTER_STREAM)
    assert dead["task_id"] == "poison" and dead["task"] == "inferq.fraud" and dead["lane"] == "realtime"
    assert dead["deliveries"] == "2" and dead["error_code"] == "model_error"
    assert dead["error_message"] == "forward pass crashed"
    assert json.loads(dead["raw"]) == fields
    [(_, posted)] = client.xrange(reply_to)
    message = TaskResultMessage.model_validate_json(posted["message"])
    assert message.status is TaskStatus.FAILED and message.error is not None
    assert message.error.code is ErrorCode.TOO_MANY_DELIVERIES
    assert client.xlen(queue_stream("realtime")) == 0
    assert client.xpending(queue_stream("realtime"), CONSUMER_GROUP)["pending"] == 0


def test_deadletter_of_undecodable_entry_without_id(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    client.xadd(queue_stream("batch"), {FIELD_PAYLOAD: "{not json"})
    [delivery] = ingress.fetch(["batch"], 10, None)
    assert delivery.task_id is None and delivery.decode_code is ErrorCode.INVALID_JSON
    assert delivery.result_stream is None
    assert publisher.deadletter(delivery, ErrorCode.INVALID_JSON, delivery.decode_error or "") is False
    [(_, dead)] = client.xrange(DEADLETTER_STREAM)
    assert json.loads(dead["raw"]) == {FIELD_PAYLOAD: "{not json"}
    assert client.xlen(queue_stream("batch")) == 0


def test_requeue_hands_tasks_to_another_worker_at_once(
    client: redis.Redis, settings: Settings, ingress: Ingress, publisher: Publisher
) -> None:
    first_id = _submit(client, "realtime", "t1")
    [delivery] = ingress.fetch(["realtime"], 10, None)
    publisher.requeue([delivery])
    [taken] = Ingress(client, "worker-b", settings).fetch(["realtime"], 10, None)
    assert taken.task_id == "t1" and taken.entry_id != first_id
    assert taken.enqueued_ms == delivery.enqueued_ms
    assert taken.deliveries == 1  # the unstarted delivery is not counted
    assert client.xlen(queue_stream("realtime")) == 1
    assert client.xpending(queue_stream("realtime"), CONSUMER_GROUP)["consumers"][0]["name"] == "worker-b"


def test_enqueue_refuses_over_limit(client: redis.Redis, ingress: Ingress) -> None:
    for i in range(3):
        enqueue(client, "batch", raw_fields("inferq.triage", f"t{i}", "{}"), 3)
    with pytest.raises(Overloaded) as refused:
        enqueue(client, "batch", raw_fields("inferq.triage", "t3", "{}"), 3)
    assert (refused.value.lane, refused.value.limit) == ("batch", 3)
    # In-flight tasks count too: fetching does not make room, publishing does.
    ingress.fetch(["batch"], 10, None)
    with pytest.raises(Overloaded):
        enqueue(client, "batch", raw_fields("inferq.triage", "t3", "{}"), 3)
    assert client.xlen(queue_stream("batch")) == 3


def test_enqueue_many_is_all_or_nothing(client: redis.Redis) -> None:
    entries = [("realtime", raw_fields("inferq.fraud", f"t{i}", "{}")) for i in range(3)]
    with pytest.raises(Overloaded):
        enqueue_many(client, entries, {"realtime": 2})
    assert client.xlen(queue_stream("realtime")) == 0
    with pytest.raises(UnknownLane):
        enqueue(client, "elsewhere", entries[0][1], 10)


def test_reply_to_outside_results_refused() -> None:
    from contracts import ContractError

    check_reply_to({"reply_to": "inferq:results:mine"})
    for bad in ("inferq:queue:realtime", "inferq:results:", "x", 5):
        with pytest.raises(ContractError) as refused:
            check_reply_to({"reply_to": bad})
        assert refused.value.code is ErrorCode.BAD_REPLY_TO


def _decode(fields: dict[str, str]) -> Delivery:
    return decode_entry("batch", "1700000000000-0", fields, 1)


def _envelope(headers: dict[str, object], body: object, **extra: object) -> dict[str, str]:
    message = {"body": json.dumps(body), "content-type": "application/json", "content-encoding": "utf-8",
               "headers": headers, "properties": {}, **extra}
    return {FIELD_PAYLOAD: json.dumps(message)}


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
    assert plain.enqueued_ms == 1_700_000_000_000


@pytest.mark.parametrize(
    ("fields", "code", "has_id"),
    [
        ({"task": "inferq.fraud", "id": "a", "request": "{"}, ErrorCode.INVALID_JSON, True),
        ({"task": "inferq.fraud", "id": "a", "request": "[1]"}, ErrorCode.WRONG_TYPE, True),
        ({"task": "inferq.fraud", "id": "a"}, ErrorCode.MISSING_FIELD, True),
        ({"task": "inferq.other", "id": "a", "request": "{}"}, ErrorCode.UNKNOWN_TASK, True),
        ({"task": "inferq.fraud", "request": "{}"}, ErrorCode.MISSING_FIELD, False),
        ({"task": "inferq.fraud", "id": "x" * 201, "request": "{}"}, ErrorCode.MALFORMED, False),
        (_envelope({"task": "inferq.fraud", "id": "a"}, [[], {}, {}]), ErrorCode.MISSING_FIELD, True),
        (_envelope({"task": "inferq.fraud", "id": "a"}, {"args": []}), ErrorCode.MALFORMED, True),
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
    assert delivery.raw == fields


def test_result_stream_choice() -> None:
    good = _decode(raw_fields("inferq.fraud", "a", json.dumps({"reply_to": "inferq:results:x"})))
    assert good.result_stream == "inferq:results:x"
    bad = _decode(raw_fields("inferq.fraud", "a", json.dumps({"reply_to": "inferq:queue:batch"})))
    assert bad.result_stream == results_stream("fraud")


def test_fetch_refuses_unknown_lane(ingress: Ingress) -> None:
    with pytest.raises(UnknownLane):
        ingress.fetch(["realtime", "elsewhere"], 10, None)
    assert ingress.fetch([], 10, None) == []


def test_touch_keeps_live_work_from_being_claimed(client: redis.Redis, ingress: Ingress) -> None:
    # Wider windows than the other tests: they must hold on a busy machine.
    patient = Settings(redis_url=None, claim_idle_ms=300)
    _submit(client, "realtime", "t1")
    _submit(client, "batch", "t2")
    held = ingress.fetch(["realtime", "batch"], 10, None)
    other = Ingress(client, "worker-b", patient)
    time.sleep(0.2)
    assert ingress.touch(held) == 2
    time.sleep(0.15)  # 350 ms since the fetch, 150 ms since the touch
    assert other.claim_stale(10) == []
    time.sleep(0.2)
    assert {d.task_id for d in other.claim_stale(10)} == {"t1", "t2"}
    # Once taken over, the first worker's touch neither steals the tasks back nor counts them.
    assert ingress.touch(held) == 0
    pending = client.xpending_range(queue_stream("realtime"), CONSUMER_GROUP, "-", "+", 10)
    assert pending[0]["consumer"] == "worker-b" and pending[0]["times_delivered"] == 2
