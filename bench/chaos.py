"""Chaos, the full run: two workers, 5,000 mixed tasks, a random worker SIGKILLed five times and restarted.

    .venv/bin/python bench/chaos.py [--runs 3] [--tasks 5000] [--kills 5] [--seed N] [--rate 80]
                                    [--redis-url URL | --embedded]

Real worker processes (`python -m worker.app`, both kinds, both lanes, default batching) on one database.
A producer (`worker.client.InferqClient`) submits a mix of fraud tasks (short histories, realtime lane)
and triage tasks (short notes, batch lane) at a steady rate, in submission groups of 20, so that work is
always in flight. Meanwhile, at moments drawn from a seeded random generator over the submission window,
a worker drawn at random among the ready ones is SIGKILLed (at the first moment from then on at which it
holds a task, so that every kill leaves work behind) and restarted at once under a new consumer name;
its tasks are taken over by whichever worker claims them first after `INFERQ_CLAIM_IDLE_MS` (1.5 s here).

Every task must then have exactly one entry on the result streams, with status ok: none lost, none
answered twice; the lanes drained, nothing pending in the consumer group, nothing dead-lettered.
`INFERQ_MAX_DELIVERIES` is raised to the number of kills plus two: a task may be held by every victim
in turn, and the default of three would dead-letter it as a poison pill, which is not what is tested.

Per run it prints: tasks, answered, duplicates (result entries beyond a task's first), lost (tasks
without a result), kills (with how many tasks each victim held), takeovers (tasks claimed from dead
workers, from the workers' `task.takeover` log lines) and the wall time from the first submission to the
last answer. It exits non-zero when any run lost or duplicated a task or left anything behind.
`tests/test_chaos.py` runs the same machinery at CI size (2,000 tasks, three kills).

Without `--redis-url` it claims a free database index of the Redis at 127.0.0.1:6379 the way the test
suite does, or starts an embedded Valkey when none answers (`--embedded`: always). The database is
flushed before each run and after the last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from contracts.wire import LANES, RESULT_MESSAGE, RESULTS_PREFIX, Kind, queue_stream  # noqa: E402
from worker.client import InferqClient  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.keys import CONSUMER_GROUP, DEADLETTER_STREAM  # noqa: E402
from worker.processes import WorkerProcess, spawn_worker  # noqa: E402

CLAIM_IDLE_MS = 1500
DRAIN_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 180.0  # both models, two or three processes loading on a shared 2-core machine
KILL_FROM_S = 2.0  # no kill in the first seconds of submission: let work reach both workers
HOLD_WAIT_S = 5.0  # a drawn victim is killed at its first moment holding a task within this time
SUBMIT_GROUP = 20  # tasks per submit_many call
TRIAGE_SHARE = 0.15
FRAUD_HISTORY = (8, 64)  # events per history: short, so that fraud is most of the tasks but little CPU
TRIAGE_MAX_NOTE = 400  # characters: short notes only


@dataclass(frozen=True)
class ChaosPlan:
    """One run: how many tasks and kills, how fast, and the seed that draws kinds, kill moments and victims."""

    tasks: int = 5000
    kills: int = 5
    seed: int = 0
    rate_per_s: float = 80.0
    workers: int = 2
    triage_share: float = TRIAGE_SHARE
    claim_idle_ms: int = CLAIM_IDLE_MS
    answer_timeout_s: float = 180.0  # after the last submission

    @property
    def submit_s(self) -> float:
        return self.tasks / self.rate_per_s


@dataclass(frozen=True)
class Kill:
    at_s: float  # since the first submission
    victim: str
    held: int  # tasks pending for the victim at the kill
    restarted_as: str


@dataclass
class ChaosRun:
    plan: ChaosPlan
    ids: list[str]
    kinds: Counter[str]
    per_task: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    kills: list[Kill] = field(default_factory=list)
    takeovers: int = 0
    deadletters: int = 0
    pending: int = 0  # left in the consumer group's pending lists
    in_lanes: int = 0  # left in the lane streams
    exits: dict[str, int | None] = field(default_factory=dict)  # worker -> exit code at the end (None: running)
    crashes: list[str] = field(default_factory=list)  # log lines of thread crashes or unrecoverable errors
    wall_s: float = 0.0

    @property
    def answered(self) -> int:
        return len(set(self.ids) & set(self.per_task))

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.per_task.values() if n > 1)

    @property
    def lost(self) -> int:
        return len(set(self.ids) - set(self.per_task))

    @property
    def foreign(self) -> int:
        """Result entries for ids this run never submitted."""
        return len(set(self.per_task) - set(self.ids))

    def clean(self) -> bool:
        """Exactly once, nothing left behind, every answer ok, no worker crashed or failed its drain."""
        return (self.lost == 0 and self.duplicates == 0 and self.foreign == 0 and self.deadletters == 0
                and self.pending == 0 and self.in_lanes == 0 and self.statuses == Counter(ok=len(self.ids))
                and not self.crashes and all(code == 0 for code in self.exits.values()))

    def summary(self) -> str:
        held = ", ".join(str(k.held) for k in self.kills)
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.kinds.items()))
        lines = [
            f"tasks {len(self.ids)} ({kinds}), answered {self.answered}, duplicates {self.duplicates}, "
            f"lost {self.lost}, kills {len(self.kills)} (tasks held: {held}), takeovers {self.takeovers}, "
            f"wall {self.wall_s:.1f} s",
            f"  statuses {dict(self.statuses)}, dead letters {self.deadletters}, pending {self.pending}, "
            f"in lanes {self.in_lanes}, seed {self.plan.seed}",
            "  kills: " + "; ".join(f"{k.at_s:.1f} s {k.victim} (held {k.held}) -> {k.restarted_as}"
                                   for k in self.kills),
        ]
        if self.crashes or any(code != 0 for code in self.exits.values()):
            lines.append(f"  exits {self.exits}; crashes {self.crashes[:3]}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Tasks


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(ev: Any, shift_s: float) -> dict[str, Any]:
    return {"amount": round(float(ev.amount), 2), "currency": ev.currency, "mcc": ev.mcc, "channel": ev.channel,
            "country": ev.country, "timestamp": _rfc3339(ev.timestamp + shift_s)}


def fraud_requests(n: int, seed: int) -> list[dict[str, Any]]:
    """Simulated card transactions with short histories, the transaction a minute old."""
    from training.fraud_sim import FraudSimulator, SimConfig

    out = []
    low, high = FRAUD_HISTORY
    for example in FraudSimulator(SimConfig(seed=seed, lengths=((low, high, 1.0),))).examples(n):
        inp = example.input
        shift = time.time() - 60.0 - inp.transaction.timestamp
        out.append({"tenant": "chaos", "transaction": _event(inp.transaction, shift),
                    "history": [_event(e, shift) for e in inp.history]})
    return out


def triage_requests(n: int, seed: int) -> list[dict[str, Any]]:
    """Synthetic triage notes of at most TRIAGE_MAX_NOTE characters."""
    from training.triage_data import generate

    notes = [ex.note for ex in generate(2 * n + 20, seed=seed) if len(ex.note) <= TRIAGE_MAX_NOTE]
    if len(notes) < n:
        raise RuntimeError(f"only {len(notes)} short triage notes for {n}")
    return [{"tenant": "chaos", "note": note} for note in notes[:n]]


def tasks(plan: ChaosPlan, tag: str) -> list[tuple[Kind, str, dict[str, Any]]]:
    """(kind, task id, request) in submission order, the kinds interleaved at random."""
    rng = random.Random(plan.seed)
    n_triage = round(plan.tasks * plan.triage_share)
    triage: Kind = "triage"
    fraud: Kind = "fraud"
    kinds = [triage] * n_triage + [fraud] * (plan.tasks - n_triage)
    rng.shuffle(kinds)
    pools = {"triage": iter(triage_requests(n_triage, plan.seed)),
             "fraud": iter(fraud_requests(plan.tasks - n_triage, plan.seed))}
    return [(kind, f"{tag}-{i}-{kind}", next(pools[kind])) for i, kind in enumerate(kinds)]


# ---------------------------------------------------------------------------------------------
# Redis: results, pending, lanes


class Tally:
    """Result entries per task id over every result stream, read incrementally."""

    def __init__(self, admin: redis.Redis) -> None:
        self._admin = admin
        self._last: dict[str, str] = {}
        self.per_task: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()

    def read(self) -> None:
        for stream in self._admin.scan_iter(match=RESULTS_PREFIX + "*", _type="stream"):
            while True:
                start = "(" + self._last[stream] if stream in self._last else "-"
                entries = self._admin.xrange(stream, start, "+", count=2000)
                if not entries:
                    break
                for _, fields in entries:
                    message = json.loads(fields[RESULT_MESSAGE])
                    self.per_task[message["task_id"]] += 1
                    self.statuses[message["status"]] += 1
                self._last[stream] = entries[-1][0]


def _pending(admin: redis.Redis) -> Counter[str]:
    """Entries pending per consumer, over both lanes."""
    held: Counter[str] = Counter()
    for lane in LANES:
        with contextlib.suppress(redis.ResponseError):  # no stream or no group yet
            for row in admin.xpending(queue_stream(lane), CONSUMER_GROUP)["consumers"] or []:
                held[row["name"]] += int(row["pending"])
    return held


def _in_lanes(admin: redis.Redis) -> int:
    return sum(int(admin.xlen(queue_stream(lane))) for lane in LANES)


def _log_events(path: Path, event: str) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
    return found


# ---------------------------------------------------------------------------------------------
# The run


class Workers:
    """The run's worker processes: spawned, killed and replaced under new names."""

    def __init__(self, url: str, log_dir: Path, plan: ChaosPlan, tag: str) -> None:
        self._url, self._log_dir, self._tag = url, log_dir, tag
        self._env = {
            "INFERQ_DEVICE": "cpu",
            "INFERQ_CLAIM_IDLE_MS": str(plan.claim_idle_ms),
            "INFERQ_MAX_DELIVERIES": str(plan.kills + 2),
            "INFERQ_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
            "INFERQ_LOG_LEVEL": "WARNING",
            "INFERQ_LOG_JSON": "true",
        }
        self.spawned: list[WorkerProcess] = []
        self.live: list[WorkerProcess] = [self.spawn() for _ in range(plan.workers)]

    def spawn(self) -> WorkerProcess:
        worker = spawn_worker(self._url, f"{self._tag}-w{len(self.spawned) + 1}", self._log_dir, self._env)
        self.spawned.append(worker)
        return worker

    def ready(self) -> list[WorkerProcess]:
        return [w for w in self.live if w.proc.poll() is None and w.ready()]

    def replace(self, dead: WorkerProcess) -> WorkerProcess:
        fresh = self.spawn()
        self.live = [w for w in self.live if w is not dead] + [fresh]
        return fresh

    def stop(self) -> dict[str, int | None]:
        for w in self.live:
            w.terminate()
        return {w.name: w.stop(DRAIN_TIMEOUT_S + 10.0) for w in self.live}

    def kill_all(self) -> None:
        for w in self.spawned:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()


def _kill_moments(plan: ChaosPlan, rng: random.Random) -> list[float]:
    end = max(KILL_FROM_S + 1.0, plan.submit_s)
    return sorted(rng.uniform(KILL_FROM_S, end) for _ in range(plan.kills))


def _kill_one(admin: redis.Redis, workers: Workers, rng: random.Random, started: float) -> Kill:
    """SIGKILL a worker drawn among the ready ones, at its first moment holding a task; restart it."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (ready := workers.ready()):
        if time.monotonic() > deadline:
            raise RuntimeError("no worker ready to kill")
        time.sleep(0.1)
    victim = rng.choice(sorted(ready, key=lambda w: w.name))
    until = time.monotonic() + HOLD_WAIT_S
    while _pending(admin)[victim.name] == 0 and time.monotonic() < until:
        time.sleep(0.005)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    at_s = time.monotonic() - started
    held = _pending(admin)[victim.name]
    fresh = workers.replace(victim)
    return Kill(round(at_s, 2), victim.name, held, fresh.name)


def _submit(client: InferqClient, batch: Sequence[tuple[Kind, str, dict[str, Any]]]) -> None:
    by_kind: dict[Kind, list[tuple[str, dict[str, Any]]]] = {}
    for kind, task_id, request in batch:
        by_kind.setdefault(kind, []).append((task_id, request))
    for kind, items in by_kind.items():
        client.submit_many(kind, [r for _, r in items], task_ids=[t for t, _ in items])


def run_chaos(url: str, plan: ChaosPlan, log_dir: Path, tag: str = "chaos") -> ChaosRun:
    """One chaos run on the database at `url` (which it flushes first); what happened, counted."""
    admin = redis.Redis.from_url(url, decode_responses=True)
    admin.flushdb()
    rng = random.Random(plan.seed ^ 0x5EED)
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = Workers(url, log_dir, plan, tag)
    client = InferqClient(url, settings=Settings(redis_url=url))
    try:
        work = tasks(plan, tag)  # while the workers load their models
        run = ChaosRun(plan, [task_id for _, task_id, _ in work], Counter(kind for kind, _, _ in work))
        for w in workers.live:
            w.wait_ready(READY_TIMEOUT_S)
        moments = _kill_moments(plan, rng)
        started = time.monotonic()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                for start in range(0, len(work), SUBMIT_GROUP):
                    wait_s = started + start / plan.rate_per_s - time.monotonic()
                    if wait_s > 0:
                        time.sleep(wait_s)
                    _submit(client, work[start : start + SUBMIT_GROUP])
            except BaseException as exc:  # re-raised in the run's thread
                failure.append(exc)

        producer = threading.Thread(target=produce, name="chaos-producer", daemon=True)
        producer.start()
        for moment in moments:
            wait_s = started + moment - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
            run.kills.append(_kill_one(admin, workers, rng, started))
        producer.join()
        if failure:
            raise failure[0]

        tally = Tally(admin)
        deadline = time.monotonic() + plan.answer_timeout_s
        ids = set(run.ids)
        while True:
            tally.read()
            if ids <= set(tally.per_task) and _in_lanes(admin) == 0 and not _pending(admin).total():
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        run.wall_s = time.monotonic() - started
        time.sleep(2 * plan.claim_idle_ms / 1000.0)  # a late second answer would show by now
        tally.read()
        run.per_task, run.statuses = tally.per_task, tally.statuses
        run.pending, run.in_lanes = _pending(admin).total(), _in_lanes(admin)
        run.deadletters = int(admin.xlen(DEADLETTER_STREAM))
        run.exits = workers.stop()
        for w in workers.spawned:
            run.takeovers += sum(int(r.get("count", 0)) for r in _log_events(w.log_path, "task.takeover"))
            text = w.log_path.read_text(errors="replace")
            run.crashes += [line for line in text.splitlines()
                            if "thread.crashed" in line or "Unrecoverable error" in line]
        return run
    finally:
        client.close()
        workers.kill_all()
        admin.close()


# ---------------------------------------------------------------------------------------------
# Command line


def _database(url: str | None, own_server: bool) -> contextlib.AbstractContextManager[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import claimed_database

    return claimed_database(url, own_server)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--rate", type=float, default=80.0, help="tasks submitted per second")
    parser.add_argument("--seed", type=int, help="seed of the first run (the next ones add 1); default: random")
    parser.add_argument("--redis-url", help="a database nothing else uses; it is flushed")
    parser.add_argument("--embedded", action="store_true", help="always run an embedded Valkey of its own")
    parser.add_argument("--log-dir", type=Path, help="worker logs (default: a temporary directory)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    log_root = args.log_dir or Path(tempfile.mkdtemp(prefix="inferq-chaos-logs-"))
    print(f"chaos: {args.runs} runs of {args.tasks} tasks, {args.kills} kills, two workers, "
          f"{args.rate:g} tasks/s, first seed {seed}; logs in {log_root}", flush=True)
    clean = True
    with _database(args.redis_url, args.embedded) as url:
        try:
            for n in range(1, args.runs + 1):
                plan = ChaosPlan(tasks=args.tasks, kills=args.kills, seed=seed + n - 1, rate_per_s=args.rate)
                run = run_chaos(url, plan, log_root / f"run{n}", tag=f"r{n}")
                clean &= run.clean()
                print(f"run {n}: {run.summary()}", flush=True)
        finally:
            redis.Redis.from_url(url).flushdb()
    print("chaos: every task answered exactly once" if clean else "chaos: FAILED", flush=True)
    return 0 if clean else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
