"""worker.celery_lists against a real Redis: stock Celery messages (kombu's own Redis transport) moved
from their lists into the lanes, atomically, bounded, never another app's task, never past a lane's limit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog
from celery import Celery

from contracts import ErrorCode, parse_request
from contracts.wire import FIELD_PAYLOAD, queue_stream
from worker import embedded
from worker.celery_lists import CeleryLists, bridged_queues, priority_lists
from worker.config import Settings
from worker.connection import WORKER_ACL_RULES
from worker.connection import redis_client as connect
from worker.ingress import Ingress

pytestmark = pytest.mark.integration

NOTE = "58M substernal chest pressure since 0640, diaphoretic"
TRIAGE = {"tenant": "st-elsewhere-ed", "note": NOTE, "age": 58}
FRAUD = {"tenant": "northwind", "transaction": {"amount": 12.5}}


@pytest.fixture
def producer(redis_client: redis.Redis, redis_url: str) -> Iterator[Celery]:
    """A stock Celery app: kombu's own Redis transport, nothing of inferq's."""
    app = Celery("stock-producer", broker=redis_url, set_as_current=False)
    yield app
    app.close()


def _ingress(client: redis.Redis, **overrides: object) -> Ingress:
    found = Ingress(client, "bridge-reader", Settings(redis_url=None, **overrides))  # type: ignore[arg-type]
    found.ensure_groups()
    return found


def _waiting(client: redis.Redis, queue: str) -> int:
    return sum(int(client.llen(name)) for name in priority_lists(queue))


def test_stock_celery_messages_move_into_their_lanes_and_decode(client: redis.Redis, producer: Celery) -> None:
    triage = producer.send_task("inferq.triage", kwargs={"request": TRIAGE}, queue="batch").id
    low = producer.send_task("inferq.fraud", kwargs={"request": FRAUD}, queue="realtime", priority=9).id
    high = producer.send_task("inferq.fraud", kwargs={"request": FRAUD}, queue="realtime", priority=0).id
    default = producer.send_task("inferq.triage", kwargs={"request": TRIAGE}).id  # Celery's `celery` queue
    assert _waiting(client, "realtime") == 2 and _waiting(client, "celery") == 1
    ingress = _ingress(client)
    assert ingress.bridge_lists() == 4
    assert all(_waiting(client, queue) == 0 for queue in ("realtime", "batch", "celery"))
    deliveries = ingress.fetch(["realtime", "batch"], 10, None)
    # kombu serves priority 0 first; the default queue's triage task goes to triage's lane.
    assert [(d.lane, d.task_id) for d in deliveries] == [
        ("realtime", high), ("realtime", low), ("batch", triage), ("batch", default)]
    parse_request("triage", deliveries[2].request or {})
    for delivery in deliveries:
        assert delivery.decode_error is None and delivery.request == (TRIAGE if delivery.kind == "triage" else FRAUD)
        payload = json.loads(delivery.raw[FIELD_PAYLOAD.encode()])
        # Celery's argsrepr/kwargsrepr repeat the request (patient notes): stored once, in the body only.
        assert payload["headers"]["kwargsrepr"] == "<omitted>" and "chest" not in json.dumps(payload["headers"])
        assert delivery.raw[b"task"].decode() == delivery.task_name and delivery.raw[b"id"].decode() == delivery.task_id


def test_another_apps_task_on_the_celery_queue_is_left_for_its_worker(client: redis.Redis, producer: Celery) -> None:
    producer.send_task("billing.invoice", args=[1])
    producer.send_task("inferq.triage", kwargs={"request": TRIAGE})  # behind it, on the same list
    producer.send_task("inferq.fraud", kwargs={"request": FRAUD}, priority=6)  # a list of its own
    lists = CeleryLists(client, Settings(redis_url=None))
    moved = {move.queue: move for move in lists.read(lists._script(keys=lists._keys, args=lists._args))}
    assert (moved["celery"].moved, moved["celery"].stopped, moved["celery"].left) == (1, "not_an_inferq_task", 2)
    task = json.loads(client.lindex("celery", -1) or b"{}")["headers"]["task"]
    assert task == "billing.invoice" and int(client.xlen(queue_stream("realtime"))) == 1
    assert int(client.xlen(queue_stream("batch"))) == 0


def test_a_task_name_inferq_does_not_run_on_a_lane_queue_is_moved_and_refused(
    client: redis.Redis, producer: Celery
) -> None:
    # The lane-named queues are inferq's: a misspelt task there is answered, not left to rot.
    sent = producer.send_task("inferq.triag", kwargs={"request": TRIAGE}, queue="realtime").id
    ingress = _ingress(client)
    assert ingress.bridge_lists() == 1
    [delivery] = ingress.fetch(["realtime", "batch"], 10, None)
    assert delivery.task_id == sent and delivery.decode_code is ErrorCode.UNKNOWN_TASK
    assert delivery.unknown_task_kind == "triage" and delivery.unknown_task_stream == "inferq:results:triage"


def test_a_full_lane_leaves_messages_in_their_list(client: redis.Redis, producer: Celery) -> None:
    for _ in range(5):
        producer.send_task("inferq.triage", kwargs={"request": TRIAGE}, queue="batch")
    lists = CeleryLists(client, Settings(redis_url=None, batch_queue_limit=2))
    [_, batch, _] = lists.read(lists._script(keys=lists._keys, args=lists._args))
    assert (batch.moved, batch.stopped, batch.left) == (2, "lane_full", 3)
    assert int(client.xlen(queue_stream("batch"))) == 2 and _waiting(client, "batch") == 3
    assert lists.bridge() == 0  # still full: nothing popped
    client.xtrim(queue_stream("batch"), maxlen=0, approximate=False)  # the lane drained
    assert lists.bridge() == 2 and _waiting(client, "batch") == 1


def test_one_call_moves_at_most_its_budget(client: redis.Redis, producer: Celery) -> None:
    for _ in range(7):
        producer.send_task("inferq.fraud", kwargs={"request": FRAUD}, queue="realtime")
    lists = CeleryLists(client, Settings(redis_url=None, celery_list_batch=3))
    assert lists.bridge() == 3 and _waiting(client, "realtime") == 4
    assert [lists.bridge() for _ in range(3)] == [3, 1, 0]


def test_what_is_no_kombu_message_is_moved_as_it_is_or_skipped(client: redis.Redis) -> None:
    client.lpush("realtime", b"not json \xff")
    client.set("batch", "a string, not a list")
    ingress = _ingress(client)
    [realtime, batch, _] = ingress.lists.read(ingress.lists._script(keys=ingress.lists._keys,
                                                                    args=ingress.lists._args))
    assert (realtime.moved, batch.moved, batch.stopped) == (1, 0, "not_a_list")
    [delivery] = ingress.fetch(["realtime", "batch"], 10, None)
    # Nothing names it: dead-lettered by the preparer, its bytes kept.
    assert delivery.task_id is None and delivery.raw[FIELD_PAYLOAD.encode()] == b"not json \xff"


def test_which_queues_are_bridged(client: redis.Redis, producer: Celery) -> None:
    assert bridged_queues(Settings(redis_url=None)) == {"realtime": "realtime", "batch": "batch", "celery": "by_kind"}
    # A realtime-only worker leaves the batch queue to batch workers; by-kind queues go to any worker.
    assert bridged_queues(Settings(redis_url=None, lanes=["realtime"])) == {"realtime": "realtime",
                                                                             "celery": "by_kind"}
    off = CeleryLists(client, Settings(redis_url=None, celery_lists={}))
    producer.send_task("inferq.fraud", kwargs={"request": FRAUD}, queue="realtime")
    assert not off.enabled and off.bridge() == 0 and _waiting(client, "realtime") == 1
    assert priority_lists("q") == ["q", "q\x06\x163", "q\x06\x166", "q\x06\x169"]


def test_under_the_acl_user_the_lists_need_the_documented_grant(tmp_path: Path) -> None:
    # A server of its own: ACL users are server-wide.
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    found = re.search(r"`ACL SETUSER inferq (~realtime [^`]+)`", doc)
    assert found is not None, "docs/operations.md lost the grant for the lists"
    users = [embedded.AclUser("inferq", "pw-plain", WORKER_ACL_RULES),
             embedded.AclUser("inferq-lists", "pw-lists", f"{WORKER_ACL_RULES} {found.group(1)}"),
             embedded.AclUser("producer", "pw-producer", "~* &* +@all")]
    server = embedded.start(tmp_path, acl_users=users)
    try:
        def url(user: str, password: str) -> str:
            return server.url.replace("redis://", f"redis://{user}:{password}@")

        producer = Celery("stock-producer", broker=url("producer", "pw-producer"), set_as_current=False)
        producer.send_task("inferq.triage", kwargs={"request": TRIAGE}, queue="batch", priority=6)
        producer.send_task("inferq.fraud", kwargs={"request": FRAUD})
        producer.close()
        plain = connect(url("inferq", "pw-plain"), Settings(redis_url=None))
        refused = CeleryLists(plain, Settings(redis_url=None))
        with pytest.raises(redis.exceptions.NoPermissionError):  # the script's keys are checked before it runs
            refused._script(keys=refused._keys, args=refused._args, client=plain)
        with structlog.testing.capture_logs() as logs:
            assert refused.bridge() == 0 and refused.bridge() == 0
        assert [(e["event"], e["reason"]) for e in logs] == [("celery_list.refused", "no_permission")]  # once
        plain.close()
        granted = connect(url("inferq-lists", "pw-lists"), Settings(redis_url=None))
        assert CeleryLists(granted, Settings(redis_url=None)).bridge() == 2
        assert [int(granted.xlen(queue_stream(lane))) for lane in ("realtime", "batch")] == [1, 1]
        granted.close()
    finally:
        embedded.stop(tmp_path)
