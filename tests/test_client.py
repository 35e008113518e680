"""Producer clients against a real Redis; the worker side is played by Ingress and Publisher."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import worker.client
from contracts import (
    ContractError,
    ErrorCode,
    FraudResult,
    TaskResultMessage,
    TaskStatus,
    Timings,
    TriageRequest,
    TriageResult,
)
from contracts.wire import FIELD_REQUEST, queue_stream
from worker import embedded
from worker.client import SUBMIT_CHUNK, AsyncInferqClient, InferqClient
from worker.config import Settings
from worker.connection import redis_client
from worker.entries import Delivery
from worker.errors import ConfigurationError, Overloaded, RedisUnavailable, ResultTimeout, ServerFull
from worker.ingress import Ingress
from worker.outcomes import Answer, Publisher
from worker.processes import free_port

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent / "contracts" / "examples"


def _example(name: str) -> dict[str, Any]:
    request: dict[str, Any] = json.loads((EXAMPLES / f"{name}-request.json").read_text())
    request.pop("reply_to", None)
    request.pop("timeout_ms", None)
    return request


TRIAGE = _example("triage")
FRAUD = _example("fraud")


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, batch_queue_limit=1000, realtime_queue_limit=1000)


@pytest.fixture
def server(redis_client: redis.Redis) -> redis.Redis:
    """The test database, replies decoded: what a test inspects."""
    return redis_client


@pytest.fixture
def client(server: redis.Redis, settings: Settings) -> Iterator[InferqClient]:
    found = InferqClient(settings=settings)
    yield found
    found.close()


def _answer(delivery: Delivery) -> TaskResultMessage:
    assert delivery.task_id is not None and delivery.kind is not None
    result: TriageResult | FraudResult
    if delivery.kind == "triage":
        result = TriageResult(acuity=2, probabilities=[0.1, 0.6, 0.2, 0.05, 0.05], truncated=False, chunks=1)
    else:
        result = FraudResult(score=0.93, decision="decline")
    timings = Timings(queue_ms=1.0, batch_size=1, compute_ms=1.0, total_ms=2.0)
    return TaskResultMessage.ok(delivery.task_id, result, model="test@1", timings=timings, finished_at=1)


def serve(settings: Settings, expected: int, timeout_s: float = 5.0) -> list[bool]:
    """Play a worker: fetch `expected` tasks and post one ok result for each."""
    assert settings.redis_url is not None
    conn = redis_client(settings.redis_url, settings)  # bytes, as the worker reads entries
    try:
        ingress, publisher = Ingress(conn, "test-worker", settings), Publisher(conn, settings)
        ingress.ensure_groups()
        posted: list[bool] = []
        deadline = time.monotonic() + timeout_s
        while len(posted) < expected and time.monotonic() < deadline:
            for delivery in ingress.fetch(["realtime", "batch"], 100, 50):
                assert delivery.result_stream is not None and delivery.decode_error is None
                posted.append(publisher.finish(Answer(delivery, _answer(delivery), delivery.result_stream)))
        return posted
    finally:
        conn.close()


def test_submit_and_wait_round_trip(client: InferqClient, server: redis.Redis, settings: Settings) -> None:
    triage_id = client.submit("triage", TRIAGE)
    fraud_id = client.submit("fraud", FRAUD, task_id="fraud-1")
    assert fraud_id == "fraud-1"
    assert server.xlen(queue_stream("batch")) == 1 and server.xlen(queue_stream("realtime")) == 1
    [(_, fields)] = server.xrange(queue_stream("realtime"))
    assert json.loads(fields[FIELD_REQUEST])["reply_to"] == client.reply_stream
    assert serve(settings, 2) == [True, True]
    results = client.wait([triage_id, fraud_id], timeout_s=5)
    assert isinstance(results[triage_id].result, TriageResult)
    assert results[fraud_id].status is TaskStatus.OK and isinstance(results[fraud_id].result, FraudResult)


def test_wait_blocks_until_results_arrive(client: InferqClient, settings: Settings) -> None:
    task_id = client.submit("fraud", FRAUD)
    worker = threading.Thread(target=lambda: (time.sleep(0.1), serve(settings, 1)))
    worker.start()
    started = time.monotonic()
    assert client.result(task_id, timeout_s=5).task_id == task_id
    assert 0.05 < time.monotonic() - started < 4
    worker.join()


def test_model_request_and_request_lane(client: InferqClient, server: redis.Redis, settings: Settings) -> None:
    model = TriageRequest.model_validate({**TRIAGE, "lane": "realtime"})
    task_id = client.submit("triage", model)
    assert server.xlen(queue_stream("realtime")) == 1
    serve(settings, 1)
    assert client.result(task_id, timeout_s=5).kind == "triage"


def test_invalid_request_refused_locally(client: InferqClient, server: redis.Redis) -> None:
    with pytest.raises(ContractError) as refused:
        client.submit("triage", {**TRIAGE, "note": "   "})
    assert refused.value.code is ErrorCode.EMPTY_NOTE
    with pytest.raises(ContractError) as misdirected:
        client.submit("fraud", {**FRAUD, "reply_to": "inferq:queue:batch"})
    assert misdirected.value.code is ErrorCode.BAD_REPLY_TO
    with pytest.raises(ContractError):
        client.submit("summary", TRIAGE)  # type: ignore[arg-type]
    with pytest.raises(ContractError):
        client.submit_many("triage", [TRIAGE, {**TRIAGE, "age": -1}])
    with pytest.raises(ContractError) as surrogate:
        client.submit("triage", {**TRIAGE, "note": "pain \ud800 left arm"})
    assert surrogate.value.code is ErrorCode.INVALID_UNICODE
    assert server.xlen(queue_stream("batch")) == 0


def test_duplicate_submission_gives_one_result(
    client: InferqClient, server: redis.Redis, settings: Settings
) -> None:
    client.submit("fraud", FRAUD, task_id="same")
    client.submit("fraud", FRAUD, task_id="same")
    assert serve(settings, 2) == [True, False]
    assert list(client.wait(["same"], timeout_s=5)) == ["same"]
    assert client.wait(["same"], timeout_s=0.05) == {}
    assert server.xlen(client.reply_stream) == 1


def test_wait_timeout_and_result_timeout(client: InferqClient) -> None:
    task_id = client.submit("fraud", FRAUD)
    assert client.wait([task_id], timeout_s=0.05) == {}
    with pytest.raises(ResultTimeout):
        client.result(task_id, timeout_s=0.05)
    with pytest.raises(TimeoutError):
        client.result(task_id, timeout_s=0.0)


def test_results_go_to_their_own_client(server: redis.Redis, settings: Settings) -> None:
    with InferqClient(settings=settings) as first, InferqClient(settings=settings) as second:
        mine = first.submit("fraud", FRAUD)
        theirs = second.submit("fraud", FRAUD)
        serve(settings, 2)
        assert list(first.wait([mine, theirs], timeout_s=0.2)) == [mine]
        assert list(second.wait([theirs], timeout_s=5)) == [theirs]


def test_own_reply_to_cannot_be_waited_for(client: InferqClient, server: redis.Redis) -> None:
    task_id = client.submit("fraud", {**FRAUD, "reply_to": "inferq:results:payments-switch"})
    with pytest.raises(ValueError, match="own reply_to"):
        client.wait([task_id], timeout_s=0.01)


def test_overloaded_at_once(server: redis.Redis, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, realtime_queue_limit=3)
    with InferqClient(settings=settings) as client:
        client.submit_many("fraud", [FRAUD, FRAUD])
        with pytest.raises(Overloaded) as refused:
            client.submit_many("fraud", [FRAUD, FRAUD])
        assert not isinstance(refused.value, ServerFull)
        assert (refused.value.lane, refused.value.limit, refused.value.queued) == ("realtime", 3, ())
        client.submit("fraud", FRAUD)
        started = time.monotonic()
        with pytest.raises(Overloaded):
            client.submit("fraud", FRAUD)
        assert time.monotonic() - started < 0.5
    assert server.xlen(queue_stream("realtime")) == 3


def test_submit_many_in_chunks(
    client: InferqClient, server: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = SUBMIT_CHUNK + 10
    ids = client.submit_many("triage", [TRIAGE] * count, task_ids=[f"t{i}" for i in range(count)])
    assert ids == [f"t{i}" for i in range(count)]
    assert [fields["id"] for _, fields in server.xrange(queue_stream("batch"))] == ids
    assert len(serve(settings, count)) == count
    # A zero timeout polls without blocking, over as many reads as the arrived results need.
    monkeypatch.setattr(worker.client, "READ_COUNT", 100)
    assert set(client.wait(ids, timeout_s=0.0)) == set(ids)


def test_submit_many_reports_what_was_queued(server: redis.Redis, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, batch_queue_limit=SUBMIT_CHUNK + 5)
    with InferqClient(settings=settings) as client, pytest.raises(Overloaded) as refused:
        client.submit_many("triage", [TRIAGE] * (SUBMIT_CHUNK + 10))
    assert len(refused.value.queued) == SUBMIT_CHUNK
    assert server.xlen(queue_stream("batch")) == SUBMIT_CHUNK


def test_close_deletes_reply_stream(server: redis.Redis, settings: Settings) -> None:
    client = InferqClient(settings=settings)
    task_id = client.submit("fraud", FRAUD)
    serve(settings, 1)
    assert server.exists(client.reply_stream)
    assert 0 < server.ttl(client.reply_stream) <= settings.result_ttl_s
    client.result(task_id, timeout_s=5)
    client.close()
    assert not server.exists(client.reply_stream)


def test_async_client_round_trip(server: redis.Redis, settings: Settings) -> None:
    async def scenario() -> tuple[dict[str, TaskResultMessage], type[BaseException] | None]:
        async with AsyncInferqClient(settings=settings) as client:
            ids = await client.submit_many("triage", [TRIAGE, TRIAGE])
            fraud_id = await client.submit("fraud", FRAUD)
            worker = asyncio.get_running_loop().run_in_executor(None, serve, settings, 3)
            results = await client.wait([*ids, fraud_id], timeout_s=5)
            await worker
            try:
                await client.result("never-sent", timeout_s=0.02)
            except ResultTimeout as exc:
                return results, type(exc)
            return results, None

    results, timeout = asyncio.run(scenario())
    assert len(results) == 3 and all(r.status is TaskStatus.OK for r in results.values())
    assert timeout is ResultTimeout
    assert server.keys("inferq:results:client:*") == []


def test_async_client_overloaded(server: redis.Redis, redis_url: str) -> None:
    async def scenario() -> None:
        async with AsyncInferqClient(settings=Settings(redis_url=redis_url, batch_queue_limit=1)) as client:
            await client.submit("triage", TRIAGE)
            await client.submit("triage", TRIAGE)

    with pytest.raises(Overloaded):
        asyncio.run(scenario())


# ---------------------------------------------------------------------------------------------
# No URL, no server, a full server


def test_without_a_url_the_client_raises_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INFERQ_REDIS_URL", raising=False)
    monkeypatch.setenv("INFERQ_STATE_DIR", str(tmp_path))

    def no_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("the client started an embedded server")

    monkeypatch.setattr(embedded, "start", no_start)
    with pytest.raises(ConfigurationError, match="INFERQ_REDIS_URL"):
        InferqClient()
    with pytest.raises(ConfigurationError):
        AsyncInferqClient(settings=Settings(redis_url=None))
    assert list(tmp_path.iterdir()) == []
    assert embedded.running(tmp_path) is None


def _nobody_listens() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_unreachable_redis_is_retried_then_raises_redis_unavailable() -> None:
    settings = Settings(redis_url=_nobody_listens(), client_retry_s=0.5)
    with InferqClient(settings=settings) as client:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as gone:
            client.submit("fraud", FRAUD)
        took = time.monotonic() - started
        assert gone.value.queued == ()
        assert 0.4 < took < 3.0, took
        # Waiting on a Redis that is not there is not an error: nothing arrives in time.
        assert client.wait(["anything"], timeout_s=0.1) == {}


def test_async_unreachable_redis_raises_redis_unavailable() -> None:
    async def scenario() -> None:
        async with AsyncInferqClient(settings=Settings(redis_url=_nobody_listens(), client_retry_s=0.3)) as client:
            await client.submit("triage", TRIAGE)

    with pytest.raises(RedisUnavailable):
        asyncio.run(scenario())


def _server_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    return found or str(embedded._binary())


def test_a_redis_that_comes_back_within_the_retry_time_gets_the_task() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings = Settings(redis_url=url, client_retry_s=15.0)
    args = [_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    holder: list[subprocess.Popen[bytes]] = []
    late = threading.Timer(0.5, lambda: holder.append(subprocess.Popen(args, stdout=subprocess.DEVNULL)))
    late.start()
    try:
        with InferqClient(settings=settings) as client:
            task_id = client.submit("fraud", FRAUD, task_id="late-1")
        late.join()
        assert task_id == "late-1"
        check = redis.Redis.from_url(url, decode_responses=True)
        assert [fields["id"] for _, fields in check.xrange(queue_stream("realtime"))] == ["late-1"]
        check.close()
    finally:
        late.cancel()
        late.join()
        for proc in holder:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def full_server(tmp_path: Path) -> Iterator[str]:
    """A private embedded Valkey whose maxmemory is already used up (noeviction)."""
    server = embedded.start(tmp_path)
    try:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        admin.close()
        yield server.url
    finally:
        embedded.stop(tmp_path)


def test_a_full_redis_raises_server_full_and_queues_nothing(full_server: str) -> None:
    settings = Settings(redis_url=full_server, client_retry_s=0.5)
    with InferqClient(settings=settings) as client:
        started = time.monotonic()
        with pytest.raises(ServerFull) as full:
            client.submit_many("triage", [TRIAGE] * 3)
        assert time.monotonic() - started < 0.5, "out of memory is not retried"
        assert isinstance(full.value, Overloaded) and full.value.queued == ()

    async def scenario() -> None:
        async with AsyncInferqClient(settings=settings) as client:
            await client.submit("fraud", FRAUD)

    with pytest.raises(ServerFull):
        asyncio.run(scenario())
    check = redis.Redis.from_url(full_server)
    assert check.xlen(queue_stream("batch")) == 0 and check.xlen(queue_stream("realtime")) == 0
    check.close()
