"""`inferq demo`: a realtime fraud worker and a batch triage worker on the embedded default,
synthetic producers at steady rates, and a live view of results as they arrive.

The traffic comes from the seeded generators of the training wing (`training.samples`: synthetic
notes and card histories, no real patient or card data). The demo is the one worker module that
imports `training`, and only when it runs; the serving path (`worker.app`, `worker.runtime`) never
does. A few deliberately bad requests and one duplicate submission show
the `invalid` path and exactly-once answering.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from contracts.wire import RESULT_MESSAGE, RESULTS_PREFIX, Kind
from worker import embedded
from worker.config import Settings
from worker.processes import WorkerProcess, spawn_worker

# XREAD's reply on a decode_responses connection: [(stream, [(entry id, fields)])].
_StreamReply = list[tuple[str, list[tuple[str, dict[str, str]]]]] | None
_READY_TIMEOUT_S = 240.0  # two workers loading models on a small, busy machine
_DRAIN_TIMEOUT_S = 30.0


@dataclass
class _Tally:
    submitted: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    acuity: Counter[int] = field(default_factory=Counter)
    fraud_latency_ms: list[float] = field(default_factory=list)
    sent_at: dict[str, tuple[str, float]] = field(default_factory=dict)


def _spawn(url: str, name: str, kinds: list[str], lanes: list[str], log_dir: Path) -> WorkerProcess:
    env = {"INFERQ_KINDS": json.dumps(kinds), "INFERQ_LANES": json.dumps(lanes)}
    if lanes == ["batch"]:
        env["INFERQ_NICE"] = "10"  # the recommended layout: batch work yields the CPU to the realtime lane
    return spawn_worker(url, name, log_dir, env)


def _wait_ready(workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.wait_ready(_READY_TIMEOUT_S)
        print(f"  worker {w.name} ready (models loaded, warm-up done)")


def _fraud_requests(seed: int) -> Iterator[dict[str, Any]]:
    from training import samples
    from training.fraud_sim import FraudSimulator, SimConfig

    # 2% fraud: rarer than the enriched training mix, common enough that declines show in a minute.
    # Short histories keep the demo's payloads small; the model reads up to 4,096 events.
    sim = FraudSimulator(SimConfig(seed=seed, fraud_rate=0.02, lengths=((16, 256, 1.0),)))
    inputs = (sim.example(i).input for i in itertools.count())
    return samples.fraud_stream(inputs, "demo-issuer")


def _bad_request(kind: Kind) -> dict[str, Any]:
    from training import samples

    if kind == "fraud":
        return {"tenant": "demo-issuer", "transaction": {"amount": 12.5, "currency": "XXQ", "mcc": "5411",
                "channel": "contactless", "country": "GB", "timestamp": samples.rfc3339(time.time())}, "history": []}
    return {"tenant": "demo-hospital", "note": "   "}


class _Demo:
    def __init__(self, client: Any, conn: redis.Redis, reply_to: str) -> None:
        self.client = client
        self.conn = conn
        self.reply_to = reply_to
        self.tally = _Tally()
        self.cursor = "0-0"
        self.shown = Counter[str]()

    def submit(self, kind: Kind, request: dict[str, Any], task_id: str | None = None) -> None:
        from contracts import ContractError

        request = {**request, "reply_to": self.reply_to}
        task_id = task_id or str(uuid.uuid4())
        try:
            self.client.submit(kind, request, task_id=task_id)
        except ContractError:
            # The producer client validates before sending; push the raw form as a foreign producer
            # would, so the worker's own refusal shows up on the result stream.
            self._submit_raw(kind, request, task_id)
        self.tally.submitted[kind] += 1
        self.tally.sent_at[task_id] = (kind, time.monotonic())

    def _submit_raw(self, kind: Kind, request: dict[str, Any], task_id: str) -> None:
        from contracts.wire import DEFAULT_LANE, TASK_NAMES, queue_stream

        fields = {"task": TASK_NAMES[kind], "id": task_id, "request": json.dumps(request)}
        self.conn.xadd(queue_stream(DEFAULT_LANE[kind]), fields)  # type: ignore[arg-type]

    def collect(self, block_ms: int) -> None:
        reply = cast(_StreamReply, self.conn.xread({self.reply_to: self.cursor}, count=1000, block=block_ms))
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.cursor = entry_id
                self._record(json.loads(fields[RESULT_MESSAGE]))

    def _record(self, msg: dict[str, Any]) -> None:
        t = self.tally
        kind, status = msg["kind"], msg["status"]
        t.answered[kind] += 1
        t.statuses[status] += 1
        sent = t.sent_at.pop(msg["task_id"], None)
        latency = (time.monotonic() - sent[1]) * 1000 if sent else float("nan")
        if status == "ok" and kind == "fraud":
            t.decisions[msg["result"]["decision"]] += 1
            t.fraud_latency_ms.append(latency)
        elif status == "ok":
            t.acuity[msg["result"]["acuity"]] += 1
        self._maybe_show(msg, latency)

    def _maybe_show(self, msg: dict[str, Any], latency: float) -> None:
        key = f"{msg['kind']}:{msg['status']}"
        if self.shown[key] >= (3 if msg["status"] == "ok" else 1):
            return
        self.shown[key] += 1
        short = msg["task_id"][:8]
        if msg["status"] != "ok":
            err = msg.get("error") or {}
            print(f"  <- {msg['kind']:6} {short} {msg['status']}: {err.get('code')} ({err.get('message')})")
        elif msg["kind"] == "fraud":
            r = msg["result"]
            print(f"  <- fraud  {short} score {r['score']:.3f} {r['decision']:7} reasons={r.get('reasons', [])} "
                  f"{latency:.0f} ms, batch {msg['timings']['batch_size']}, {msg['model']}")
        else:
            r = msg["result"]
            print(f"  <- triage {short} ESI {r['acuity']} (p={max(r['probabilities']):.2f}) chunks={r['chunks']} "
                  f"batch {msg['timings']['batch_size']}, {msg['model']}")

    def answers_for(self, task_id: str) -> int:
        entries = cast(list[tuple[str, dict[str, str]]], self.conn.xrange(self.reply_to))
        return sum(1 for _, f in entries if json.loads(f[RESULT_MESSAGE])["task_id"] == task_id)

    def status_line(self, label: str) -> str:
        t = self.tally
        lat = sorted(t.fraud_latency_ms[-2000:])
        p50 = lat[len(lat) // 2] if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        return (f"[{label:>6}] fraud {t.answered['fraud']}/{t.submitted['fraud']} "
                f"(p50 {p50:.0f} ms, p99 {p99:.0f} ms, {dict(t.decisions)}) | triage "
                f"{t.answered['triage']}/{t.submitted['triage']} (ESI {dict(sorted(t.acuity.items()))}) | "
                f"{dict(t.statuses)}")


class _Producer:
    """Steady-rate submission of both kinds, with a few bad requests and one duplicate mixed in."""

    def __init__(self, demo: _Demo, fraud_rate: float, triage_rate: float) -> None:
        self.demo = demo
        from training import samples

        self.rates: dict[Kind, float] = {"fraud": fraud_rate, "triage": triage_rate}
        self.sources = {"fraud": _fraud_requests(seed=7), "triage": samples.triage_stream(11, "demo-hospital")}
        self.sent = Counter[str]()
        self.duplicate_id = str(uuid.uuid4())

    def catch_up(self, elapsed: float) -> None:
        for kind, rate in self.rates.items():
            while self.sent[kind] < elapsed * rate:
                self._send(kind, self.sent[kind])
                self.sent[kind] += 1

    def _send(self, kind: Kind, n: int) -> None:
        if n % 97 == 50:
            self.demo.submit(kind, _bad_request(kind))
            return
        request = next(self.sources[kind])
        if kind == "fraud" and n == 20:
            # The same task id twice: the worker answers it once.
            self.demo.submit(kind, request, task_id=self.duplicate_id)
            self.demo.submit(kind, request, task_id=self.duplicate_id)
            return
        self.demo.submit(kind, request)


def _traffic(demo: _Demo, duration_s: float, fraud_rate: float, triage_rate: float) -> _Producer:
    producer = _Producer(demo, fraud_rate, triage_rate)
    start = time.monotonic()
    next_status = start + 2.0
    while (now := time.monotonic()) - start < duration_s:
        producer.catch_up(now - start)
        demo.collect(block_ms=5)
        if now >= next_status:
            print(demo.status_line(f"{now - start:.1f}s"), flush=True)
            next_status += 2.0
    return producer


def _drain(demo: _Demo) -> None:
    deadline = time.monotonic() + _DRAIN_TIMEOUT_S
    while demo.tally.sent_at and time.monotonic() < deadline:
        demo.collect(block_ms=100)


def _stop_workers(workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.terminate()
    for w in workers:
        print(f"  worker {w.name} stopped (exit {w.stop(timeout_s=40.0)})")


def _summary(demo: _Demo, duplicate_answers: int) -> int:
    t = demo.tally
    missing = len(t.sent_at)
    print(demo.status_line("final"))
    print(f"demo: {sum(t.answered.values())} results for {sum(t.submitted.values())} submissions, two of them "
          f"with one task id (answered {duplicate_answers} time(s)); {missing} unanswered")
    return 0 if missing == 0 and duplicate_answers == 1 else 1


def run_demo(settings: Settings, *, duration_s: float, fraud_rate: float, triage_rate: float) -> int:
    """Run the demo end to end; returns the process exit code."""
    from worker.client import InferqClient

    server = None if settings.redis_url else embedded.start(settings.state_dir)
    url = settings.redis_url or (server.url if server else "")
    print(f"inferq demo: Redis at {url}" + (" (embedded Valkey, started here)" if server and server.started_here
          else " (embedded Valkey, reused)" if server else ""))
    log_dir = settings.state_dir / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"  starting a realtime fraud worker and a batch triage worker (logs in {log_dir})")
    workers = [
        _spawn(url, "demo-realtime", ["fraud"], ["realtime"], log_dir),
        _spawn(url, "demo-batch", ["triage"], ["batch"], log_dir),
    ]
    conn = redis.Redis.from_url(url, decode_responses=True)
    reply_to = f"{RESULTS_PREFIX}demo:{uuid.uuid4().hex[:12]}"
    client = InferqClient(redis_url=url, settings=settings)
    try:
        _wait_ready(workers)
        demo = _Demo(client, conn, reply_to)
        print(f"  producing {fraud_rate:g} fraud/s and {triage_rate:g} triage/s for {duration_s:g}s; "
              f"results on {reply_to}")
        producer = _traffic(demo, duration_s, fraud_rate, triage_rate)
        _drain(demo)
        return _summary(demo, demo.answers_for(producer.duplicate_id))
    finally:
        client.close()
        conn.delete(reply_to)
        conn.close()
        _stop_workers(workers)
        if server is not None and server.started_here:
            embedded.stop(settings.state_dir)
            print("  embedded Valkey stopped")
