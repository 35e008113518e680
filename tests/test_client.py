"""Producer clients against a real Redis; the worker side is played by Ingress and Publisher."""

from __future__ import annotations

import asyncio
import json
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
from worker.client import SUBMIT_CHUNK, AsyncInferqClient, InferqClient
from worker.config import Settings
from worker.constants import FIELD_REQUEST, queue_stream
from worker.errors import Overloaded, ResultTimeout
from worker.streams import Delivery, Ingress, Publisher, connect

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
def server(redis_client: redis.Redis, redis_url: str) -> Iterator[redis.Redis]:
    conn = connect(redis_url)
    yield conn
    conn.close()


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


def serve(server: redis.Redis, settings: Settings, expected: int, timeout_s: float = 5.0) -> list[bool]:
    """Play a worker: fetch `expected` tasks and post one ok result for each."""
    ingress, publisher = Ingress(server, "test-worker", settings), Publisher(server, settings)
    ingress.ensure_groups()
    posted: list[bool] = []
    deadline = time.monotonic() + timeout_s
    while len(posted) < expected and time.monotonic() < deadline:
        for delivery in ingress.fetch(["realtime", "batch"], 100, 50):
            assert delivery.result_stream is not None
            posted.append(publisher.publish(delivery, _answer(delivery), delivery.result_stream))
    return posted


def test_submit_and_wait_round_trip(client: InferqClient, server: redis.Redis, settings: Settings) -> None:
    triage_id = client.submit("triage", TRIAGE)
    fraud_id = client.submit("fraud", FRAUD, task_id="fraud-1")
    assert fraud_id == "fraud-1"
    assert server.xlen(queue_stream("batch")) == 1 and server.xlen(queue_stream("realtime")) == 1
    [(_, fields)] = server.xrange(queue_stream("realtime"))
    assert json.loads(fields[FIELD_REQUEST])["reply_to"] == client.reply_stream
    assert serve(server, settings, 2) == [True, True]
    results = client.wait([triage_id, fraud_id], timeout_s=5)
    assert isinstance(results[triage_id].result, TriageResult)
    assert results[fraud_id].status is TaskStatus.OK and isinstance(results[fraud_id].result, FraudResult)


def test_wait_blocks_until_results_arrive(client: InferqClient, server: redis.Redis, settings: Settings) -> None:
    task_id = client.submit("fraud", FRAUD)
    worker = threading.Thread(target=lambda: (time.sleep(0.1), serve(server, settings, 1)))
    worker.start()
    started = time.monotonic()
    assert client.result(task_id, timeout_s=5).task_id == task_id
    assert 0.05 < time.monotonic() - started < 4
    worker.join()


def test_model_request_and_request_lane(client: InferqClient, server: redis.Redis, settings: Settings) -> None:
    model = TriageRequest.model_validate({**TRIAGE, "lane": "realtime"})
    task_id = client.submit("triage", model)
    assert server.xlen(queue_stream("realtime")) == 1
    serve(server, settings, 1)
    assert client.result(task_id, timeout_s=5).kind == "triage"


def test_invalid_request_refused_locally(client: InferqClient, server: redis.Redis) -> None:
    with pytest.raises(ContractError) as refused:
        client.submit("triage", {**TRIAGE, "note": "   "})
    assert refused.value.code is ErrorCode.EMPTY_NOTE
    with pytest.raises(ContractError) as misdirected:
        client.submit("fraud", {**FRAUD, "reply_to": "inferq:queue:batch"})
    assert misdirected.value.code is ErrorCode.BAD_REPLY_TO
    with pytest.raises(ContractError):
        client.submit("summary", TRIAGE)
    with pytest.raises(ContractError):
        client.submit_many("triage", [TRIAGE, {**TRIAGE, "age": -1}])
    assert server.xlen(queue_stream("batch")) == 0


def test_duplicate_submission_gives_one_result(
    client: InferqClient, server: redis.Redis, settings: Settings
) -> None:
    client.submit("fraud", FRAUD, task_id="same")
    client.submit("fraud", FRAUD, task_id="same")
    assert serve(server, settings, 2) == [True, False]
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
        serve(server, settings, 2)
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
    assert len(serve(server, settings, count)) == count
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
    serve(server, settings, 1)
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
            worker = asyncio.get_running_loop().run_in_executor(None, serve, server, settings, 3)
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
