"""The kombu transport: standard Celery producers publishing onto the lane streams of a real Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from contracts import ContractError, ErrorCode
from contracts.wire import FIELD_ID, FIELD_PAYLOAD, FIELD_TASK, queue_stream
from worker import embedded
from worker.config import Settings
from worker.connection import redis_client as worker_client
from worker.errors import ConfigurationError, Overloaded, ServerFull, UnknownLane
from worker.ingress import Ingress
from worker.keys import CONSUMER_GROUP
from worker.transport import OMITTED, TRANSPORT_PATH, ConsumeNotSupported, enqueue, producer_app, redis_url

pytestmark = pytest.mark.integration

TRIAGE = {"tenant": "er-north", "note": "c/o chest pain x2h, diaphoretic"}


@pytest.fixture
def client(redis_client: redis.Redis) -> redis.Redis:
    """The test database, replies decoded: what a test inspects."""
    return redis_client


@pytest.fixture
def ingress(redis_client: redis.Redis, redis_url: str) -> Iterator[Ingress]:
    """The worker's side: entries read as bytes, as `worker.runtime` reads them."""
    settings = Settings(redis_url=redis_url)
    conn = worker_client(redis_url, settings)
    found = Ingress(conn, "worker-a", settings)
    found.ensure_groups()
    yield found
    conn.close()


@pytest.fixture
def app(redis_client: redis.Redis, redis_url: str) -> Iterator[Celery]:
    found = producer_app(redis_url)
    yield found
    found.close()


def test_send_task_lands_as_decodable_envelope(app: Celery, client: redis.Redis, ingress: Ingress) -> None:
    app.send_task("inferq.triage", kwargs={"request": TRIAGE}, task_id="celery-1", queue="realtime")
    [delivery] = ingress.fetch(["realtime", "batch"], 10, None)
    assert (delivery.lane, delivery.task_name, delivery.task_id) == ("realtime", "inferq.triage", "celery-1")
    assert delivery.request == TRIAGE and delivery.decode_error is None
    # The task and its id also travel as plain fields, so a worker names a task whose payload it cannot read.
    assert delivery.raw[FIELD_TASK.encode()] == b"inferq.triage" and delivery.raw[FIELD_ID.encode()] == b"celery-1"
    message = json.loads(delivery.raw[FIELD_PAYLOAD.encode()])
    assert message["content-type"] == "application/json"
    # The request is carried once, in the body; Celery's repr headers would copy it (PHI) again.
    assert message["headers"]["kwargsrepr"] == OMITTED
    assert "chest pain" not in json.dumps(message["headers"])


def test_default_lane_per_kind(app: Celery, client: redis.Redis) -> None:
    app.send_task("inferq.fraud", kwargs={"request": {"tenant": "issuer"}}, task_id="f1")
    app.send_task("inferq.triage", kwargs={"request": TRIAGE}, task_id="t1")
    assert client.xlen(queue_stream("realtime")) == 1
    assert client.xlen(queue_stream("batch")) == 1


@pytest.mark.parametrize("scheme", ["inferq://", "inferq+redis://"])
def test_broker_url_schemes(scheme: str, redis_url: str, client: redis.Redis, ingress: Ingress) -> None:
    app = Celery("producer", broker=redis_url.replace("redis://", scheme), set_as_current=False)
    app.conf.task_serializer = "json"
    try:
        app.send_task("inferq.triage", kwargs={"request": TRIAGE}, task_id="s1", queue="batch")
    finally:
        app.close()
    assert [d.task_id for d in ingress.fetch(["batch"], 10, None)] == ["s1"]


def test_broker_transport_setting(redis_url: str, client: redis.Redis) -> None:
    app = Celery("producer", broker=redis_url, set_as_current=False)
    app.conf.broker_transport = TRANSPORT_PATH
    try:
        app.send_task("inferq.fraud", kwargs={"request": {"tenant": "x"}}, task_id="b1", queue="realtime")
    finally:
        app.close()
    assert client.xlen(queue_stream("realtime")) == 1


def test_overloaded_lane_refuses_at_once(redis_url: str, client: redis.Redis) -> None:
    app = Celery("producer", broker=redis_url, set_as_current=False)
    app.conf.update(broker_transport=TRANSPORT_PATH, broker_transport_options={"queue_limits": {"batch": 2}})
    try:
        for i in range(2):
            app.send_task("inferq.triage", kwargs={"request": TRIAGE}, task_id=f"o{i}", queue="batch")
        with pytest.raises(Overloaded):
            app.send_task("inferq.triage", kwargs={"request": TRIAGE}, task_id="o2", queue="batch")
    finally:
        app.close()
    assert client.xlen(queue_stream("batch")) == 2


def test_refusals(app: Celery, client: redis.Redis) -> None:
    with pytest.raises(UnknownLane):
        app.send_task("inferq.triage", kwargs={"request": TRIAGE}, queue="celery")
    with pytest.raises(ContractError) as pickled:
        app.send_task("inferq.triage", kwargs={"request": TRIAGE}, queue="batch", serializer="pickle")
    assert pickled.value.code is ErrorCode.MALFORMED
    with pytest.raises(ContractError) as scheduled:
        app.send_task("inferq.triage", kwargs={"request": TRIAGE}, queue="batch", countdown=5)
    assert scheduled.value.code is ErrorCode.MALFORMED
    with pytest.raises(ContractError) as unknown:
        app.send_task("inferq.summarise", kwargs={"request": TRIAGE}, queue="batch")
    assert unknown.value.code is ErrorCode.UNKNOWN_TASK
    elsewhere = {**TRIAGE, "reply_to": "inferq:queue:realtime"}
    with pytest.raises(ContractError) as misdirected:
        app.send_task("inferq.triage", kwargs={"request": elsewhere}, queue="batch")
    assert misdirected.value.code is ErrorCode.BAD_REPLY_TO
    assert client.xlen(queue_stream("batch")) == 0


def test_queue_management(redis_url: str, client: redis.Redis) -> None:
    with Connection(redis_url, transport=TRANSPORT_PATH) as conn:
        channel = conn.default_channel
        declared = channel.queue_declare("batch")
        assert declared.message_count == 0
        assert client.xinfo_groups(queue_stream("batch"))[0]["name"] == CONSUMER_GROUP
        producer = conn.Producer(serializer="json")
        for i in range(3):
            producer.publish([[], {"request": TRIAGE}, {}], routing_key="batch",
                             headers={"task": "inferq.triage", "id": f"m{i}"})
        assert channel.queue_declare("batch", passive=True).message_count == 3
        assert channel.queue_purge("batch") == 3
        assert client.xlen(queue_stream("batch")) == 0
        assert client.xinfo_groups(queue_stream("batch"))[0]["name"] == CONSUMER_GROUP
        with pytest.raises(ConsumeNotSupported):
            channel._get("batch")


def test_redis_url_of_broker_urls() -> None:
    assert redis_url("inferq://h:6380/2") == "redis://h:6380/2"
    assert redis_url("rediss://h:6380/2") == "rediss://h:6380/2"
    assert redis_url("h") == "redis://h:6379/0"


def test_a_kombu_message_without_a_task_id_gets_no_id_field(redis_url: str, client: redis.Redis) -> None:
    with Connection(redis_url, transport=TRANSPORT_PATH) as conn:
        conn.Producer(serializer="json").publish([[], {"request": TRIAGE}, {}], routing_key="batch",
                                                 headers={"task": "inferq.triage"})
    [(_, fields)] = client.xrange(queue_stream("batch"))
    assert fields[FIELD_TASK] == "inferq.triage" and FIELD_ID not in fields


def test_producer_app_without_a_url_raises_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INFERQ_REDIS_URL", raising=False)
    monkeypatch.setenv("INFERQ_STATE_DIR", str(tmp_path))

    def no_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("producer_app started an embedded server")

    monkeypatch.setattr(embedded, "start", no_start)
    with pytest.raises(ConfigurationError, match="INFERQ_REDIS_URL"):
        producer_app()
    assert list(tmp_path.iterdir()) == []


def test_producer_app_channel_uses_the_given_settings(redis_url: str, client: redis.Redis) -> None:
    app = producer_app(redis_url, Settings(redis_url=redis_url, batch_queue_limit=1))
    try:
        app.send_task("inferq.triage", kwargs={"request": TRIAGE}, task_id="l0", queue="batch")
        with pytest.raises(Overloaded) as refused:
            app.send_task("inferq.triage", kwargs={"request": TRIAGE}, task_id="l1", queue="batch")
        assert (refused.value.lane, refused.value.limit) == ("batch", 1)
    finally:
        app.close()
    assert client.xlen(queue_stream("batch")) == 1


def test_a_full_redis_raises_server_full(tmp_path: Path) -> None:
    server = embedded.start(tmp_path)
    try:
        admin = redis.Redis.from_url(server.url)
        app = producer_app(server.url)
        try:
            app.send_task("inferq.triage", kwargs={"request": TRIAGE}, task_id="fits", queue="batch")
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)
            with pytest.raises(ServerFull):  # the lane is declared already: the enqueue script is refused
                app.send_task("inferq.triage", kwargs={"request": TRIAGE}, task_id="full-1", queue="batch")
            with pytest.raises(ServerFull):
                enqueue(admin, "batch", {FIELD_TASK: "inferq.triage", FIELD_ID: "full-2", "request": "{}"}, 10)
            with pytest.raises(ServerFull):  # declaring a lane on a full server
                app.send_task("inferq.fraud", kwargs={"request": {"tenant": "x"}}, task_id="full-3", queue="realtime")
        finally:
            app.close()
        assert admin.xlen(queue_stream("batch")) == 1 and admin.xlen(queue_stream("realtime")) == 0
        admin.close()
    finally:
        embedded.stop(tmp_path)


def test_other_queues_are_kombus_stock_redis_lists(redis_url: str, client: redis.Redis) -> None:
    # Anything but a lane is kombu's stock Redis transport: a list that a stock client reads, and back.
    with Connection(redis_url, transport=TRANSPORT_PATH) as ours, Connection(redis_url) as stock:
        ours.SimpleQueue("reports").put({"day": 1}, serializer="json")
        assert client.type("reports") == "list"
        with stock.SimpleQueue("reports") as queue:
            message = queue.get(timeout=5)
            assert message.payload == {"day": 1}
            message.ack()
            queue.put({"day": 2}, serializer="json")
        with ours.SimpleQueue("reports") as queue:
            assert queue.get(timeout=5).payload == {"day": 2}
    assert not [key for key in client.keys("inferq:*") if "reports" in key]


def test_fanout_channels_are_prefixed_with_the_database(redis_url: str) -> None:
    # Pub/sub is server-wide: the database in the channel name keeps apps on other databases apart.
    db = int(redis_url.rsplit("/", 1)[1])
    with Connection(redis_url, transport=TRANSPORT_PATH) as ours:
        channel = ours.default_channel
        assert channel.keyprefix_fanout == f"/{db}."
        assert channel._get_publish_topic("celery.pidbox", "") == f"/{db}.celery.pidbox"


def test_remote_control_between_inferq_and_stock_apps(redis_url: str, client: redis.Redis) -> None:
    """A mailbox node served over this transport answers a stock client, and the other way round."""
    ours = Celery("ours", broker=redis_url, set_as_current=False)
    ours.conf.update(broker_transport=TRANSPORT_PATH, task_serializer="json", accept_content=["json"])
    stock = Celery("stock", broker=redis_url, set_as_current=False)
    try:
        for server, asker, name in ((ours, stock, "node@ours"), (stock, ours, "node@stock")):
            replies = _ping_through(server, asker, name)
            assert replies == [{name: {"ok": "pong"}}]
    finally:
        ours.close()
        stock.close()


def _ping_through(server: Celery, asker: Celery, name: str) -> list[dict[str, Any]]:
    stop = threading.Event()
    listening = threading.Event()

    def serve() -> None:
        node = server.control.mailbox.Node(name, handlers={"ping": lambda state, **kw: {"ok": "pong"}}, state={})
        with server.connection_for_write() as connection:
            node.channel = connection.channel()
            node.listen()
            listening.set()
            while not stop.is_set():
                try:
                    connection.drain_events(timeout=0.2)
                except TimeoutError:
                    continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert listening.wait(10)
        time.sleep(0.3)  # the subscription reaches the server
        return list(asker.control.ping(destination=[name], timeout=3.0))
    finally:
        stop.set()
        thread.join(5)
