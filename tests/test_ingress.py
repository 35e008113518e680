"""worker.ingress and the lane side of worker.keys against a real Redis: fetch, take over, touch, enqueue."""

from __future__ import annotations

import json
import time

import pytest
import redis

from contracts import ErrorCode
from contracts.wire import LANES, queue_stream
from worker.client import raw_fields
from worker.config import Settings
from worker.errors import Overloaded, UnknownLane
from worker.ingress import HEARTBEAT_TTL_S, Ingress, ensure_group
from worker.keys import (
    _ENQUEUE,
    _FINISH,
    _REQUEUE,
    _TOUCH,
    CONSUMER_GROUP,
    FIELD_PRIOR_DELIVERIES,
    EnqueueCall,
    enqueue_script,
    worker_key,
)
from worker.transport import enqueue

pytestmark = pytest.mark.integration

LIMITS = {"realtime": 1000, "batch": 1000}
FRAUD_REQUEST = {"tenant": "acme"}  # decoding does not validate the contract; the preparer does


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_url=None, claim_idle_ms=200, max_deliveries=2)


def _submit(client: redis.Redis, lane: str, task_id: str, task: str = "inferq.fraud") -> str:
    return enqueue(client, lane, raw_fields(task, task_id, json.dumps(FRAUD_REQUEST)), 1000)


def _pending(client: redis.Redis, lane: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = client.xpending_range(queue_stream(lane), CONSUMER_GROUP, "-", "+", 100)
    return rows


# ---------------------------------------------------------------------------------------------
# Scripts on this server


def test_every_script_loads_with_its_shebang_flags(client: redis.Redis) -> None:
    # Redis 7 parses a shebang when it compiles a script: a flag it does not know is refused.
    with pytest.raises(redis.ResponseError, match="flag"):
        client.script_load("#!lua flags=no-such-flag\nreturn 1")
    for script, flags in ((_ENQUEUE, "#!lua\n"), (_FINISH, "#!lua flags=allow-oom\n"),
                          (_REQUEUE, "#!lua flags=allow-oom\n"), (_TOUCH, "#!lua flags=allow-oom\n")):
        assert script.startswith(flags)
        sha = client.script_load(script)
        assert client.script_exists(sha) == [True]


# ---------------------------------------------------------------------------------------------
# Fetching


def test_fetch_records_pending_atomically(client: redis.Redis, ingress: Ingress) -> None:
    _submit(client, "realtime", "t1")
    [delivery] = ingress.fetch(["realtime", "batch"], 10, None)
    pending = _pending(client, "realtime")
    assert [row["message_id"].decode() for row in pending] == [delivery.entry_id]  # type: ignore[attr-defined]
    assert pending[0]["consumer"] == b"worker-a"
    assert (delivery.task_id, delivery.task_name, delivery.request) == ("t1", "inferq.fraud", FRAUD_REQUEST)
    assert delivery.deliveries == 1 and delivery.decode_error is None and delivery.lane == "realtime"
    assert not delivery.poisoned


def test_one_fetch_takes_many_realtime_first(client: redis.Redis, ingress: Ingress) -> None:
    entries = [("batch", raw_fields("inferq.triage", f"b{i}", "{}")) for i in range(50)]
    entries += [("realtime", raw_fields("inferq.fraud", f"r{i}", "{}")) for i in range(50)]
    call = EnqueueCall(entries, LIMITS)
    assert call.full_lane(enqueue_script(client)(keys=call.keys, args=call.args)) is None
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


def test_fetch_reads_only_lanes(client: redis.Redis, ingress: Ingress) -> None:
    _submit(client, "batch", "t1")
    assert ingress.fetch([], 10, None) == []
    assert [d.task_id for d in ingress.fetch(["batch", "elsewhere"], 10, None)] == ["t1"]
    assert not client.exists(queue_stream("elsewhere"))


def test_fetch_decodes_bad_entries_without_raising(client: redis.Redis, ingress: Ingress) -> None:
    client.xadd(queue_stream("batch"), {"task": "inferq.triage", "id": "u1", "request": b'{"note": "\xff"}'})
    client.xadd(queue_stream("batch"), {"task": "inferq.triage", "id": b"\xff", "request": b"{}"})
    client.xadd(queue_stream("batch"), {"payload": b"\x00\x01"})
    unicode, no_id, junk = ingress.fetch(["batch"], 10, None)
    assert unicode.task_id == "u1" and unicode.decode_code is ErrorCode.INVALID_UNICODE
    assert no_id.task_id is None and no_id.decode_error
    assert junk.task_id is None and junk.decode_error
    assert len(_pending(client, "batch")) == 3


def test_ensure_group_is_idempotent(client: redis.Redis) -> None:
    ensure_group(client, "batch")
    ensure_group(client, "batch")
    assert [g["name"] for g in client.xinfo_groups(queue_stream("batch"))] == [CONSUMER_GROUP.encode()]
    client.set("inferq:queue:realtime", "not a stream")
    with pytest.raises(redis.ResponseError):
        ensure_group(client, "realtime")


# ---------------------------------------------------------------------------------------------
# Taking over


def test_claim_after_idle_counts_deliveries(client: redis.Redis, ingress: Ingress) -> None:
    roomy = Settings(redis_url=None, claim_idle_ms=200, max_deliveries=5)
    _submit(client, "realtime", "t1")
    ingress.fetch(["realtime"], 10, None)
    other = Ingress(client, "worker-b", roomy)
    assert other.claim_stale(10) == []  # not idle long enough yet
    time.sleep(0.25)
    [claimed] = other.claim_stale(10)
    assert (claimed.task_id, claimed.deliveries, claimed.poisoned) == ("t1", 2, False)
    assert claimed.request == FRAUD_REQUEST
    time.sleep(0.25)
    [again] = Ingress(client, "worker-c", roomy).claim_stale(10)
    assert again.deliveries == 3
    assert _pending(client, "realtime")[0]["consumer"] == b"worker-c"


def test_claim_acks_away_deleted_entries(client: redis.Redis, settings: Settings, ingress: Ingress) -> None:
    entry_id = _submit(client, "batch", "t1")
    ingress.fetch(["batch"], 10, None)
    client.xdel(queue_stream("batch"), entry_id)
    time.sleep(0.25)
    assert Ingress(client, "worker-b", settings).claim_stale(10) == []
    assert client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 0


def test_claim_of_a_vanished_lane_is_not_an_error(client: redis.Redis, settings: Settings, ingress: Ingress) -> None:
    client.delete(queue_stream("batch"))
    assert Ingress(client, "worker-b", settings).claim_stale(10) == []


def test_claim_over_the_delivery_limit_poisons_before_decoding(
    client: redis.Redis, settings: Settings, ingress: Ingress
) -> None:
    # max_deliveries=2: the third hand-out marks it poisoned, whatever its request holds.
    reply_to = "inferq:results:acme"
    entry_id = client.xadd(queue_stream("realtime"), {
        "task": "inferq.fraud", "id": "poison", "reply_to": reply_to, "request": b"{not json at all \xff",
    }).decode()
    ingress.fetch(["realtime"], 10, None)
    time.sleep(0.25)
    [second] = Ingress(client, "worker-b", settings).claim_stale(10)
    assert second.deliveries == 2 and not second.poisoned and second.decode_code is not None
    time.sleep(0.25)
    [third] = Ingress(client, "worker-c", settings).claim_stale(10)
    assert third.entry_id == entry_id and third.deliveries == 3 and third.poisoned
    assert third.request is None and third.decode_error is None and third.decode_code is None
    assert (third.task_id, third.kind, third.result_stream) == ("poison", "fraud", reply_to)


def test_prior_deliveries_of_a_copy_count_towards_the_limit(
    client: redis.Redis, settings: Settings, ingress: Ingress
) -> None:
    fields = {**raw_fields("inferq.fraud", "copy", "{}"), FIELD_PRIOR_DELIVERIES: "2"}
    client.xadd(queue_stream("batch"), fields)
    [delivery] = ingress.fetch(["batch"], 10, None)
    assert delivery.deliveries == 3 and delivery.poisoned and delivery.task_id == "copy"


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
    pending = _pending(client, "realtime")
    assert pending[0]["consumer"] == b"worker-b" and pending[0]["times_delivered"] == 2
    assert ingress.touch([]) == 0


# ---------------------------------------------------------------------------------------------
# Consumers and heartbeats


def test_heartbeat_and_leave(client: redis.Redis, settings: Settings, ingress: Ingress) -> None:
    _submit(client, "batch", "t1")
    depths = ingress.beat(["triage"], True, 1_000.0)
    assert depths == {"realtime": 0, "batch": 1}
    beat = client.hgetall(worker_key("worker-a"))
    assert beat[b"ready"] == b"1" and beat[b"kinds"] == b"triage" and beat[b"started_ms"] == b"1000"
    assert beat[b"lanes"] == ",".join(settings.lanes).encode()
    assert 0 < client.ttl(worker_key("worker-a")) <= HEARTBEAT_TTL_S
    ingress.leave()
    assert not client.exists(worker_key("worker-a"))


def test_remove_departed_drops_only_idle_empty_consumers_without_heartbeat(
    client: redis.Redis, settings: Settings, ingress: Ingress
) -> None:
    for name in ("gone", "alive", "holding"):
        _submit(client, "batch", name)
        [delivery] = Ingress(client, name, settings).fetch(list(LANES), 10, None)  # registers the consumer
        if name != "holding":
            client.xack(queue_stream("batch"), CONSUMER_GROUP, delivery.entry_id)
    Ingress(client, "alive", settings).beat([], True, 0.0)
    time.sleep(0.25)
    removed = ingress.remove_departed()
    assert sorted(set(removed)) == ["gone"]
    names = {c["name"] for c in client.xinfo_consumers(queue_stream("batch"), CONSUMER_GROUP)}
    assert names == {b"alive", b"holding"}


# ---------------------------------------------------------------------------------------------
# ENQUEUE: producers' side of the lane limit


def test_enqueue_refuses_over_limit(client: redis.Redis, ingress: Ingress) -> None:
    for i in range(3):
        enqueue(client, "batch", raw_fields("inferq.triage", f"t{i}", "{}"), 3)
    with pytest.raises(Overloaded) as refused:
        enqueue(client, "batch", raw_fields("inferq.triage", "t3", "{}"), 3)
    assert (refused.value.lane, refused.value.limit) == ("batch", 3)
    # In-flight tasks count too: fetching does not make room, finishing does.
    ingress.fetch(["batch"], 10, None)
    with pytest.raises(Overloaded):
        enqueue(client, "batch", raw_fields("inferq.triage", "t3", "{}"), 3)
    assert client.xlen(queue_stream("batch")) == 3


def test_enqueue_many_is_all_or_nothing(client: redis.Redis) -> None:
    script = enqueue_script(client)
    entries = [("realtime", raw_fields("inferq.fraud", f"t{i}", "{}")) for i in range(3)]
    entries.append(("batch", raw_fields("inferq.triage", "b0", "{}")))
    tight = EnqueueCall(entries, {"realtime": 2, "batch": 10})
    assert tight.full_lane(script(keys=tight.keys, args=tight.args)) == "realtime"
    assert client.xlen(queue_stream("realtime")) == 0 and client.xlen(queue_stream("batch")) == 0
    roomy = EnqueueCall(entries, {"realtime": 3, "batch": 1})
    reply = script(keys=roomy.keys, args=roomy.args)
    assert roomy.full_lane(reply) is None
    ids = EnqueueCall.entry_ids(reply)
    assert len(ids) == 4 and ids[-1] == client.xrange(queue_stream("batch"))[0][0].decode()
    assert [f[b"id"] for _, f in client.xrange(queue_stream("realtime"))] == [b"t0", b"t1", b"t2"]


def test_enqueue_refuses_a_stream_that_is_no_lane(client: redis.Redis) -> None:
    fields = raw_fields("inferq.fraud", "t0", "{}")
    with pytest.raises(UnknownLane):
        enqueue(client, "elsewhere", fields, 10)
    with pytest.raises(UnknownLane):
        EnqueueCall([("realtime", fields), ("elsewhere", fields)], {"realtime": 10, "elsewhere": 10})
    assert not client.exists(queue_stream("elsewhere")) and not client.exists(queue_stream("realtime"))
