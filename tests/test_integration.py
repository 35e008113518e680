"""End to end with real worker processes (`python -m worker.app`), the shipped models and a real Redis.

One worker process serves the module (loading models costs seconds on a shared CPU); the
SIGTERM test starts a second one of its own. The tests flush the database between them; the
worker recreates its consumer groups when a lane stream disappears.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from contracts import TaskResultMessage, TaskStatus
from contracts.wire import (
    DEADLETTER_STREAM,
    LANES,
    RESULT_MESSAGE,
    RESULTS_PREFIX,
    TASK_FRAUD,
    TASK_TRIAGE,
    queue_stream,
    results_stream,
)
from worker.client import InferqClient, raw_fields
from worker.keys import CONSUMER_GROUP, EnqueueCall, enqueue_script
from worker.processes import WorkerProcess
from worker.processes import spawn_worker as spawn_worker_process
from worker.transport import producer_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0  # model loading and warm-up on a small, shared machine
ANSWER_TIMEOUT_S = 30.0
CLAIM_IDLE_MS = 500  # short, so a claimed poison task reaches the dead-letter stream quickly
MAX_DELIVERIES = 2
DRAIN_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def spawn_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts `python -m worker.app` processes configured by environment; all are ended at the end."""
    started: list[WorkerProcess] = []
    log_dir = tmp_path_factory.mktemp("workers")

    def spawn(name: str, **env_overrides: str) -> WorkerProcess:
        env = {
            "INFERQ_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "INFERQ_MAX_DELIVERIES": str(MAX_DELIVERIES),
            "INFERQ_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
            "INFERQ_DEVICE": "cpu",
            "INFERQ_LOG_LEVEL": "WARNING",
            **env_overrides,
        }
        worker = spawn_worker_process(redis_url, name, log_dir, env)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        worker.terminate()
    for worker in started:
        worker.stop(timeout_s=DRAIN_TIMEOUT_S + 5)


@pytest.fixture(scope="module")
def worker(spawn_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """The module's worker: both kinds, both lanes; the batch lane waits 50 ms so batches form.

    It takes 8 tasks per fetch and batch, so it holds at most 24 batch-lane tasks and a second
    worker gets its share of a larger submission.
    """
    process = spawn_worker(
        "it-main", INFERQ_BATCH_MAX_WAIT_MS="50", INFERQ_FETCH_COUNT="8", INFERQ_BATCH_MAX_BATCH_SIZE="8"
    )
    process.wait_ready(READY_TIMEOUT_S)
    return process


@pytest.fixture
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[InferqClient]:
    with InferqClient(redis_url) as c:
        yield c


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _event(amount: float, ago_s: float, country: str = "DE") -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "EUR",
        "mcc": "5411",
        "channel": "card_present",
        "country": country,
        "timestamp": _rfc3339(time.time() - ago_s),
        "device_id": "pos-1",
    }


def _fraud_request(i: int) -> dict[str, Any]:
    history = [_event(20.0 + k, 86_400 * (30 - k)) for k in range(12)]
    return {"tenant": "bank", "transaction": _event(15.0 + 40 * i, 60, "DE" if i % 2 else "BR"), "history": history}


def _triage_request(i: int) -> dict[str, Any]:
    notes = [
        "c/o crushing chest pain radiating to left arm x30 min, diaphoretic, hx CAD",
        "pt states sore throat x3 days, no fever, eating and drinking",
        "fall from standing, wrist pain and swelling, no LOC, denies head strike",
        "request for prescription refill, no complaints",
    ]
    return {"tenant": "ed", "note": notes[i % len(notes)], "age": 30 + i % 60}


def _results_on(client: redis.Redis, stream: str) -> list[TaskResultMessage]:
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(stream))
    return [TaskResultMessage.model_validate_json(fields[RESULT_MESSAGE]) for _, fields in entries]


def _wait_results(client: redis.Redis, stream: str, ids: set[str]) -> dict[str, TaskResultMessage]:
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        found = {m.task_id: m for m in _results_on(client, stream)}
        if ids <= set(found) or time.monotonic() > deadline:
            assert ids <= set(found), f"missing results: {sorted(ids - set(found))}"
            return found
        time.sleep(0.05)


def test_both_kinds_end_to_end_through_the_client(worker: WorkerProcess, client: InferqClient) -> None:
    triage_ids = client.submit_many("triage", [_triage_request(i) for i in range(8)])
    fraud_ids = client.submit_many("fraud", [_fraud_request(i) for i in range(8)])
    found = client.wait([*triage_ids, *fraud_ids], timeout_s=ANSWER_TIMEOUT_S)
    assert set(found) == {*triage_ids, *fraud_ids}
    for task_id in triage_ids:
        message = found[task_id]
        assert message.status is TaskStatus.OK and message.kind == "triage", message
        assert message.result is not None and 1 <= message.result.acuity <= 5  # type: ignore[union-attr]
        assert message.model is not None and "@" in message.model
    for task_id in fraud_ids:
        message = found[task_id]
        assert message.status is TaskStatus.OK and message.kind == "fraud", message
        assert message.result is not None and message.result.decision in ("approve", "review", "decline")  # type: ignore[union-attr]
    assert max(found[t].timings.batch_size for t in triage_ids) > 1, "tasks submitted together share batches"


def test_a_standard_celery_producer_is_answered(
    worker: WorkerProcess, redis_url: str, redis_client: redis.Redis
) -> None:
    producer = producer_app(redis_url)
    try:
        producer.send_task(TASK_TRIAGE, kwargs={"request": _triage_request(0)}, task_id="celery-t", queue="batch")
        producer.send_task(TASK_FRAUD, kwargs={"request": _fraud_request(1)}, task_id="celery-f", queue="realtime")
    finally:
        producer.close()
    assert _wait_results(redis_client, results_stream("triage"), {"celery-t"})["celery-t"].status is TaskStatus.OK
    assert _wait_results(redis_client, results_stream("fraud"), {"celery-f"})["celery-f"].status is TaskStatus.OK


def test_a_duplicate_submission_gives_one_result(
    worker: WorkerProcess, client: InferqClient, redis_client: redis.Redis
) -> None:
    first = client.submit("fraud", _fraud_request(0), task_id="same-id")
    client.submit("fraud", _fraud_request(0), task_id="same-id")
    assert client.result(first, timeout_s=ANSWER_TIMEOUT_S).status is TaskStatus.OK
    assert _wait_until(lambda: redis_client.xlen(queue_stream("realtime")) == 0), "both deliveries acked"
    assert len(_results_on(redis_client, client.reply_stream)) == 1


def _wait_until(condition: Callable[[], bool], timeout_s: float = ANSWER_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_task_past_its_deadline_is_expired(worker: WorkerProcess, client: InferqClient) -> None:
    request = {**_triage_request(1), "deadline": int(time.time() * 1000) - 1}
    task_id = client.submit("triage", request)
    message = client.result(task_id, timeout_s=ANSWER_TIMEOUT_S)
    assert message.status is TaskStatus.EXPIRED and message.timings.batch_size == 0


def test_an_invalid_task_in_the_middle_of_a_batch(worker: WorkerProcess, redis_client: redis.Redis) -> None:
    # Raw entries, as a non-Python producer sends them: the client would refuse the bad one.
    requests = [_triage_request(i) for i in range(5)]
    requests[2] = {"tenant": "ed", "note": "dizzy", "vitals": {"heart_rate": 900}}
    ids = [f"mid-{i}" for i in range(5)]
    entries = [("batch", raw_fields(TASK_TRIAGE, i, json.dumps(r))) for i, r in zip(ids, requests, strict=True)]
    call = EnqueueCall(entries, {"batch": 10_000})
    reply = enqueue_script(redis_client)(keys=call.keys, args=call.args)
    assert call.full_lane(reply) is None and len(call.entry_ids(reply)) == len(ids)
    found = _wait_results(redis_client, results_stream("triage"), set(ids))
    assert found["mid-2"].status is TaskStatus.INVALID
    assert found["mid-2"].error is not None and found["mid-2"].error.code.value == "vital_out_of_range"
    mates = [found[i] for i in ids if i != "mid-2"]
    assert all(m.status is TaskStatus.OK for m in mates)
    assert max(m.timings.batch_size for m in mates) > 1, "the valid ones still went as one batch"


def test_a_poison_task_reaches_the_dead_letter_stream(worker: WorkerProcess, redis_client: redis.Redis) -> None:
    """A task that took down every worker that held it: two consumers took it and never acked.

    Redis counts each hand-out (XREADGROUP, then XCLAIM) exactly as when workers crash holding
    a task. The entry is added and handed to the first of them in one MULTI, so the live worker
    never reads it as new; it claims it once idle and finds one delivery too many.
    """
    stream = queue_stream("batch")
    fields = raw_fields(TASK_TRIAGE, "poison", json.dumps(_triage_request(0)))
    pipe = redis_client.pipeline(transaction=True)
    pipe.xadd(stream, cast(Any, fields))
    pipe.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)  # BUSYGROUP if the worker made it
    pipe.xreadgroup(CONSUMER_GROUP, "crashed-1", {stream: ">"}, count=1)
    entry_id, _, taken = pipe.execute(raise_on_error=False)
    assert taken and taken[0][1][0][0] == entry_id
    redis_client.xclaim(stream, CONSUMER_GROUP, "crashed-2", 0, [entry_id])
    found = _wait_results(redis_client, results_stream("triage"), {"poison"})
    assert found["poison"].status is TaskStatus.FAILED
    assert found["poison"].error is not None and found["poison"].error.code.value == "too_many_deliveries"
    letters = cast(list[tuple[str, dict[str, str]]], redis_client.xrange(DEADLETTER_STREAM))
    assert [fields["task_id"] for _, fields in letters] == ["poison"]
    assert int(letters[0][1]["deliveries"]) == MAX_DELIVERIES + 1
    # The raw entry, losslessly: [[name, value], ...] (`worker.entries.raw_json`).
    assert ["id", "poison"] in json.loads(letters[0][1]["raw"])


def _result_counts(client: redis.Redis) -> Counter[str]:
    per_task: Counter[str] = Counter()
    for stream in client.scan_iter(match=RESULTS_PREFIX + "*", _type="stream"):
        for message in _results_on(client, str(stream)):
            per_task[message.task_id] += 1
    return per_task


def _pending_of(client: redis.Redis, consumer: str) -> int:
    return sum(
        len(client.xpending_range(queue_stream(lane), CONSUMER_GROUP, "-", "+", 10_000, consumername=consumer))
        for lane in LANES
    )


def test_sigterm_drains_in_flight_tasks_and_exits_zero(
    worker: WorkerProcess,
    spawn_worker: Callable[..., WorkerProcess],
    client: InferqClient,
    redis_client: redis.Redis,
) -> None:
    leaving = spawn_worker("it-leaving", INFERQ_LANES='["batch"]', INFERQ_KINDS='["triage"]', INFERQ_LOG_LEVEL="INFO")
    leaving.wait_ready(READY_TIMEOUT_S)
    ids = set(client.submit_many("triage", [_triage_request(i) for i in range(120)]))
    assert _wait_until(lambda: _pending_of(redis_client, "it-leaving") > 0, 20.0), "it never held a task"
    leaving.proc.send_signal(signal.SIGTERM)
    assert leaving.proc.wait(timeout=DRAIN_TIMEOUT_S + 5) == 0, leaving.log_tail()
    assert _pending_of(redis_client, "it-leaving") == 0, "nothing left pending for the stopped worker"
    stopped = [json.loads(line) for line in leaving.log_tail().splitlines() if '"worker.stopped"' in line]
    assert stopped and stopped[0]["drained"] is True
    found = client.wait(ids, timeout_s=ANSWER_TIMEOUT_S)
    assert set(found) == ids, "the remaining worker answered what the leaving one gave back"
    assert all(count == 1 for count in _result_counts(redis_client).values())


def test_the_registered_celery_tasks_run_in_process_too() -> None:
    """`apply()` (and eager mode) run the task body: one request, unbatched, same contract."""
    from worker.app import app, triage_task

    assert {TASK_TRIAGE, TASK_FRAUD} <= set(app.tasks)
    result = triage_task.apply(kwargs={"request": _triage_request(0)}).get()
    assert 1 <= result["acuity"] <= 5 and len(result["probabilities"]) == 5


def test_a_worker_whose_models_do_not_load_never_reports_ready_and_exits_nonzero(
    spawn_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    broken = spawn_worker("it-broken", INFERQ_MODELS_DIR=str(tmp_path))
    code = broken.proc.wait(timeout=READY_TIMEOUT_S)
    assert code != 0, broken.log_tail()
    assert "ModelLoadError" in broken.log_tail()
