"""Chaos: SIGKILL a worker with tasks in flight; the survivor answers every task exactly once.

Two real worker processes (`python -m worker.app`) share the lanes. One is killed while its
pending list in the consumer group holds tasks; after `INFERQ_CLAIM_IDLE_MS` the other claims
them. Every task id must then have exactly one entry on the result streams, none missing, none
duplicated, and the survivor must still stop cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from contracts.wire import LANES, RESULT_MESSAGE, RESULTS_PREFIX, queue_stream
from worker.client import InferqClient
from worker.keys import CONSUMER_GROUP
from worker.processes import WorkerProcess
from worker.processes import spawn_worker as spawn_worker_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CLAIM_IDLE_MS = 1500  # short, so the takeover happens within the test's budget
READY_TIMEOUT_S = 40.0  # two processes loading both models on a small shared machine
ANSWER_TIMEOUT_S = 40.0
DRAIN_TIMEOUT_S = 10.0
N_TRIAGE = 128
N_FRAUD = 128


@pytest.fixture
def spawn_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[[str], WorkerProcess]]:
    """Starts real worker processes; kills whatever is still running at the end."""
    started: list[WorkerProcess] = []

    def spawn(name: str) -> WorkerProcess:
        env = {
            "INFERQ_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "INFERQ_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
            "INFERQ_DEVICE": "cpu",
            "INFERQ_LOG_LEVEL": "WARNING",
        }
        worker = spawn_worker_process(redis_url, name, tmp_path, env)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()


def _wait_ready(workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.wait_ready(READY_TIMEOUT_S)


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(ev: Any, shift_s: float) -> dict[str, Any]:
    return {
        "amount": round(float(ev.amount), 2),
        "currency": ev.currency,
        "mcc": ev.mcc,
        "channel": ev.channel,
        "country": ev.country,
        "timestamp": _rfc3339(ev.timestamp + shift_s),
    }


def _fraud_requests(n: int) -> list[dict[str, Any]]:
    from training.fraud_sim import FraudSimulator, SimConfig

    out = []
    for example in FraudSimulator(SimConfig(seed=5, lengths=((16, 96, 1.0),))).examples(n):
        inp = example.input
        shift = time.time() - 60.0 - inp.transaction.timestamp
        out.append(
            {
                "tenant": "chaos",
                "transaction": _event(inp.transaction, shift),
                "history": [_event(e, shift) for e in inp.history],
            }
        )
    return out


def _triage_requests(n: int) -> list[dict[str, Any]]:
    from training.triage_data import generate

    return [{"tenant": "chaos", "note": ex.note} for ex in generate(n, seed=5)]


def _pending_of(client: redis.Redis, consumer: str) -> dict[str, list[str]]:
    """Entry ids pending for one consumer, per lane stream."""
    out: dict[str, list[str]] = {}
    for lane in LANES:
        rows = client.xpending_range(queue_stream(lane), CONSUMER_GROUP, "-", "+", 10_000, consumername=consumer)
        out[lane] = [row["message_id"] for row in rows]
    return out


def _kill_with_tasks_in_flight(client: redis.Redis, victim: WorkerProcess) -> dict[str, list[str]]:
    """SIGKILL the victim the moment its pending list is non-empty; what it held at that moment."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(_pending_of(client, victim.name).values()):
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            return _pending_of(client, victim.name)
        time.sleep(0.005)
    raise AssertionError("the victim never held a task")


def _result_counts(client: redis.Redis) -> tuple[Counter[str], Counter[str]]:
    """(entries per task id, statuses) over every result stream."""
    per_task: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for stream in client.scan_iter(match=RESULTS_PREFIX + "*", _type="stream"):
        for _, fields in client.xrange(stream):
            message = json.loads(fields[RESULT_MESSAGE])
            per_task[message["task_id"]] += 1
            statuses[message["status"]] += 1
    return per_task, statuses


def _group_pending(client: redis.Redis) -> int:
    return sum(int(client.xpending(queue_stream(lane), CONSUMER_GROUP)["pending"]) for lane in LANES)


def _wait_all_answered(client: redis.Redis, ids: set[str]) -> Counter[str]:
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline:
        per_task, _ = _result_counts(client)
        if ids <= set(per_task) and _group_pending(client) == 0:
            return per_task
        time.sleep(0.25)
    per_task, _ = _result_counts(client)
    raise AssertionError(f"{len(ids - set(per_task))} of {len(ids)} tasks unanswered after the kill")


@pytest.mark.timeout(120)
def test_sigkill_with_tasks_in_flight_every_task_answered_exactly_once(
    redis_url: str, redis_client: redis.Redis, spawn_worker: Callable[[str], WorkerProcess]
) -> None:
    victim, survivor = spawn_worker("chaos-victim"), spawn_worker("chaos-survivor")
    _wait_ready([victim, survivor])
    with InferqClient(redis_url) as producer:
        ids = producer.submit_many("triage", _triage_requests(N_TRIAGE))
        ids += producer.submit_many("fraud", _fraud_requests(N_FRAUD))
        held = _kill_with_tasks_in_flight(redis_client, victim)
        assert victim.proc.returncode == -signal.SIGKILL

        per_task = _wait_all_answered(redis_client, set(ids))
        _, statuses = _result_counts(redis_client)

    assert sum(len(entries) for entries in held.values()) > 0
    assert set(per_task) == set(ids)
    assert [task_id for task_id, n in per_task.items() if n != 1] == []
    assert statuses == Counter(ok=len(ids))
    assert _pending_of(redis_client, victim.name) == {lane: [] for lane in LANES}

    survivor.proc.send_signal(signal.SIGTERM)
    assert survivor.proc.wait(DRAIN_TIMEOUT_S + 5.0) == 0
