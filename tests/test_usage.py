"""Usage metering against a real Redis: FINISH meters with the result, once; a real worker's counts;
the `inferq usage` report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import redis

from contracts import ErrorCode, FraudResult, TaskResultMessage, Timings
from contracts.wire import queue_stream, results_stream
from worker.client import InferqClient, raw_fields
from worker.config import Settings
from worker.entries import Delivery
from worker.ingress import Ingress
from worker.keys import CONSUMER_GROUP, usage_key
from worker.metrics import OTHER_TENANT, TenantLabels
from worker.outcomes import AckOnly, Answer, DeadLetter, Outcome, Publisher
from worker.processes import WorkerProcess, spawn_worker
from worker.transport import enqueue
from worker.usage import Usage, apportion, day_of

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
JAN_1 = int(datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp() * 1000)  # noon, 2026-01-01 UTC
READY_TIMEOUT_S = 120.0  # model loading on a small, shared machine
ANSWER_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------------------------
# Apportioning and the tenant label cap (no Redis)


def test_apportion_by_tokens_sums_to_the_batch_time() -> None:
    shares = apportion(0.9, [100, 200, 600])
    assert shares == pytest.approx([0.1, 0.2, 0.6])
    assert sum(shares) == pytest.approx(0.9)
    assert apportion(0.3, [0, 0, 0]) == pytest.approx([0.1, 0.1, 0.1])
    assert apportion(1.0, []) == []


def test_tenant_labels_are_capped() -> None:
    labels = TenantLabels(2)
    assert [labels.label(t) for t in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER_TENANT, "a", OTHER_TENANT, "b"]
    assert TenantLabels(0).label("a") == OTHER_TENANT


# ---------------------------------------------------------------------------------------------
# FINISH meters usage with the result, once


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_url=None, claim_idle_ms=200, max_deliveries=2, result_ttl_s=600, usage_retention_days=3)


def _deliveries(client: redis.Redis, ingress: Ingress, *task_ids: str) -> list[Delivery]:
    for task_id in task_ids:
        enqueue(client, "realtime", raw_fields("inferq.fraud", task_id, json.dumps({"tenant": "acme"})), 1000)
    return ingress.fetch(["realtime"], 100, None)


def _ok(task_id: str, finished_at: int = JAN_1) -> TaskResultMessage:
    return TaskResultMessage.ok(task_id, FraudResult(score=0.1, decision="approve"), model="fraud@test",
                                timings=Timings.none(), finished_at=finished_at)


def _failed(task_id: str, finished_at: int = JAN_1) -> TaskResultMessage:
    return TaskResultMessage.failed(task_id, "fraud", ErrorCode.MODEL_ERROR, "test", timings=Timings.none(),
                                    finished_at=finished_at)


def _hash(client: redis.Redis, day: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(usage_key(day)).items()}


def test_a_posted_result_is_metered_and_a_redelivery_is_not(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    first, second = _deliveries(client, ingress, "t1", "t1")  # the same task id delivered twice
    stream = results_stream("fraud")
    assert publisher.finish(Answer(first, _ok("t1"), stream, Usage("acme", 0.25))) is True
    assert _hash(client, "2026-01-01") == {"acme|fraud|inferences": "1", "acme|fraud|compute_us": "250000"}
    # The second delivery computed again: its result is not posted, and nothing is metered.
    assert publisher.finish(Answer(second, _ok("t1"), stream, Usage("acme", 0.5))) is False
    assert publisher.finish(AckOnly(second)) is False
    # The first FINISH retried (its reply lost): the marker holds, nothing more is counted.
    assert publisher.finish(Answer(first, _ok("t1"), stream, Usage("acme", 0.25))) is False
    assert _hash(client, "2026-01-01") == {"acme|fraud|inferences": "1", "acme|fraud|compute_us": "250000"}
    assert len(client.xrange(stream)) == 1
    assert 0 < client.ttl(usage_key("2026-01-01")) <= 3 * 86_400


def test_failed_results_count_compute_not_inferences_and_other_outcomes_nothing(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    a, b, c, d = _deliveries(client, ingress, "f1", "o1", "d1", "n1")
    stream = results_stream("fraud")
    outcomes: list[Outcome] = [
        Answer(a, _failed("f1"), stream, Usage("acme", 0.125)),  # computed, the model raised
        Answer(b, _ok("o1", JAN_1 + DAY_MS), stream, Usage("beta", 0.001)),  # the next day
        DeadLetter(c, ErrorCode.TOO_MANY_DELIVERIES, "poison"),  # never computed
        Answer(d, _failed("n1"), stream),  # answered without reaching the model (no usage)
    ]
    assert publisher.finish_many(outcomes) == [True, True, True, True]
    assert _hash(client, "2026-01-01") == {"acme|fraud|inferences": "0", "acme|fraud|compute_us": "125000"}
    assert _hash(client, "2026-01-02") == {"beta|fraud|inferences": "1", "beta|fraud|compute_us": "1000"}
    assert client.xpending(queue_stream("realtime"), CONSUMER_GROUP)["pending"] == 0


def test_a_usage_key_of_another_type_never_holds_back_the_result(
    client: redis.Redis, ingress: Ingress, publisher: Publisher
) -> None:
    client.set(usage_key("2026-01-01"), "in the way")
    [delivery] = _deliveries(client, ingress, "w1")
    assert publisher.finish(Answer(delivery, _ok("w1"), results_stream("fraud"), Usage("acme", 0.1))) is True
    assert len(client.xrange(results_stream("fraud"))) == 1
    assert client.get(usage_key("2026-01-01")) == b"in the way"
    assert client.xpending(queue_stream("realtime"), CONSUMER_GROUP)["pending"] == 0


# ---------------------------------------------------------------------------------------------
# The report


def _inferq(*args: str, url: str, price: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INFERQ_REDIS_URL": url}
    env.pop("INFERQ_PRICE_PER_DEVICE_HOUR", None)
    if price is not None:
        env["INFERQ_PRICE_PER_DEVICE_HOUR"] = price
    return subprocess.run([sys.executable, "-m", "worker.cli", "usage", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_the_usage_command_reports_days_tenants_and_cost(
    client: redis.Redis, ingress: Ingress, publisher: Publisher, redis_url: str
) -> None:
    ids = ["a1", "a2", "a3", "b1", "b2", "c1"]
    deliveries = dict(zip(ids, _deliveries(client, ingress, *ids), strict=True))
    stream = results_stream("fraud")
    plan = [("a1", "acme", JAN_1, 0.5, True), ("a2", "acme", JAN_1, 1.0, True), ("a3", "acme", JAN_1, 1.5, False),
            ("b1", "beta", JAN_1, 0.25, True), ("b2", "beta", JAN_1 + DAY_MS, 0.75, True),
            ("c1", "acme", JAN_1 + 2 * DAY_MS, 9.0, True)]  # outside the days asked for
    publisher.finish_many([
        Answer(deliveries[t], (_ok if ok else _failed)(t, at), stream, Usage(tenant, s))
        for t, tenant, at, s, ok in plan
    ])

    done = _inferq("--since", "2026-01-01", "--until", "2026-01-02", "--json", url=redis_url, price="7.2")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["price_per_device_hour"] == 7.2
    # acme on the 1st: 2 inferences (a3 failed), 3.0 s; 7.2 per hour = 0.002 per second -> 3.0 s cost 0.006,
    # spread over 2 inferences = 3.0 per 1,000.
    assert report["rows"] == [
        {"day": "2026-01-01", "tenant": "acme", "kind": "fraud", "inferences": 2, "compute_s": 3.0,
         "cost_per_1k": pytest.approx(3.0)},
        {"day": "2026-01-01", "tenant": "beta", "kind": "fraud", "inferences": 1, "compute_s": 0.25,
         "cost_per_1k": pytest.approx(0.5)},
        {"day": "2026-01-02", "tenant": "beta", "kind": "fraud", "inferences": 1, "compute_s": 0.75,
         "cost_per_1k": pytest.approx(1.5)},
    ]

    only = _inferq("--since", "2026-01-01", "--until", "2026-01-03", "--tenant", "acme", "--json", url=redis_url)
    rows = json.loads(only.stdout)["rows"]
    assert [(r["day"], r["inferences"], r["compute_s"], r["cost_per_1k"]) for r in rows] == [
        ("2026-01-01", 2, 3.0, None), ("2026-01-03", 1, 9.0, None)]

    table = _inferq("--since", "2026-01-01", "--until", "2026-01-02", url=redis_url, price="7.2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["day", "tenant", "kind", "inferences", "compute", "s", "cost/1k"]
    assert [line.split() for line in lines[2:5]] == [
        ["2026-01-01", "acme", "fraud", "2", "3.000", "3.0000"],
        ["2026-01-01", "beta", "fraud", "1", "0.250", "0.5000"],
        ["2026-01-02", "beta", "fraud", "1", "0.750", "1.5000"],
    ]
    # 4 inferences, 4.0 s: 4.0 s x 0.002 / 4 x 1,000 = 2.0
    assert lines[-1].split() == ["total", "4", "4.000", "2.0000"]

    bad = _inferq("--since", "2026-13-01", url=redis_url)
    assert bad.returncode == 2 and "not a day" in bad.stderr


# ---------------------------------------------------------------------------------------------
# A real worker, a known set of tasks across tenants


def _event(amount: float, ago_s: float, country: str = "DE") -> dict[str, Any]:
    at = datetime.fromtimestamp(time.time() - ago_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"amount": amount, "currency": "EUR", "mcc": "5411", "channel": "card_present", "country": country,
            "timestamp": at, "device_id": "pos-1"}


def _fraud(tenant: str, i: int) -> dict[str, Any]:
    history = [_event(20.0 + k, 86_400 * 60 - 3_600 * k) for k in range(8 + 4 * i)]
    return {"tenant": tenant, "transaction": _event(15.0 + 40 * i, 60, "DE" if i % 2 else "BR"), "history": history}


def _triage(tenant: str, i: int) -> dict[str, Any]:
    notes = ["c/o crushing chest pain radiating to left arm x30 min, diaphoretic, hx CAD",
             "pt states sore throat x3 days, no fever, eating and drinking",
             "fall from standing, wrist pain and swelling, no LOC, denies head strike"]
    return {"tenant": tenant, "note": notes[i % len(notes)], "age": 30 + i}


def _metrics(worker: WorkerProcess) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("inferq_usage_", "inferq_compute_seconds_sum")):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


@pytest.fixture(scope="module")
def worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    process = spawn_worker(redis_url, "usage-worker", tmp_path_factory.mktemp("usage"), {
        "INFERQ_DEVICE": "cpu", "INFERQ_LOG_LEVEL": "WARNING", "INFERQ_BATCH_MAX_WAIT_MS": "50",
        "INFERQ_METRICS_MAX_TENANTS": "2",
    })
    try:
        process.wait_ready(READY_TIMEOUT_S)
        yield process
    finally:
        process.stop(timeout_s=30)


@pytest.mark.slow
def test_a_worker_meters_a_known_set_of_tasks_exactly(
    worker: WorkerProcess, redis_client: redis.Redis, redis_url: str
) -> None:
    plan = {("acme", "fraud"): 5, ("acme", "triage"): 2, ("beta", "fraud"): 3, ("clinic", "triage"): 4}
    with InferqClient(redis_url) as producer:
        ids: list[str] = []
        for (tenant, kind), count in plan.items():
            build = _fraud if kind == "fraud" else _triage
            ids += producer.submit_many(kind, [build(tenant, i) for i in range(count)])  # type: ignore[arg-type]
        # The same task id submitted twice: one result, one inference.
        ids.append(producer.submit("fraud", _fraud("beta", 9), task_id="usage-dup"))
        producer.submit("fraud", _fraud("beta", 9), task_id="usage-dup")
        # Refused by the contract on the worker (no transaction): answered invalid, not metered.
        enqueue(redis_client, "realtime", raw_fields("inferq.fraud", "usage-bad", json.dumps({"tenant": "beta"})), 100)
        found = producer.wait(ids, ANSWER_TIMEOUT_S)
    assert set(found) == set(ids) and all(m.status.value == "ok" for m in found.values())
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while not redis_client.exists("inferq:done:usage-bad") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.exists("inferq:done:usage-bad")

    # A redelivery of an answered task (the same id queued again afterwards) is acked, not metered.
    day = day_of(max(m.finished_at for m in found.values()))
    before = cast(dict[str, str], redis_client.hgetall(usage_key(day)))
    enqueue(redis_client, "realtime", raw_fields("inferq.fraud", ids[0], json.dumps(_fraud("acme", 0))), 100)
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while redis_client.xlen(queue_stream("realtime")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.xlen(queue_stream("realtime")) == 0
    usage = cast(dict[str, str], redis_client.hgetall(usage_key(day)))
    assert usage == before

    expected = dict(plan)
    expected["beta", "fraud"] += 1  # usage-dup, once
    inferences = {tuple(k.split("|")[:2]): int(v) for k, v in usage.items() if k.endswith("|inferences")}
    compute_us = {tuple(k.split("|")[:2]): int(v) for k, v in usage.items() if k.endswith("|compute_us")}
    assert inferences == expected
    assert set(compute_us) == set(expected) and all(v > 0 for v in compute_us.values())

    # The worker's own counters agree: the batch time it measured is what was apportioned (to a
    # microsecond per task), and the first two tenants it metered have labels, the third counts as _other.
    # Fraud: the duplicate's second delivery may have been computed before the first was answered; that
    # time is the worker's, not metered again, so fraud's metered time is at most its batch time.
    seen = _metrics(worker)
    for kind in ("fraud", "triage"):
        batches_s = sum(v for k, v in seen.items() if k.startswith("inferq_compute_seconds_sum") and
                        f'kind="{kind}"' in k)
        metered_s = sum(v for (_, k), v in compute_us.items() if k == kind) / 1e6
        tasks = sum(n for (_, k), n in expected.items() if k == kind)
        if kind == "triage":
            assert metered_s == pytest.approx(batches_s, abs=tasks * 1e-6)
        else:
            assert 0 < metered_s <= batches_s + tasks * 1e-6
    metered = {k: v for k, v in seen.items() if k.startswith("inferq_usage_compute_seconds_total{")}
    assert sum(metered.values()) == pytest.approx(sum(compute_us.values()) / 1e6, abs=1e-6)
    labelled = {k: v for k, v in seen.items() if k.startswith("inferq_usage_inferences_total{")}
    assert sum(labelled.values()) == sum(expected.values())
    tenants = {k.split('tenant="')[1].split('"')[0] for k in labelled}
    assert len(tenants - {OTHER_TENANT}) == 2 and OTHER_TENANT in tenants
