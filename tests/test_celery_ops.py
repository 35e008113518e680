"""inferq the Celery way, against one real worker process: results through a result backend, remote
control (`celery inspect`, `celery status`, `celery control shutdown`) and task events from stock Celery
clients, and the worker's log, every line of it JSON.

One worker serves the whole module (loading the models is the slow part); the tests run in file order,
the shutdown test stops the worker and the log test reads everything the worker wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from worker.client import InferqClient
from worker.processes import WorkerProcess, spawn_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
NODE = "inferq@celery-ops"
START_TIMEOUT_S = 240.0
ANSWER_TIMEOUT_S = 60.0
# Words of the requests that must never reach the log: a note's text, a transaction's merchant and device.
NOTE = "thunderclap headache onset while lifting crates, worst of life"
MERCHANT = "m-secret-shop-7731"
DEVICE = "dev-never-logged-42"


def _rfc3339(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def fraud_request(i: int) -> dict[str, Any]:
    def event(amount: float, ago_s: float) -> dict[str, Any]:
        return {"amount": amount, "currency": "EUR", "mcc": "5411", "channel": "ecommerce", "country": "DE",
                "timestamp": _rfc3339(time.time() - ago_s), "merchant_id": MERCHANT, "device_id": DEVICE}

    return {"tenant": "bank", "transaction": event(15.0 + 40 * i, 60),
            "history": [event(20.0 + k, 86_400 * (10 - k)) for k in range(6)]}


def triage_request(i: int) -> dict[str, Any]:
    return {"tenant": "ed", "note": f"{NOTE} #{i}", "age": 30 + i % 50}


@pytest.fixture(scope="module")
def db_url(redis_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def worker(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    env = {"INFERQ_DEVICE": "cpu", "INFERQ_LOG_LEVEL": "DEBUG", "INFERQ_LOG_JSON": "true",
           "INFERQ_BATCH_MAX_BATCH_SIZE": "16"}
    process = spawn_worker(db_url, "celery-ops", tmp_path_factory.mktemp("celery-ops"), env)
    try:
        process.wait_ready(START_TIMEOUT_S)
        yield process
    finally:
        process.stop(30.0)


@pytest.fixture
def stock_app(db_url: str) -> Iterator[Celery]:
    """A plain Celery app on the same database: kombu's own Redis transport, nothing of inferq's."""
    app = Celery("operator", broker=db_url, set_as_current=False)
    yield app
    app.close()


def _celery_cli(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "celery"), *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=ROOT, env={**os.environ})


def test_celery_inspect_ping_from_the_cli(worker: WorkerProcess, db_url: str) -> None:
    # With inferq's app (its transport), and with a bare Celery on the broker URL alone.
    ours = _celery_cli("-A", "worker.app", "-b", db_url, "inspect", "ping", "--timeout", "5")
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert f"{NODE}: OK" in ours.stdout and "pong" in ours.stdout
    stock = _celery_cli("-b", db_url, "status", "--timeout", "5")
    assert stock.returncode == 0, stock.stdout + stock.stderr
    assert f"{NODE}: OK" in stock.stdout and "1 node online" in stock.stdout


def test_stock_app_inspects_registered_queues_and_stats(worker: WorkerProcess, stock_app: Celery,
                                                        db_url: str) -> None:
    inspect = stock_app.control.inspect(timeout=5.0)
    assert inspect.registered() == {NODE: ["inferq.fraud", "inferq.triage"]}
    queues = inspect.active_queues()
    assert queues is not None and sorted(q["name"] for q in queues[NODE]) == ["batch", "realtime"]
    with InferqClient(db_url) as client:
        ids = client.submit_many("fraud", [fraud_request(i) for i in range(3)])
        assert len(client.wait(ids, ANSWER_TIMEOUT_S)) == 3
    stats = inspect.stats()
    assert stats is not None
    own = stats[NODE]["inferq"]
    assert own["lanes"] == ["realtime", "batch"] and sorted(own["kinds"]) == ["fraud", "triage"]
    assert own["batches"] >= 1 and own["answered"].get("ok", 0) >= 3 and own["ready"] is True
    assert stats[NODE]["total"].get("inferq.fraud", 0) >= 3
    [refused] = stock_app.control.revoke(ids[0], reply=True, timeout=5.0)
    assert "do not revoke" in refused[NODE]["error"]


def test_active_lists_tasks_in_hand_without_their_requests(worker: WorkerProcess, stock_app: Celery,
                                                           db_url: str) -> None:
    with InferqClient(db_url) as client:
        ids = set(client.submit_many("triage", [triage_request(i) for i in range(120)]))
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not seen and time.monotonic() < deadline:
            reply = stock_app.control.inspect(timeout=2.0).active() or {}
            seen = reply.get(NODE, [])
        client.wait(list(ids), ANSWER_TIMEOUT_S)
    assert seen, "the worker held tasks while computing them"
    assert {task["id"] for task in seen} <= ids
    assert {task["name"] for task in seen} == {"inferq.triage"}
    assert all(task["lane"] == "batch" and task["args"] == "<omitted>" for task in seen)
    assert NOTE not in json.dumps(seen)


def test_task_events_reach_a_stock_receiver(worker: WorkerProcess, stock_app: Celery, db_url: str) -> None:
    events: list[dict[str, Any]] = []
    ready = threading.Event()

    def capture() -> None:
        with stock_app.connection_for_read() as connection:
            receiver = stock_app.events.Receiver(connection, handlers={"*": events.append})
            ready.set()
            with contextlib.suppress(TimeoutError):  # it listens 20 s at most, then ends quietly
                receiver.capture(limit=None, timeout=20.0, wakeup=False)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    assert ready.wait(10.0)
    time.sleep(0.5)  # the receiver subscribes after building its consumer
    replies = stock_app.control.enable_events(reply=True, timeout=5.0)  # what Flower sends
    assert replies and NODE in replies[0]
    try:
        with InferqClient(db_url) as client:
            ok_id = client.submit("fraud", fraud_request(1))
            bad_id = client.submit("fraud", {**fraud_request(2), "deadline": int(time.time() * 1000) - 60_000})
            assert len(client.wait([ok_id, bad_id], ANSWER_TIMEOUT_S)) == 2
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and not _has(events, "task-succeeded", ok_id):
            time.sleep(0.2)
    finally:
        stock_app.control.disable_events()
    assert _has(events, "worker-heartbeat", None)
    for kind in ("task-received", "task-started", "task-succeeded"):
        assert _has(events, kind, ok_id), kind
    succeeded = next(e for e in events if e["type"] == "task-succeeded" and e["uuid"] == ok_id)
    assert succeeded["hostname"] == NODE and succeeded["runtime"] > 0
    failed = [e for e in events if e["type"] == "task-failed" and e.get("uuid") == bad_id]
    assert failed and "expired" in failed[0]["exception"]
    assert MERCHANT not in json.dumps(events) and DEVICE not in json.dumps(events)


def _has(events: list[dict[str, Any]], kind: str, task_id: str | None) -> bool:
    return any(e["type"] == kind and (task_id is None or e.get("uuid") == task_id) for e in events)


STOCK_CLIENT = textwrap.dedent("""
    import json, sys, time
    from celery import Celery
    url, before_id = sys.argv[1], sys.argv[2]
    # A stock app: configuration by names only, nothing of inferq imported here.
    app = Celery("producer", broker=url, backend="inferq+" + url, set_as_current=False)
    app.conf.update(broker_transport="worker.transport:Transport", task_serializer="json")
    out = {}
    ok = app.send_task("inferq.fraud", kwargs={"request": REQUEST_OK}, queue="realtime")
    out["ok"] = ok.get(timeout=60)
    out["ok_state"], out["ok_ready"] = ok.state, ok.ready()
    bad = app.send_task("inferq.triage", kwargs={"request": {"tenant": "ed", "note": "x", "age": -4}},
                        queue="batch")
    try:
        bad.get(timeout=60)
        out["bad"] = "no exception"
    except Exception as exc:
        out["bad"] = {"type": type(exc).__name__, "code": exc.code, "status": exc.status, "field": exc.field}
    out["bad_state"], out["bad_ready"] = bad.state, bad.ready()
    out["bad_no_raise"] = type(bad.get(timeout=1, propagate=False)).__name__
    late_request = dict(REQUEST_OK, deadline=int(time.time() * 1000) - 60000)
    expired = app.send_task("inferq.fraud", kwargs={"request": late_request}, queue="realtime")
    try:
        expired.get(timeout=60)
    except Exception as exc:
        out["expired"] = [type(exc).__name__, exc.code, exc.status, exc.result["status"]]
    late = app.AsyncResult(before_id)  # answered before this app looked: found by the backward scan
    out["before"] = sorted(late.get(timeout=10))
    # The plainest app of all: kombu's own Redis transport (the worker moves its lists into the lanes).
    plain = Celery("plain", broker=url, backend="inferq+" + url, set_as_current=False)
    out["plain"] = sorted(plain.send_task("inferq.fraud", kwargs={"request": REQUEST_OK}, queue="realtime")
                          .get(timeout=60))
    missing = app.AsyncResult("never-submitted")
    out["missing_state"] = missing.state
    started = time.monotonic()
    try:
        missing.get(timeout=1.5)
    except Exception as exc:
        out["missing"] = type(exc).__name__
    out["missing_waited_s"] = round(time.monotonic() - started, 2)
    out["torch_loaded"] = any(m == "torch" or m.startswith("torch.") or m.startswith("engine") for m in sys.modules)
    print(json.dumps(out))
""")


def test_async_result_get_from_a_stock_app_in_a_subprocess(worker: WorkerProcess, db_url: str) -> None:
    with InferqClient(db_url) as client:
        before = client.submit("triage", {**triage_request(7), "reply_to": "inferq:results:triage"})
        probe = redis.Redis.from_url(db_url)
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not any(f[b"task_id"] == before.encode() for _, f in probe.xrange("inferq:results:triage")):
            assert time.monotonic() < deadline, "the worker answers the early task"
            time.sleep(0.1)
        probe.close()
    script = STOCK_CLIENT.replace("REQUEST_OK", repr(fraud_request(3)))
    done = subprocess.run([sys.executable, "-c", script, db_url, before], capture_output=True, text=True,
                          timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0.0 <= out["ok"]["score"] <= 1.0 and out["ok"]["decision"] in ("approve", "review", "decline")
    assert (out["ok_state"], out["ok_ready"]) == ("SUCCESS", True)
    assert out["bad"] == {"type": "TaskInvalid", "code": "out_of_range", "status": "invalid", "field": "age"}
    assert (out["bad_state"], out["bad_ready"], out["bad_no_raise"]) == ("FAILURE", True, "TaskInvalid")
    assert out["expired"] == ["TaskExpired", "expired", "expired", "expired"]
    assert {"score", "decision", "reasons"} <= set(out["plain"])
    assert out["before"] == ["acuity", "chunks", "probabilities", "truncated"]
    assert out["missing_state"] == "PENDING" and out["missing"] == "TimeoutError"
    assert 1.4 <= out["missing_waited_s"] < 4.0
    assert out["torch_loaded"] is False


def test_celery_control_shutdown_drains_the_worker(worker: WorkerProcess, db_url: str) -> None:
    _celery_cli("-b", db_url, "control", "shutdown", "--timeout", "2")
    assert worker.proc.wait(timeout=60) == 0
    assert '"worker.stopped"' in worker.log_tail(20_000)


def test_every_line_the_worker_wrote_is_json(worker: WorkerProcess) -> None:
    if worker.proc.poll() is None:
        worker.stop(60.0)
    lines = worker.log_path.read_text().splitlines()
    assert lines
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line[:300]!r}")
    events = {r.get("event") for r in records}
    assert {"worker.banner", "worker.started", "worker.stopped"} <= events
    assert any(r.get("logger", "").startswith("celery") for r in records), "Celery's own loggers, as JSON"
    batches = [r for r in records if r.get("event") == "batch.done"]
    assert batches
    for batch in batches:
        assert {"batch_id", "lane", "kind", "batch_size", "tokens", "compute_ms"} <= batch.keys()
        assert batch["level"] == "info"
    batch_ids = {b["batch_id"] for b in batches}
    computed = [r for r in records if r.get("event") == "task.computed"]
    assert computed and all(r["task_id"] and r["batch_id"] in batch_ids for r in computed)
    text = "\n".join(lines)
    for secret in (NOTE, MERCHANT, DEVICE, "substernal"):
        assert secret not in text


def test_task_events_from_the_start_when_configured() -> None:
    from worker.app import worker_argv
    from worker.config import Settings

    assert "--task-events" not in worker_argv(Settings(redis_url="redis://h"), "n", "INFO")
    assert "--task-events" in worker_argv(Settings(redis_url="redis://h", task_events=True), "n", "INFO")


def test_backend_urls_and_streams_resolve_without_an_import_of_inferq() -> None:
    from worker.errors import ConfigurationError

    app = Celery("plain", backend="inferq+redis://h:6380/3?streams=inferq:results:desk-a,inferq:results:desk-b",
                 set_as_current=False)
    backend = app.backend
    assert type(backend).__module__ == "worker.result_backend"  # found by its entry point, by name
    assert backend.redis_url == "redis://h:6380/3"
    assert backend.streams == ["inferq:results:triage", "inferq:results:fraud", "inferq:results:desk-a",
                               "inferq:results:desk-b"]
    assert Celery("short", backend="inferq://h:6379/0", set_as_current=False).backend.redis_url == "redis://h:6379/0"
    with pytest.raises(ConfigurationError, match="inferq:results:"):
        _ = Celery("wrong", backend="inferq+redis://h/0?streams=celery", set_as_current=False).backend
