"""Stock Celery producers, end to end: a Celery app that knows nothing of inferq (`broker="redis://..."`,
kombu's own Redis transport) sends to the lane-named queues and to Celery's default queue, real
worker processes (`python -m worker.app`) move the messages from kombu's lists into the lanes
(`worker.celery_lists`) and answer each task exactly once, also when a worker is SIGKILLed mid-way.

The producer is a process of its own, `tests/stock_celery_producer.py`, which imports only celery.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from contracts import TaskResultMessage, TaskStatus
from contracts.wire import DEADLETTER_STREAM, LANES, RESULT_MESSAGE, RESULTS_PREFIX, queue_stream
from worker.celery_lists import priority_lists
from worker.keys import CONSUMER_GROUP
from worker.processes import WorkerProcess
from worker.processes import spawn_worker as spawn_worker_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
PRODUCER = TESTS / "stock_celery_producer.py"
READY_TIMEOUT_S = 90.0  # model loading on a small, shared machine
ANSWER_TIMEOUT_S = 60.0
CLAIM_IDLE_MS = 1000  # a killed worker's tasks are taken over quickly
REALTIME_LIMIT = 8  # small, so the bridge holds most of a burst back in the list
POLL_MS = 50
REPLY = "inferq:results:stock-ed"


@pytest.fixture(scope="module")
def spawn(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []
    log_dir = tmp_path_factory.mktemp("stock-celery-workers")

    def start(name: str, **env: str) -> WorkerProcess:
        worker = spawn_worker_process(redis_url, name, log_dir, {
            "INFERQ_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS), "INFERQ_DEVICE": "cpu", "INFERQ_LOG_LEVEL": "WARNING",
            "INFERQ_REALTIME_QUEUE_LIMIT": str(REALTIME_LIMIT), "INFERQ_CELERY_LIST_POLL_MS": str(POLL_MS),
            "INFERQ_DRAIN_TIMEOUT_S": "10", **env,
        })
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.terminate()
    for worker in started:
        worker.stop(timeout_s=15)


@pytest.fixture(scope="module")
def worker(spawn: Callable[..., WorkerProcess]) -> WorkerProcess:
    process = spawn("stock-main")
    process.wait_ready(READY_TIMEOUT_S)
    return process


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _event(amount: float, ago_s: float) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR", "mcc": "5411", "channel": "card_present", "country": "DE",
            "timestamp": _rfc3339(time.time() - ago_s), "device_id": "pos-1"}


def fraud_request(i: int, events: int = 12, **extra: Any) -> dict[str, Any]:
    history = [_event(20.0 + k, 3600.0 * (events - k) + 120) for k in range(events)]
    return {"tenant": "bank", "transaction": _event(15.0 + 7 * i, 60), "history": history, **extra}


def triage_request(i: int, **extra: Any) -> dict[str, Any]:
    notes = ["c/o crushing chest pain radiating to left arm x30 min, diaphoretic",
             "sore throat x3 days, no fever, eating and drinking"]
    return {"tenant": "ed", "note": notes[i % len(notes)], "age": 30 + i, **extra}


def produce(redis_url: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the stock producer process; the ids it sent, in order, with their send times."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("INFERQ_")}
    done = subprocess.run([sys.executable, str(PRODUCER), redis_url], input=json.dumps(tasks), env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    sent = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(sent) == len(tasks)
    return sent


def results(client: redis.Redis) -> dict[str, list[tuple[str, TaskResultMessage]]]:
    """Every result entry on every result stream, by task id: (stream, message)."""
    found: dict[str, list[tuple[str, TaskResultMessage]]] = {}
    for key in client.scan_iter(match=RESULTS_PREFIX + "*", _type="stream"):
        for _, fields in client.xrange(key):
            message = TaskResultMessage.model_validate_json(fields[RESULT_MESSAGE])
            found.setdefault(message.task_id, []).append((str(key), message))
    return found


def wait_for(client: redis.Redis, ids: set[str]) -> dict[str, list[tuple[str, TaskResultMessage]]]:
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        found = results(client)
        if ids <= set(found):
            return found
        assert time.monotonic() < deadline, f"no result for {sorted(ids - set(found))[:5]}"
        time.sleep(0.1)


def waiting_in_lists(client: redis.Redis) -> int:
    return sum(int(client.llen(name)) for queue in ("realtime", "batch", "celery") for name in priority_lists(queue))


def test_a_stock_celery_producer_process_is_answered_exactly_once(
    worker: WorkerProcess, redis_url: str, redis_client: redis.Redis
) -> None:
    tasks = [
        *({"task": "inferq.triage", "request": triage_request(i), "queue": "batch"} for i in range(4)),
        {"task": "inferq.triage", "request": triage_request(5, reply_to=REPLY), "queue": "batch"},
        *({"task": "inferq.fraud", "request": fraud_request(i), "queue": "realtime"} for i in range(4)),
        {"task": "inferq.fraud", "request": fraud_request(9), "queue": "realtime", "priority": 9},
        {"task": "inferq.triage", "request": triage_request(6)},  # no queue: Celery's default, `celery`
        {"task": "inferq.fraud", "request": {"tenant": "bank"}, "queue": "realtime"},  # breaks the contract
        {"task": "inferq.triag", "request": triage_request(7, reply_to=REPLY), "queue": "batch"},  # misspelt
    ]
    sent = produce(redis_url, tasks)
    ids = [s["id"] for s in sent]
    found = wait_for(redis_client, set(ids))
    time.sleep(1.0)  # anything that would come twice has had time to
    found = results(redis_client)
    assert {task_id: len(entries) for task_id, entries in found.items() if task_id in ids} == dict.fromkeys(ids, 1)
    streams = {task_id: found[task_id][0][0] for task_id in ids}
    statuses = {task_id: found[task_id][0][1].status for task_id in ids}
    assert [statuses[i] for i in ids[:11]] == [TaskStatus.OK] * 11
    assert [streams[i] for i in ids[:11]] == (["inferq:results:triage"] * 4 + [REPLY] + ["inferq:results:fraud"] * 5
                                              + ["inferq:results:triage"])
    assert (statuses[ids[11]], streams[ids[11]]) == (TaskStatus.INVALID, "inferq:results:fraud")
    misspelt = found[ids[12]][0][1]
    assert (misspelt.status, streams[ids[12]]) == (TaskStatus.INVALID, REPLY)
    assert misspelt.error is not None and misspelt.error.code.value == "unknown_task"
    assert waiting_in_lists(redis_client) == 0
    assert redis_client.xlen(DEADLETTER_STREAM) == 0


def test_the_bridge_adds_at_most_its_poll_time(
    worker: WorkerProcess, redis_url: str, redis_client: redis.Redis
) -> None:
    """Latency of one fraud task on an idle worker: the stock Celery list against a direct XADD."""
    app = Celery("stock-latency", broker=redis_url, set_as_current=False)
    bridged: list[float] = []
    direct: list[float] = []
    try:
        for i in range(20):
            for via, into in (("list", bridged), ("xadd", direct)):
                stream = f"{RESULTS_PREFIX}latency-{via}-{i}"
                request = fraud_request(i, reply_to=stream)
                start = time.perf_counter()
                if via == "list":
                    app.send_task("inferq.fraud", kwargs={"request": request}, queue="realtime")
                else:
                    redis_client.xadd(queue_stream("realtime"), {"task": "inferq.fraud", "id": f"direct-{i}",
                                                                 "request": json.dumps(request)})
                assert redis_client.xread({stream: "0-0"}, count=1, block=int(ANSWER_TIMEOUT_S * 1000))
                into.append((time.perf_counter() - start) * 1000.0)
    finally:
        app.close()
    added = statistics.median(bridged) - statistics.median(direct)
    print(f"\nbridged ms: median {statistics.median(bridged):.1f} max {max(bridged):.1f}; direct ms: median "
          f"{statistics.median(direct):.1f} max {max(direct):.1f}; added by the bridge (median) {added:.1f} ms "
          f"(poll {POLL_MS} ms)")
    # The bridge runs before each fetch and a fetch blocks at most POLL_MS: about half of it on average.
    assert added < POLL_MS + 25, f"bridged {sorted(bridged)}, direct {sorted(direct)}"


def test_a_worker_killed_mid_way_loses_or_doubles_nothing_from_the_list(
    worker: WorkerProcess, spawn: Callable[..., WorkerProcess], redis_url: str, redis_client: redis.Redis
) -> None:
    victim = spawn("stock-victim", INFERQ_KINDS='["fraud"]', INFERQ_LANES='["realtime"]',
                   INFERQ_FETCH_COUNT="4", INFERQ_REALTIME_MAX_BATCH_SIZE="4", INFERQ_CELERY_LIST_BATCH="2")
    victim.wait_ready(READY_TIMEOUT_S)
    count = 160
    sent = produce(redis_url, [{"task": "inferq.fraud", "request": fraud_request(i, events=48), "queue": "realtime"}
                               for i in range(count)])
    ids = {s["id"] for s in sent}
    # SIGKILL the victim at a moment it holds tasks while the list still holds more.
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    held = 0
    while time.monotonic() < deadline:
        pending = redis_client.xpending(queue_stream("realtime"), CONSUMER_GROUP)
        held = dict((c["name"], int(c["pending"])) for c in pending.get("consumers", [])).get("stock-victim", 0)
        if held and waiting_in_lists(redis_client):
            victim.proc.kill()
            break
        time.sleep(0.005)
    assert victim.proc.wait(timeout=10) == -9, "the victim was killed while holding tasks"
    waiting_then = waiting_in_lists(redis_client)
    print(f"\nkilled holding {held} tasks with {waiting_then} still in the list")
    assert held > 0 and waiting_then > 0
    found = wait_for(redis_client, ids)
    time.sleep(1.0)
    found = results(redis_client)
    counts = Counter({task_id: len(found.get(task_id, [])) for task_id in ids})
    assert [task_id for task_id, n in counts.items() if n != 1] == []
    assert all(entries[0][1].status is TaskStatus.OK for task_id, entries in found.items() if task_id in ids)
    # Each message went into the lane exactly once: the stream counts every XADD it ever took.
    info = redis_client.xinfo_stream(queue_stream("realtime"))
    assert int(info["entries-added"]) == count
    assert waiting_in_lists(redis_client) == 0 and redis_client.xlen(DEADLETTER_STREAM) == 0
    assert all(redis_client.xlen(queue_stream(lane)) == 0 for lane in LANES)


def test_raw_entries_are_answered_on_their_reply_to_field(worker: WorkerProcess, redis_client: redis.Redis) -> None:
    """Every answer reaches its producer: the entry's own reply_to field names the stream even when the
    request cannot be read or the task name is not inferq's, and wins over the request's own."""
    mine, theirs = f"{RESULTS_PREFIX}raw-producer", f"{RESULTS_PREFIX}elsewhere"
    entries = {
        "r-json": ("batch", {"task": "inferq.triage", "request": "{not json"}),
        "r-array": ("realtime", {"task": "inferq.fraud", "request": "[1, 2]"}),
        "r-task": ("batch", {"task": "inferq.triag", "request": json.dumps(triage_request(1))}),
        "r-both": ("realtime", {"task": "inferq.fraud", "request": json.dumps(fraud_request(1, reply_to=theirs))}),
        "r-bad": ("batch", {"task": "inferq.triage", "request": json.dumps(triage_request(2, reply_to=theirs)),
                            "reply_to": "inferq:queue:batch"}),
    }
    for task_id, (lane, fields) in entries.items():
        redis_client.xadd(queue_stream(lane), {"reply_to": mine, **fields, "id": task_id})
    found = wait_for(redis_client, set(entries))
    time.sleep(0.5)
    found = results(redis_client)
    answers = {task_id: [(stream, m.status.value, m.error.code.value if m.error else None)
                         for stream, m in found[task_id]] for task_id in entries}
    assert answers == {
        "r-json": [(mine, "invalid", "invalid_json")],
        "r-array": [(mine, "invalid", "wrong_type")],
        "r-task": [(mine, "invalid", "unknown_task")],
        "r-both": [(mine, "ok", None)],
        "r-bad": [(theirs, "invalid", "bad_reply_to")],  # an unusable field: the request's own stream
    }
    assert redis_client.xlen(DEADLETTER_STREAM) == 0
