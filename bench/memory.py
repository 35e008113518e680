"""Worker memory under bursts: resident memory stays bounded, whatever the backlog.

    .venv/bin/python bench/memory.py [--redis-url redis://127.0.0.1:6379/10] [--quick]

One real worker process (`python -m worker.app`, both kinds, both lanes, one torch thread) on a
database nothing else uses. Its resident set (VmRSS from /proc) is sampled every 100 ms while
producer bursts drain:

  1. fraud bursts of 1,000 and then 10,000 tasks (128-event histories, batch lane), queued at once:
     if the worker held the backlog, the larger burst would cost ~10x the memory of the smaller;
  2. 200 fraud tasks whose histories hold 4,096 events each (the contract's maximum);
  3. a 2,000-note triage burst.

What bounds it: a worker fetches no more than three full batches per lane beyond what it has
answered (`worker.fetching.Holdings`), so its working set is a few batches whatever waits in Redis.
The figures printed are RSS at ready, the peak during each burst and its growth over ready.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from contracts.requests import MAX_HISTORY  # noqa: E402
from training import samples  # noqa: E402
from training.fraud_sim import FraudSimulator, SimConfig  # noqa: E402
from training.triage_data import generate  # noqa: E402
from worker.client import InferqClient  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.processes import WorkerProcess, spawn_worker  # noqa: E402

DEFAULT_URL = "redis://127.0.0.1:6379/10"
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@dataclass
class Sampler:
    """Samples a process's RSS in a thread; `peak()` over the samples since the last `reset()`."""

    pid: int
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return

    def reset(self) -> None:
        self.samples.clear()

    def peak(self) -> int:
        return max(self.samples) if self.samples else 0

    def stop(self) -> None:
        self._stop.set()


def fraud_requests(n: int, events: int, seed: int) -> list[dict[str, Any]]:
    sim = FraudSimulator(SimConfig(seed=seed, fraud_rate=0.05, lengths=((events, events + 1, 1.0),)))
    requests = [samples.fraud_request(sim.example(i).input, "bench", age_s=60.0) for i in range(n)]
    for request in requests:  # the contract's maximum
        request["history"] = request["history"][-MAX_HISTORY:]
    return requests


def burst(client: InferqClient, kind: str, requests: list[dict[str, Any]], timeout_s: float) -> tuple[float, int]:
    """Queue every request at once on the batch lane; wait for all results. (seconds, answered)."""
    started = time.perf_counter()
    ids: list[str] = []
    for i in range(0, len(requests), 500):
        ids += client.submit_many(kind, requests[i : i + 500], lane="batch")  # type: ignore[arg-type]
    answers = client.wait(ids, timeout_s=timeout_s)
    return time.perf_counter() - started, len(answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=DEFAULT_URL, help="a Redis database the benchmark may flush")
    parser.add_argument("--quick", action="store_true", help="bursts of 500 / 2,000 / 50 / 300 instead")
    args = parser.parse_args()
    small, large, long_n, triage_n = (500, 2000, 50, 300) if args.quick else (1000, 10_000, 200, 2000)
    conn = redis.Redis.from_url(args.redis_url)
    conn.flushdb()
    print("generating requests ...", flush=True)
    small_burst = fraud_requests(small, 128, seed=1)
    large_burst = fraud_requests(large, 128, seed=2)
    long_burst = fraud_requests(long_n, 4096, seed=3)
    triage_burst = [samples.triage_request(ex, "bench") for ex in generate(triage_n, 21)]
    log_dir = Path(tempfile.mkdtemp(prefix="inferq-memory-"))
    worker: WorkerProcess = spawn_worker(args.redis_url, "memory-bench", log_dir, {"INFERQ_LOG_LEVEL": "WARNING"})
    rows: list[tuple[str, float, int, int]] = []
    try:
        worker.wait_ready(300)
        time.sleep(2.0)  # let warm-up allocations settle
        ready = rss_bytes(worker.proc.pid)
        sampler = Sampler(worker.proc.pid)
        sampler.start()
        with InferqClient(args.redis_url, Settings(redis_url=args.redis_url)) as client:
            for name, kind, requests in (
                (f"fraud x{small:,}, 128 events", "fraud", small_burst),
                (f"fraud x{large:,}, 128 events", "fraud", large_burst),
                (f"fraud x{long_n:,}, 4,096 events", "fraud", long_burst),
                (f"triage x{triage_n:,}", "triage", triage_burst),
            ):
                sampler.reset()
                seconds, answered = burst(client, kind, requests, timeout_s=1800)
                rows.append((name, seconds, answered, sampler.peak()))
                print(f"  {name}: {answered}/{len(requests)} answered in {seconds:.1f} s, "
                      f"peak RSS {sampler.peak() / MIB:.0f} MiB", flush=True)
        sampler.stop()
        end = rss_bytes(worker.proc.pid)
    finally:
        worker.stop(60)
        conn.flushdb()
    print(f"\nworker RSS at ready: {ready / MIB:.0f} MiB; after the last burst: {end / MIB:.0f} MiB")
    print(f"{'burst':34} {'answered':>9} {'seconds':>8} {'peak MiB':>9} {'over ready':>11}")
    for name, seconds, answered, peak in rows:
        print(f"{name:34} {answered:>9} {seconds:>8.1f} {peak / MIB:>9.0f} {(peak - ready) / MIB:>+10.0f}")
    small_growth, large_growth = rows[0][3] - ready, rows[1][3] - ready
    ratio = large_growth / small_growth if small_growth > 0 else float("nan")
    print(f"growth of the {large:,}-task burst over the {small:,}-task one: {ratio:.2f}x "
          f"for {large / small:.0f}x the tasks")


if __name__ == "__main__":
    main()
