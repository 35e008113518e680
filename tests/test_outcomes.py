"""worker.outcomes and the FINISH/REQUEUE scripts against a real Redis: every outcome in one atomic step."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from contracts import ErrorCode, TaskResultMessage, TaskStatus, Timings
from contracts.wire import CLIENT_RESULTS_PREFIX, DEADLETTER_STREAM, queue_stream, results_stream
from worker import embedded
from worker.client import raw_fields
from worker.config import Settings
from worker.connection import redis_client as connect
from worker.entries import Delivery
from worker.errors import ServerFull
from worker.ingress import Ingress
from worker.keys import CONSUMER_GROUP, FIELD_ORIGIN, FIELD_PRIOR_DELIVERIES, done_key
from worker.outcomes import AckOnly, Answer, DeadLetter, Publisher
from worker.transport import enqueue

pytestmark = pytest.mark.integration

FRAUD_REQUEST = {"tenant": "acme"}


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_url=None, claim_idle_ms=200, max_deliveries=2, result_ttl_s=600)


def _submit(client: redis.Redis, lane: str, task_id: str, request: dict[str, object] | None = None) -> str:
    return enqueue(client, lane, raw_fields("inferq.fraud", task_id, json.dumps(request or FRAUD_REQUEST)), 1000)


def _failed(task_id: str) -> TaskResultMessage:
    # A failed message needs no model output, so these tests stay independent of the engine.
    return TaskResultMessage.failed(task_id, "fraud", ErrorCode.MODEL_ERROR, "test", timings=Timings.none(),
                                    finished_at=1)


def _gone(client: redis.Redis, delivery: Delivery) -> bool:
    """The lane entry is deleted and no longer pending for anyone."""
    stream = queue_stream(delivery.lane)
    pending = client.xpending_range(stream, CONSUMER_GROUP, delivery.entry_id, delivery.entry_id, 1)
    return not client.xrange(stream, delivery.entry_id, delivery.entry_id) and not pending


def _results(client: redis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(stream)]


# ---------------------------------------------------------------------------------------------
# FINISH, outcome by outcome


def test_answer_posts_marks_acks_and_deletes(client: redis.Redis, ingress: Ingress, publisher: Publisher) -> None:
    _submit(client, "realtime", "t1")
    [delivery] = ingress.fetch(["realtime"], 10, None)
    assert publisher.finish(Answer(delivery, _failed("t1"), results_stream("fraud"))) is True
    [posted] = _results(client, results_stream("fraud"))
    assert posted[b"task_id"] == b"t1" and posted[b"status"] == b"failed"
    assert TaskResultMessage.model_validate_json(posted[b"message"]).task_id == "t1"
    assert client.get(done_key("t1")) == results_stream("fraud").encode()
    assert 0 < client.ttl(done_key("t1")) <= 600
    assert _gone(client, delivery) and client.xlen(queue_stream("realtime")) == 0
    assert publisher.already_answered(["t1", "other", "t1"]) == {"t1"}
    assert publisher.already_answered([]) == set()
    assert client.ttl(results_stream("fraud")) == -1, "shared result streams never expire"


def test_ack_only_acks_and_deletes_and_leaves_the_marker(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    _submit(client, "batch", "dup")
    _submit(client, "batch", "dup")  # the same task submitted twice
    first, second = ingress.fetch(["batch"], 10, None)
    assert publisher.finish(Answer(first, _failed("dup"), results_stream("fraud"))) is True
    assert publisher.finish(AckOnly(second)) is False
    assert _gone(client, first) and _gone(client, second)
    assert client.exists(done_key("dup")) and len(_results(client, results_stream("fraud"))) == 1
    assert client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 0


def test_a_second_finish_for_the_same_task_id_is_a_no_op(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    _submit(client, "realtime", "dup")
    _submit(client, "realtime", "dup")
    first, second = ingress.fetch(["realtime"], 10, None)
    stream = results_stream("fraud")
    assert publisher.finish(Answer(first, _failed("dup"), stream)) is True
    late = TaskResultMessage.failed("dup", "fraud", ErrorCode.INTERNAL_ERROR, "late", timings=Timings.none(),
                                    finished_at=2)
    assert publisher.finish(Answer(second, late, "inferq:results:elsewhere")) is False
    [posted] = _results(client, stream)
    assert TaskResultMessage.model_validate_json(posted[b"message"]).error.code is ErrorCode.MODEL_ERROR  # type: ignore[union-attr]
    assert not client.exists("inferq:results:elsewhere")
    # The duplicate's lane entry is acked and gone all the same.
    assert _gone(client, first) and _gone(client, second)
    assert client.xlen(queue_stream("realtime")) == 0


def test_the_same_delivery_finished_twice_in_one_round_trip(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    _submit(client, "batch", "t1")
    [delivery] = ingress.fetch(["batch"], 10, None)
    answer = Answer(delivery, _failed("t1"), results_stream("fraud"))
    assert publisher.finish_many([answer, answer, AckOnly(delivery)]) == [True, False, False]
    assert client.xlen(results_stream("fraud")) == 1 and _gone(client, delivery)
    assert publisher.finish_many([]) == []


def test_finish_refuses_a_foreign_stream_and_a_wrong_task(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    _submit(client, "batch", "t1")
    [delivery] = ingress.fetch(["batch"], 10, None)
    with pytest.raises(ValueError, match="outside"):
        publisher.finish(Answer(delivery, _failed("t1"), "somewhere:else"))
    with pytest.raises(ValueError, match="not for delivery"):
        publisher.finish(Answer(delivery, _failed("t2"), results_stream("fraud")))
    assert client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 1
    assert not client.exists(done_key("t1"))


def test_dead_letter_keeps_raw_answers_failed_and_acks(
    client: redis.Redis, settings: Settings, ingress: Ingress, publisher: Publisher
) -> None:
    reply_to = "inferq:results:acme"
    request = json.dumps({"tenant": "acme", "reply_to": reply_to})
    _submit(client, "realtime", "poison", json.loads(request))
    ingress.fetch(["realtime"], 10, None)
    time.sleep(0.25)
    [delivery] = Ingress(client, "worker-b", settings).claim_stale(10)
    assert delivery.deliveries == 2 and not delivery.poisoned
    assert publisher.finish(DeadLetter(delivery, ErrorCode.MODEL_ERROR, "forward pass crashed")) is True
    [dead] = _results(client, DEADLETTER_STREAM)
    assert dead[b"task_id"] == b"poison" and dead[b"task"] == b"inferq.fraud" and dead[b"lane"] == b"realtime"
    assert dead[b"entry_id"] == delivery.entry_id.encode() and dead[b"deliveries"] == b"2"
    assert dead[b"error_code"] == b"model_error" and dead[b"error_message"] == b"forward pass crashed"
    assert dict(json.loads(dead[b"raw"])) == raw_fields("inferq.fraud", "poison", request)
    assert abs(int(dead[b"failed_ms"]) - time.time() * 1000) < 60_000
    [posted] = _results(client, reply_to)
    message = TaskResultMessage.model_validate_json(posted[b"message"])
    assert message.status is TaskStatus.FAILED and message.error is not None
    assert message.error.code is ErrorCode.MODEL_ERROR and DEADLETTER_STREAM in message.error.message
    assert client.exists(done_key("poison")) and _gone(client, delivery)


def test_poisoned_entry_is_dead_lettered_and_answered_where_its_producer_waits(
    client: redis.Redis, settings: Settings, ingress: Ingress, publisher: Publisher
) -> None:
    reply_to = CLIENT_RESULTS_PREFIX + "abc"
    entry_id = client.xadd(queue_stream("realtime"), {
        "task": "inferq.fraud", "id": "p1",
        "request": json.dumps({"tenant": "acme", "reply_to": reply_to}),
    }).decode()
    # Two workers took it and died; the claim below is its third delivery.
    client.xreadgroup(CONSUMER_GROUP, "crashed-0", {queue_stream("realtime"): ">"})
    client.xclaim(queue_stream("realtime"), CONSUMER_GROUP, "crashed-1", 0, [entry_id])
    time.sleep(0.25)
    [delivery] = ingress.claim_stale(10)
    assert delivery.poisoned and delivery.deliveries == 3 and delivery.request is None
    assert publisher.finish(DeadLetter(delivery, ErrorCode.TOO_MANY_DELIVERIES, "too often")) is True
    [posted] = _results(client, reply_to)
    message = TaskResultMessage.model_validate_json(posted[b"message"])
    assert message.error is not None and message.error.code is ErrorCode.TOO_MANY_DELIVERIES
    assert "delivered 3 times" in message.error.message
    assert 0 < client.ttl(reply_to) <= 600, "a client's reply stream expires with its results"
    assert client.xlen(DEADLETTER_STREAM) == 1 and _gone(client, delivery)


def test_dead_letter_of_an_entry_without_id(client: redis.Redis, ingress: Ingress, publisher: Publisher) -> None:
    client.xadd(queue_stream("batch"), {"payload": "{not json"})
    [delivery] = ingress.fetch(["batch"], 10, None)
    assert delivery.task_id is None and delivery.decode_code is ErrorCode.INVALID_JSON
    assert delivery.result_stream is None
    assert publisher.finish(DeadLetter(delivery, ErrorCode.INVALID_JSON, delivery.decode_error or "")) is False
    [dead] = _results(client, DEADLETTER_STREAM)
    assert json.loads(dead[b"raw"]) == [["payload", "{not json"]]
    assert dead[b"task_id"] == b"" and dead[b"error_code"] == b"invalid_json"
    assert client.xlen(queue_stream("batch")) == 0 and _gone(client, delivery)
    assert not client.keys("inferq:done:*") and not client.keys("inferq:results:*")


def test_a_result_stream_of_another_type_dead_letters_instead_of_wedging(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    # A producer's reply_to names a key that is no stream: its XADD could never succeed.
    client.set("inferq:results:taken", "a string")
    _submit(client, "batch", "w1", {"tenant": "acme", "reply_to": "inferq:results:taken"})
    _submit(client, "batch", "ok1")
    wedged, fine = ingress.fetch(["batch"], 10, None)
    assert wedged.result_stream == "inferq:results:taken"
    posted = publisher.finish_many([Answer(wedged, _failed("w1"), "inferq:results:taken"),
                                    Answer(fine, _failed("ok1"), results_stream("fraud"))])
    assert posted == [False, True]
    assert client.get("inferq:results:taken") == b"a string"
    [dead] = _results(client, DEADLETTER_STREAM)
    assert dead[b"task_id"] == b"w1" and dead[b"error_code"] == b"bad_reply_to"
    assert not client.exists(done_key("w1")), "no marker without a result"
    assert _gone(client, wedged) and _gone(client, fine)


def test_result_streams_are_capped(client: redis.Redis, ingress: Ingress) -> None:
    capped = Publisher(client, Settings(redis_url=None, result_stream_maxlen=10))
    for i in range(300):
        _submit(client, "batch", f"c{i}")
    deliveries = ingress.fetch(["batch"], 300, None)
    capped.finish_many([Answer(d, _failed(str(d.task_id)), results_stream("fraud")) for d in deliveries])
    assert client.xlen(results_stream("fraud")) < 300  # MAXLEN ~ trims whole nodes
    assert client.xlen(queue_stream("batch")) == 0


# ---------------------------------------------------------------------------------------------
# REQUEUE


def test_requeue_hands_tasks_to_another_worker_at_once(
    client: redis.Redis, settings: Settings, ingress: Ingress, publisher: Publisher
) -> None:
    first_id = _submit(client, "realtime", "t1")
    [delivery] = ingress.fetch(["realtime"], 10, None)
    [copy_id] = publisher.requeue([delivery])
    [taken] = Ingress(client, "worker-b", settings).fetch(["realtime"], 10, None)
    assert taken.task_id == "t1" and taken.entry_id == copy_id != first_id
    assert taken.enqueued_ms == delivery.enqueued_ms
    assert taken.deliveries == 1  # the unstarted delivery is not counted
    assert taken.request == FRAUD_REQUEST
    assert taken.raw[FIELD_ORIGIN.encode()] == first_id.encode()
    assert taken.raw[FIELD_PRIOR_DELIVERIES.encode()] == b"0"
    assert client.xlen(queue_stream("realtime")) == 1
    assert client.xpending(queue_stream("realtime"), CONSUMER_GROUP)["consumers"][0]["name"] == b"worker-b"
    assert publisher.requeue([]) == []


def test_a_copy_requeued_again_keeps_its_origin_and_counts(
    client: redis.Redis, settings: Settings, ingress: Ingress, publisher: Publisher
) -> None:
    first_id = _submit(client, "batch", "t1")
    ingress.fetch(["batch"], 10, None)
    time.sleep(0.25)
    [claimed] = Ingress(client, "worker-b", settings).claim_stale(10)  # its first worker died
    assert claimed.deliveries == 2
    publisher.requeue([claimed])
    [copy] = ingress.fetch(["batch"], 10, None)
    assert copy.deliveries == 2 and copy.enqueued_ms == claimed.enqueued_ms
    publisher.requeue([copy])
    [again] = ingress.fetch(["batch"], 10, None)
    assert again.raw[FIELD_ORIGIN.encode()] == first_id.encode() and again.deliveries == 2
    assert client.xlen(queue_stream("batch")) == 1
    assert client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 1


# ---------------------------------------------------------------------------------------------
# A server over maxmemory: finishing frees memory and must still run; enqueueing must not


def _server_binary() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


@pytest.fixture
def full_server(tmp_path: Path) -> Iterator[redis.Redis]:
    """A private server (its maxmemory is changed, so not the shared test server)."""
    state = tmp_path / "oom"
    server = embedded.start(state, binary=_server_binary())
    conn = connect(server.url, Settings(redis_url=server.url))
    try:
        yield conn
    finally:
        conn.close()
        embedded.stop(state)


def test_finish_and_requeue_run_on_a_full_server_and_enqueue_is_refused(full_server: redis.Redis) -> None:
    client = full_server
    settings = Settings(redis_url=None)
    ingress = Ingress(client, "worker-a", settings)
    ingress.ensure_groups()
    big = json.dumps({"tenant": "acme", "pad": "x" * 20_000})
    for i in range(4):
        enqueue(client, "realtime", raw_fields("inferq.fraud", f"m{i}", big), 1000)
    deliveries = ingress.fetch(["realtime"], 10, None)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 1)
    with pytest.raises(redis.OutOfMemoryError):
        client.set("inferq:probe", "1")
    with pytest.raises(ServerFull):
        enqueue(client, "realtime", raw_fields("inferq.fraud", "late", "{}"), 1000)
    publisher = Publisher(client, settings)
    answers = [Answer(d, _failed(str(d.task_id)), results_stream("fraud")) for d in deliveries[:2]]
    posted = publisher.finish_many(answers)
    assert posted == [True, True]
    assert publisher.finish(DeadLetter(deliveries[2], ErrorCode.MODEL_ERROR, "crashed")) is True
    assert len(publisher.requeue([deliveries[3]])) == 1
    assert client.xlen(results_stream("fraud")) == 3 and client.xlen(DEADLETTER_STREAM) == 1
    assert client.xlen(queue_stream("realtime")) == 1
    assert client.xpending(queue_stream("realtime"), CONSUMER_GROUP)["pending"] == 0


def test_a_requeue_retried_after_it_applied_adds_no_second_copy(redis_url: str) -> None:
    import redis as redis_lib

    from worker.keys import CONSUMER_GROUP, Scripts, queue_stream

    client = redis_lib.Redis.from_url(redis_url)
    lane = queue_stream("batch")
    client.xgroup_create(lane, CONSUMER_GROUP, id="0", mkstream=True)
    entry = client.xadd(lane, {"task": "inferq.triage", "id": "rq-1", "request": "{}"}).decode()
    client.xreadgroup(CONSUMER_GROUP, "w1", {lane: ">"}, count=1)
    scripts = Scripts(client)
    for _attempt in range(2):  # the second as after a dropped connection
        pipe = client.pipeline(transaction=False)
        scripts.requeue(pipe, lane="batch", entry_id=entry, fields=["task", "inferq.triage", "id", "rq-1"])
        pipe.execute()
    assert client.xlen(lane) == 1  # one copy, the original gone
    client.flushdb()


def test_a_deadletter_key_of_another_type_writes_nothing_and_leaves_the_entry_pending(redis_url: str) -> None:
    import redis as redis_lib

    from worker.keys import CONSUMER_GROUP, DEADLETTER_NOT_A_STREAM, DEADLETTER_STREAM, Scripts, queue_stream

    client = redis_lib.Redis.from_url(redis_url)
    lane = queue_stream("batch")
    client.xgroup_create(lane, CONSUMER_GROUP, id="0", mkstream=True)
    entry = client.xadd(lane, {"task": "inferq.triage", "id": "dl-1"}).decode()
    client.xreadgroup(CONSUMER_GROUP, "w1", {lane: ">"}, count=1)
    client.set(DEADLETTER_STREAM, "not a stream")
    pipe = client.pipeline(transaction=False)
    Scripts(client).finish(pipe, lane="batch", entry_id=entry, task_id="dl-1", result=None, status="failed",
                           result_stream=None, result_ttl_s=60, maxlen=1000,
                           deadletter=["task_id", "dl-1", "error_code", "internal_error"])
    assert pipe.execute() == [DEADLETTER_NOT_A_STREAM]
    assert client.xpending(lane, CONSUMER_GROUP)["pending"] == 1
    assert not client.exists("inferq:done:dl-1")
    client.flushdb()
