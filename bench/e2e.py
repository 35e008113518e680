"""End-to-end benchmark: engine alone, inferq end to end, a naive Celery worker, realtime latency.

    .venv/bin/python bench/e2e.py [--quick | --smoke] [--redis-url URL]
    .venv/bin/python bench/e2e.py --sweep [--plot DIR] [--seconds S]

One run on one machine, real worker processes (`python -m worker.app`) over a real Redis:

  (a) engine only: the runners called directly, on batches formed by the worker's own batch former
      (`engine.batching.TaskQueue` with the lane's settings) from a backlog fed as the worker
      fetches it, each cut into forward passes by `engine.batching.plan_batch`;
  (b) inferq end to end at saturation: a backlog pre-loaded on the lane, one worker started on
      it, timed from the moment it reports ready to the last result read by the producer;
  (c) the naive baseline (`bench/naive_celery.py`): stock Celery, kombu's Redis list transport,
      one task per forward pass, the same models, two prefork processes, against inferq with two
      worker processes;
  (d) realtime fraud latency (submit to result at the producer) at a steady rate while a triage
      backlog drains, a realtime fraud worker and a batch triage worker in separate processes
      with one torch thread each;
  (e) batch-lane fraud throughput end to end with 128-event histories, two worker processes.

With `--sweep` it runs only (f): one worker process (both lanes, both kinds), and per lane an
open-loop producer at each of a few offered loads in turn (realtime: fraud, batch: triage, each lane's
default kind), measuring p50 / p99 latency (submit to result at the producer) and the answered rate;
the batch sizes come from the worker's own `batch.done` log lines. `--plot DIR` writes
DIR/latency_throughput.png and DIR/batch_sizes.png from that run (`bench/plots.py`).

Everything runs in one Redis database (flushed before and after) that nothing else may use.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
import torch  # noqa: E402

from contracts import parse_request  # noqa: E402
from contracts.wire import RESULT_MESSAGE, RESULTS_PREFIX, Kind  # noqa: E402
from engine.batching import LaneLimits, TaskQueue, plan_batch  # noqa: E402
from training import samples  # noqa: E402
from worker.adapters import FraudAdapter, KindAdapter, TriageAdapter, load_adapters  # noqa: E402
from worker.client import InferqClient  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.runtime import lane_limits  # noqa: E402

# One intra-op thread per process: on the shared 2-core machine a 128 x 128-event fraud batch took
# 354 ms with one torch thread and 2,244 ms with two (threads spinning at barriers while another
# process holds the core), so every process here, inferq or naive, computes on one thread.
TORCH_THREADS = 1
BATCH_NICE = 10  # (d): INFERQ_NICE of the batch triage worker
REALTIME_WORKERS = int(os.environ.get("BENCH_REALTIME_WORKERS", "1"))  # (d): realtime fraud worker processes
NAIVE_CONCURRENCY = 2  # prefork processes: the baseline gets both cores
READY_TIMEOUT_S = 300.0  # model loading on a busy 2-core machine
RESULT_TIMEOUT_S = 900.0
# Worker probes go straight to the loopback interface, whatever HTTP(S)_PROXY says.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Scale:
    """Task counts of one run; --quick shrinks them to keep a shared machine usable, --smoke to a check
    that every part runs (its figures mean nothing)."""

    triage: int
    fraud: int
    naive_triage: int
    naive_fraud: int
    backlog: int
    latency_s: float
    fraud_rate: float
    fraud128: int


FULL = Scale(
    triage=1024,
    fraud=4096,
    naive_triage=384,
    naive_fraud=768,
    backlog=10_000,
    latency_s=30.0,
    fraud_rate=100.0,
    fraud128=8192,
)
QUICK = Scale(
    triage=512,
    fraud=1024,
    naive_triage=128,
    naive_fraud=256,
    backlog=10_000,
    latency_s=10.0,
    fraud_rate=100.0,
    fraud128=2048,
)
SMOKE = Scale(
    triage=16,
    fraud=32,
    naive_triage=8,
    naive_fraud=8,
    backlog=64,
    latency_s=2.0,
    fraud_rate=20.0,
    fraud128=32,
)


# -- workloads --------------------------------------------------------------------------------


def fraud_requests(n: int, seed: int, history: int | None = None) -> list[dict[str, Any]]:
    """Simulated customers; `history` fixes the history length, else the simulator's mix (16-4,096)."""
    from training.fraud_sim import FraudSimulator, SimConfig

    config = SimConfig(seed=seed) if history is None else SimConfig(seed=seed, lengths=((history, history, 1.0),))
    # The transaction happened a minute ago.
    return [samples.fraud_request(ex.input, "bench-issuer", age_s=60.0) for ex in FraudSimulator(config).examples(n)]


def triage_requests(n: int, seed: int) -> list[dict[str, Any]]:
    """Synthetic triage notes (training.triage_data), in the contract's request form."""
    from training.triage_data import generate

    return [samples.triage_request(ex, "bench-hospital") for ex in generate(n, seed)]


# -- (a) engine only --------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineFigure:
    tasks: int
    prepare_s: float
    run_s: float
    batches: int

    @property
    def per_s(self) -> float:
        """Tasks per second counting prepare (tokenize/featurize) and the forward passes."""
        return self.tasks / (self.prepare_s + self.run_s)

    @property
    def run_only_per_s(self) -> float:
        return self.tasks / self.run_s

    @property
    def mean_batch(self) -> float:
        return self.tasks / self.batches


def worker_batches(prepared: Sequence[Any], limits: LaneLimits, held: int) -> list[list[Any]]:
    """Batches as the worker forms them from a backlog: at most `held` tasks queued at a time."""
    queue: TaskQueue[Any] = TaskQueue(limits)
    batches, next_index = [], 0
    while next_index < len(prepared) or len(queue):
        while len(queue) < held and next_index < len(prepared):
            queue.push(prepared[next_index], prepared[next_index].n_tokens, now_ms=0.0)
            next_index += 1
        batches.append(queue.take())
    return batches


def engine_only(
    model: KindAdapter, kind: Kind, requests: Sequence[dict[str, Any]], lane: str, settings: Settings
) -> EngineFigure:
    if not isinstance(model, TriageAdapter | FraudAdapter):
        raise TypeError(f"no runner behind {type(model).__name__}")
    runner = model.runner
    parsed = [parse_request(kind, r) for r in requests]
    started = time.perf_counter()
    prepared = [model.prepare(p) for p in parsed]
    prepare_s = time.perf_counter() - started
    batches = worker_batches(prepared, lane_limits(settings)[lane], settings.fetch_count)  # type: ignore[index]
    started = time.perf_counter()
    for batch in batches:
        # What the adapter's compute does, less the contract result: the engine alone.
        runner.run(batch, plan_batch(batch, runner.pass_limits, runner.pass_cost))
    return EngineFigure(len(prepared), prepare_s, time.perf_counter() - started, len(batches))


# -- worker processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process with a log file; always stopped by `close`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def close(self, grace_s: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class InferqWorker(Proc):
    """`python -m worker.app` for some kinds and lanes, with `threads` torch threads."""

    def __init__(self, name: str, url: str, kinds: list[str], lanes: list[str], threads: int, log_dir: Path,
                 nice: int = 0, log_level: str = "WARNING") -> None:
        self.port = free_port()
        env = {
            "INFERQ_NICE": str(nice),
            "INFERQ_REDIS_URL": url,
            "INFERQ_KINDS": json.dumps(kinds),
            "INFERQ_LANES": json.dumps(lanes),
            "INFERQ_METRICS_PORT": str(self.port),
            "INFERQ_DEVICE": "cpu",
            "INFERQ_LOG_LEVEL": log_level,
            "OMP_NUM_THREADS": str(threads),
        }
        super().__init__(name, [sys.executable, "-m", "worker.app", "--name", name], env, log_dir)

    def get(self, path: str) -> str | None:
        try:
            with DIRECT.open(f"http://127.0.0.1:{self.port}{path}", timeout=1.0) as reply:
                return reply.read().decode() if reply.status == 200 else None
        except OSError:
            return None

    def is_ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
        return self.get("/readyz") is not None

    def histogram(self, name: str, kind: str, lane: str) -> tuple[float, float]:
        """(sum, count) of one of the worker's histograms for a kind and lane."""
        label = f'{{kind="{kind}",lane="{lane}"}}'
        values = {"sum": 0.0, "count": 0.0}
        for line in (self.get("/metrics") or "").splitlines():
            for stat in values:
                if line.startswith(f"{name}_{stat}{label}"):
                    values[stat] = float(line.split()[-1])
        return values["sum"], values["count"]


# -- (b), (e) inferq end to end -----------------------------------------------------------------


@dataclass(frozen=True)
class E2EFigure:
    tasks: int
    seconds: float
    statuses: Counter[str]
    batches: float = 0.0
    compute_s: float = 0.0

    @property
    def per_s(self) -> float:
        return self.tasks / self.seconds

    def worker_summary(self) -> str:
        """Batches the workers formed and their model time, summed over workers (their own metrics)."""
        if not self.batches:
            return "no worker metrics"
        return f"mean batch {self.tasks / self.batches:.1f}, model time {self.compute_s:.1f}s summed over workers"


def wait_ready(workers: Sequence[InferqWorker], poll_s: float = 0.01) -> float:
    """Block until every worker answers /readyz; the perf_counter time the first one did."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    first: float | None = None
    waiting = list(workers)
    while waiting:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f}s: {[w.log_path for w in waiting]}")
        for worker in [w for w in waiting if w.is_ready()]:
            first = first if first is not None else time.perf_counter()
            waiting.remove(worker)
        time.sleep(poll_s)
    assert first is not None
    return first


def inferq_saturation(
    url: str, kind: str, requests: Sequence[dict[str, Any]], log_dir: Path, name: str, workers: int = 1
) -> E2EFigure:
    """Pre-load the backlog on the batch lane, start the workers, time from the first one's
    readiness (it starts fetching then) to the last result read by the producer."""
    redis.Redis.from_url(url).flushdb()
    with InferqClient(url) as client:
        ids = client.submit_many(kind, list(requests), lane="batch")
        procs = [InferqWorker(f"{name}-{i}", url, [kind], ["batch"], TORCH_THREADS, log_dir) for i in range(workers)]
        try:
            started = wait_ready(procs)
            results = client.wait(ids, RESULT_TIMEOUT_S)
            seconds = time.perf_counter() - started
            batches = sum(w.histogram("inferq_batch_size", kind, "batch")[1] for w in procs)
            compute_s = sum(w.histogram("inferq_compute_seconds", kind, "batch")[0] for w in procs)
        finally:
            for worker in procs:
                worker.close()
    if len(results) != len(ids):
        raise RuntimeError(f"{name}: {len(results)} results for {len(ids)} tasks")
    statuses = Counter(r.status.value for r in results.values())
    return E2EFigure(len(ids), seconds, statuses, batches, compute_s)


# -- (c) naive Celery -----------------------------------------------------------------------------


def naive_throughput(
    url: str, kind: str, requests: Sequence[dict[str, Any]], concurrency: int, log_dir: Path
) -> E2EFigure:
    """Stock Celery on the Redis list transport: warm every pool process, then time the backlog."""
    redis.Redis.from_url(url).flushdb()
    os.environ["NAIVE_REDIS_URL"] = url
    from bench import naive_celery

    task = {"triage": naive_celery.triage, "fraud": naive_celery.fraud}[kind]
    worker = Proc(
        f"naive-{kind}",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.naive_celery",
            "worker",
            "--pool",
            "prefork",
            "-c",
            str(concurrency),
            "--loglevel",
            "WARNING",
        ],
        {"NAIVE_REDIS_URL": url, "OMP_NUM_THREADS": "1", "INFERQ_LOG_LEVEL": "WARNING"},
        log_dir,
    )
    try:
        warm = [task.delay(requests[i % len(requests)]) for i in range(4 * concurrency)]
        for result in warm:
            result.get(timeout=READY_TIMEOUT_S)
        started = time.perf_counter()
        pending = [task.delay(r) for r in requests]
        outputs = [result.get(timeout=RESULT_TIMEOUT_S) for result in pending]
        seconds = time.perf_counter() - started
    finally:
        worker.close()
    return E2EFigure(len(outputs), seconds, Counter(ok=len(outputs)))


# -- (d) realtime latency under a triage backlog ----------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class LatencyFigure:
    latencies_ms: list[float]
    sent: int
    rate: float
    backlog_answered_during: int
    backlog: int
    statuses: Counter[str]
    timings: list[dict[str, float]]

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def breakdown(self) -> str:
        """Where the time went, from the workers' own result timings (p50 / p99)."""
        parts = []
        for name in ("queue_ms", "compute_ms", "batch_size"):
            values = [float(t[name]) for t in self.timings if name in t]
            parts.append(f"{name} {percentile(values, 0.5):.1f} / {percentile(values, 0.99):.1f}")
        return ", ".join(parts)


class ReplyReader(threading.Thread):
    """Reads one reply stream and records when each task's result arrived (perf_counter)."""

    def __init__(self, url: str, stream: str) -> None:
        super().__init__(daemon=True)
        self.conn = redis.Redis.from_url(url, decode_responses=True)
        self.stream = stream
        self.arrived: dict[str, tuple[float, str]] = {}
        self.timings: list[dict[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        cursor = "0-0"
        while not self.stop.is_set():
            for _, entries in self.conn.xread({self.stream: cursor}, count=1000, block=100) or []:
                now = time.perf_counter()
                for _, fields in entries:
                    message = json.loads(fields[RESULT_MESSAGE])
                    self.arrived[message["task_id"]] = (now, message["status"])
                    self.timings.append(message.get("timings") or {})
                cursor = entries[-1][0]


def steady_fraud(
    url: str, pool: Sequence[dict[str, Any]], rate: float, seconds: float
) -> tuple[dict[str, float], ReplyReader]:
    """Open-loop producer: one fraud task every 1/rate s on the realtime lane (never waiting for results)."""
    return steady(url, "fraud", "realtime", pool, rate, seconds)


def realtime_latency(url: str, scale: Scale, log_dir: Path) -> LatencyFigure:
    redis.Redis.from_url(url).flushdb()
    realtime = [
        InferqWorker(f"latency-realtime-{i}", url, ["fraud"], ["realtime"], 1, log_dir) for i in range(REALTIME_WORKERS)
    ]
    # The layout docs/operations.md recommends for a shared machine: the batch worker yields the CPU.
    batch = InferqWorker("latency-batch", url, ["triage"], ["batch"], 1, log_dir, nice=BATCH_NICE)
    try:
        wait_ready([*realtime, batch])
        pool = fraud_requests(256, seed=11)
        with InferqClient(url) as backlog_client:
            backlog_client.submit_many("triage", triage_requests(scale.backlog, seed=12))
            sent, reader = steady_fraud(url, pool, scale.fraud_rate, scale.latency_s)
            time.sleep(2.0)  # the last results of the window
            reader.stop.set()
            answered = int(redis.Redis.from_url(url).xlen(backlog_client.reply_stream))
    finally:
        for worker in realtime:
            worker.close()
        batch.close()
    latencies = [(reader.arrived[t][0] - s) * 1000.0 for t, s in sent.items() if t in reader.arrived]
    statuses = Counter(status for _, status in reader.arrived.values())
    statuses["missing"] = len(sent) - len(latencies)
    rate = len(sent) / scale.latency_s
    return LatencyFigure(latencies, len(sent), rate, answered, scale.backlog, statuses, reader.timings)


# -- (f) latency against offered load, per lane ------------------------------------------------------

# Offered loads (tasks/s) per lane, from well under one worker's capacity on the shared 2-core machine
# to past it, and the kind each lane carries by default.
SWEEP_RATES: dict[str, tuple[float, ...]] = {"realtime": (10.0, 25.0, 50.0, 100.0), "batch": (2.0, 5.0, 10.0, 20.0)}
SWEEP_KIND: dict[str, str] = {"realtime": "fraud", "batch": "triage"}
SWEEP_DRAIN_S = 60.0  # after the offered window, how long the answers of an overloaded point may take


@dataclass
class SweepPoint:
    lane: str
    offered: float
    sent: int
    answered: int
    achieved: float  # answered / (last answer - first submit)
    p50_ms: float
    p99_ms: float
    batch_sizes: list[int]

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def steady(url: str, kind: str, lane: str, pool: Sequence[dict[str, Any]], rate: float,
           seconds: float) -> tuple[dict[str, float], ReplyReader]:
    """Open-loop producer on one lane: one task every 1/rate s, never waiting for results."""
    reply_to = f"{RESULTS_PREFIX}bench-sweep-{uuid.uuid4().hex}"
    reader = ReplyReader(url, reply_to)
    reader.start()
    sent: dict[str, float] = {}
    with InferqClient(url) as client:
        due = time.perf_counter()
        end = due + seconds
        while due < end:
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            task_id = uuid.uuid4().hex
            sent[task_id] = time.perf_counter()
            client.submit(kind, {**pool[len(sent) % len(pool)], "reply_to": reply_to}, task_id=task_id, lane=lane)
            due += 1.0 / rate
    return sent, reader


def logged_batch_sizes(log_path: Path, offset: int, lane: str) -> tuple[list[int], int]:
    """Sizes of the batches a worker logged (`batch.done`) for `lane` after byte `offset`; the new offset."""
    with log_path.open("rb") as log:
        log.seek(offset)
        data = log.read()
    sizes = []
    for line in data.splitlines():
        if b'"batch.done"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "batch.done" and record.get("lane") == lane:
            sizes.append(int(record["size"]))
    return sizes, offset + len(data)


def sweep_point(url: str, worker: InferqWorker, lane: str, rate: float, seconds: float,
                pool: Sequence[dict[str, Any]]) -> SweepPoint:
    offset = worker.log_path.stat().st_size
    sent, reader = steady(url, SWEEP_KIND[lane], lane, pool, rate, seconds)
    deadline = time.monotonic() + SWEEP_DRAIN_S
    while len(reader.arrived) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    reader.stop.set()
    reader.join(2.0)
    arrived = {t: reader.arrived[t][0] for t in sent if t in reader.arrived}
    latencies = [(arrived[t] - s) * 1000.0 for t, s in sent.items() if t in arrived]
    span = (max(arrived.values()) - min(sent.values())) if arrived else float("nan")
    time.sleep(0.5)  # the worker's log lines of the last batches
    sizes, _ = logged_batch_sizes(worker.log_path, offset, lane)
    return SweepPoint(lane, rate, len(sent), len(latencies), len(latencies) / span if arrived else 0.0,
                      percentile(latencies, 0.5), percentile(latencies, 0.99), sizes)


def sweep(url: str, seconds: float, plot_dir: Path | None,
          rates: dict[str, tuple[float, ...]] = SWEEP_RATES) -> list[SweepPoint]:
    """(f): latency against offered load on each lane, one worker serving both lanes and both kinds."""
    started = time.time()
    redis.Redis.from_url(url).flushdb()
    log_dir = Path(tempfile.mkdtemp(prefix="inferq-bench-"))
    pools = {"fraud": fraud_requests(256, seed=21), "triage": triage_requests(256, seed=22)}
    worker = InferqWorker("sweep", url, ["fraud", "triage"], ["realtime", "batch"], TORCH_THREADS, log_dir,
                          log_level="INFO")
    points: list[SweepPoint] = []
    try:
        wait_ready([worker])
        for lane, lane_rates in rates.items():
            for rate in lane_rates:
                point = sweep_point(url, worker, lane, rate, seconds, pools[SWEEP_KIND[lane]])
                points.append(point)
                mean = sum(point.batch_sizes) / len(point.batch_sizes) if point.batch_sizes else float("nan")
                print(
                    f"(f) {lane:8s} {SWEEP_KIND[lane]:6s} offered {rate:6.1f}/s for {seconds:.0f}s: "
                    f"{point.answered}/{point.sent} answered, {point.achieved:7.1f}/s answered, "
                    f"p50 {point.p50_ms:8.1f} ms, p99 {point.p99_ms:8.1f} ms, "
                    f"{len(point.batch_sizes)} batches (mean {mean:.1f}, max {max(point.batch_sizes, default=0)})",
                    flush=True,
                )
    finally:
        worker.close()
    if plot_dir is not None:
        from bench.plots import batch_sizes, latency_vs_throughput

        caption = (f"`bench/e2e.py {' '.join(sys.argv[1:])}`, {datetime.fromtimestamp(started, UTC):%Y-%m-%d %H:%M} "
                   f"UTC, {os.cpu_count()} CPUs shared, one worker, {TORCH_THREADS} torch thread, "
                   f"{seconds:g}s per load")
        by_lane = {lane: [p.as_json() for p in points if p.lane == lane] for lane in rates}
        print(f"wrote {latency_vs_throughput(by_lane, caption, plot_dir / 'latency_throughput.png')}")
        sizes = {f"{lane} ({SWEEP_KIND[lane]})": {f"at {p.offered:g}/s": p.batch_sizes
                                                  for p in points if p.lane == lane} for lane in rates}
        print(f"wrote {batch_sizes(sizes, caption, plot_dir / 'batch_sizes.png')}")
        (plot_dir / "sweep.json").write_text(json.dumps([p.as_json() for p in points], indent=1) + "\n")
    return points


# -- report -----------------------------------------------------------------------------------------


def target(met: bool) -> str:
    return "met" if met else "NOT met"


def report_engine(engine: dict[str, EngineFigure]) -> None:
    for name, fig in engine.items():
        print(
            f"(a) engine only {name:9s}: {fig.per_s:8.1f} tasks/s with prepare, {fig.run_only_per_s:8.1f} "
            f"forward only ({fig.tasks} tasks, mean batch {fig.mean_batch:.1f}, {TORCH_THREADS} torch thread)",
            flush=True,
        )


def report_e2e(e2e: dict[str, E2EFigure], engine: dict[str, EngineFigure]) -> None:
    for name, fig in e2e.items():
        a = engine[name]
        print(
            f"(b) inferq e2e {name:9s}: {fig.per_s:8.1f} tasks/s, one worker ({fig.tasks} tasks in "
            f"{fig.seconds:.2f}s, statuses {dict(fig.statuses)}, {fig.worker_summary()}); "
            f"{fig.per_s / a.per_s:.1%} of (a) with prepare, {fig.per_s / a.run_only_per_s:.1%} of forward only "
            f"-> target >= 85% {target(fig.per_s >= 0.85 * a.per_s)}",
            flush=True,
        )


def report_naive(naive: dict[str, E2EFigure], inferq: dict[str, E2EFigure]) -> None:
    for name, fig in naive.items():
        ours = inferq[name]
        ratio = ours.per_s / fig.per_s
        goal = 3.0 if name == "triage" else 10.0
        print(
            f"(c) naive Celery {name:9s}: {fig.per_s:8.1f} tasks/s ({fig.tasks} tasks in {fig.seconds:.2f}s, "
            f"prefork -c {NAIVE_CONCURRENCY}); inferq with {NAIVE_CONCURRENCY} workers {ours.per_s:.1f} tasks/s "
            f"({ours.tasks} tasks, {ours.worker_summary()}); inferq / naive = {ratio:.2f}x "
            f"-> target >= {goal:.0f}x {target(ratio >= goal)}",
            flush=True,
        )


def report_latency(lat: LatencyFigure, scale: Scale) -> None:
    p50, p99 = lat.pct(0.50), lat.pct(0.99)
    print(
        f"(d) realtime fraud latency at {lat.rate:.1f} tasks/s for {scale.latency_s:.0f}s ({lat.sent} sent, "
        f"statuses {dict(lat.statuses)}) while a {lat.backlog}-task triage backlog drained "
        f"({lat.backlog_answered_during} answered by the end): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(lat.latencies_ms, default=float('nan')):.1f} ms (worker timings p50 / p99: {lat.breakdown()}); "
        f"{REALTIME_WORKERS} realtime fraud worker(s) and a batch triage worker (INFERQ_NICE={BATCH_NICE}), "
        f"{TORCH_THREADS} torch thread each, cores shared by the OS -> target p99 <= 50 ms {target(p99 <= 50.0)}",
        flush=True,
    )


def run(url: str, scale: Scale) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="inferq-bench-"))
    settings = Settings(redis_url=url)
    print(f"bench/e2e.py: {os.cpu_count()} CPUs, torch {torch.__version__}, logs in {log_dir}", flush=True)
    work = {
        "triage": triage_requests(scale.triage, seed=1),
        "fraud": fraud_requests(scale.fraud, seed=2),
        "fraud128": fraud_requests(scale.fraud128, seed=3, history=128),
    }

    torch.set_num_threads(TORCH_THREADS)
    models = load_adapters(Settings(kinds=["triage", "fraud"], redis_url=url))
    for model in models.values():
        model.warmup()
    kind_of: dict[str, Kind] = {"triage": "triage", "fraud": "fraud", "fraud128": "fraud"}
    engine = {name: engine_only(models[kind_of[name]], kind_of[name], work[name], "batch", settings) for name in work}
    del models
    report_engine(engine)

    one = {name: inferq_saturation(url, name, work[name], log_dir, f"e2e-{name}") for name in ("triage", "fraud")}
    report_e2e(one, engine)

    naive, both = {}, {}
    for name, count in (("triage", scale.naive_triage), ("fraud", scale.naive_fraud)):
        naive[name] = naive_throughput(url, name, work[name][:count], NAIVE_CONCURRENCY, log_dir)
        both[name] = inferq_saturation(url, name, work[name], log_dir, f"pair-{name}", workers=NAIVE_CONCURRENCY)
    report_naive(naive, both)

    report_latency(realtime_latency(url, scale, log_dir), scale)

    batch128 = inferq_saturation(url, "fraud", work["fraud128"], log_dir, "e2e-fraud128", workers=2)
    print(
        f"(e) batch-lane fraud, 128-event histories, two workers: {batch128.per_s:8.1f} tasks/s "
        f"({batch128.tasks} tasks in {batch128.seconds:.2f}s, {batch128.worker_summary()}); engine only on one "
        f"thread {engine['fraud128'].per_s:.1f} tasks/s -> target >= 1000/s {target(batch128.per_s >= 1000.0)}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller task counts (a few minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny task counts: checks that every part runs")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("INFERQ_BENCH_REDIS_URL"),
        help="a Redis database the benchmark may flush (default: a free database index claimed as the tests "
        "claim one, tests/conftest.py)",
    )
    parser.add_argument(
        "--latency-only", type=float, metavar="RATE", help="run only (d), at RATE fraud tasks per second"
    )
    parser.add_argument("--sweep", action="store_true", help="run only (f): latency against offered load per lane")
    parser.add_argument("--seconds", type=float, default=8.0, help="(f): seconds of traffic per offered load")
    for lane, default in SWEEP_RATES.items():
        parser.add_argument(f"--{lane}-rates", type=float, nargs="+", default=list(default), metavar="RATE",
                            help=f"(f): offered loads on the {lane} lane, tasks/s "
                            f"(default {' '.join(map(str, default))})")
    parser.add_argument("--plot", type=Path, metavar="DIR",
                        help="with --sweep: write latency_throughput.png, batch_sizes.png and sweep.json to DIR")
    args = parser.parse_args(argv)
    if args.plot is not None and not args.sweep:
        parser.error("--plot draws the sweep's figures: give --sweep as well")
    scale = SMOKE if args.smoke else QUICK if args.quick else FULL
    with _database(args.redis_url) as url:
        try:
            if args.sweep:
                sweep(url, args.seconds, args.plot,
                  {"realtime": tuple(args.realtime_rates), "batch": tuple(args.batch_rates)})
            elif args.latency_only is not None:
                scale = dataclasses.replace(scale, fraud_rate=args.latency_only)
                log_dir = Path(tempfile.mkdtemp(prefix="inferq-bench-"))
                report_latency(realtime_latency(url, scale, log_dir), scale)
            else:
                run(url, scale)
        finally:
            redis.Redis.from_url(url).flushdb()
    return 0


def _database(url: str | None) -> contextlib.AbstractContextManager[str]:
    """`url` as given, else a database index of its own on the test Redis (released at the end)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import claimed_database

    return claimed_database(url)


if __name__ == "__main__":
    raise SystemExit(main())
