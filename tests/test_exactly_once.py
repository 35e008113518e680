"""Exactly once on every outcome path, with a real worker killed around its one atomic write.

Every outcome of a delivery (ok, invalid, expired, rejected, failed, dead-letter, ack-only) is written
by one Lua script, FINISH (`worker/keys.py`): marker SET NX, result XADD, dead-letter XADD, XACK and
XDEL in one step. A worker can therefore die at two meaningful moments only:

* before the script: the outcome is computed and the script even sent, but it has not run. Nothing is
  written; the entry stays pending for the dead worker, and a peer (or the restarted worker) takes it
  over after `INFERQ_CLAIM_IDLE_MS` and answers it, once.
* after the script: everything is written at once; the entry is gone from the pending list and the
  stream, so nobody answers it again.

Each kill test drives a real worker process (`python -m worker.app`) to both moments, one task each,
with external means only: signals and the server's own `CLIENT PAUSE WRITE` (a private embedded Valkey
for this module, since a pause stops every writer of the server).

1. Both workers are SIGSTOPped, and stay so until their blocking XREADGROUP (`FETCH_BLOCK_MS`) has
   timed out; the victim is let run a moment at a time until it is stopped inside a blocking read.
   The task's entry is XADDed then: the server hands it to the stopped victim (XPENDING shows it
   with the victim's consumer), and nobody else can read it.
2. Writes are paused (`CLIENT PAUSE WRITE`) and the victim continued: it reads the entry, computes
   the outcome and sends FINISH, which the server holds (`CLIENT LIST`: a blocked `evalsha`). The
   victim is SIGSTOPped again there.
3. "After": writes are unpaused while the victim is stopped. FINISH runs before the victim has seen
   its reply. Checked: one result with the path's status and code, the marker, the entry gone from the
   pending list and the stream, the dead-letter entry where the path has one.
4. "Before": a second task goes the same way to step 2, then the victim is SIGKILLed while the server
   holds its FINISH, and writes are unpaused. Checked: nothing written (no result, no marker, no dead
   letter), the entry still pending for the dead victim.
5. The peer is continued and the victim restarted. The task of step 4 is answered once, the task of
   step 3 not again; nothing is left pending or in the lane.

A second test per path stalls the victim (SIGSTOP) holding a fetched task until the peer has taken it
over and answered it, then lets it go on (a GC pause, a stalled node): its late outcome must write
nothing more. It also runs a dead letter that has no result (an unknown task name delivered too often,
so no kind to answer as): the late copy writes no
second dead-letter entry (FINISH dead-letters only an entry still pending).

The paths: ok (a fraud task), invalid (an unknown currency), expired (`timeout_ms` 1), rejected (a bad
signature: the workers hold a signing key, unsigned entries still accepted), failed (a triage note too
long for the model: the workers load the shipped triage model with 32-token windows, from a copy of
`models/`, so the engine refuses it with `model_error`), dead-letter (an entry that says it was
delivered three times before: `too_many_deliveries`), ack-only (a second entry for an answered id).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from contracts.wire import DEADLETTER_STREAM, RESULT_MESSAGE, RESULTS_PREFIX, TASK_FRAUD, TASK_TRIAGE, queue_stream
from worker import embedded
from worker.fetching import FETCH_BLOCK_MS
from worker.ingress import ensure_group
from worker.keys import CONSUMER_GROUP, FIELD_PRIOR_DELIVERIES, done_key
from worker.processes import WorkerProcess, spawn_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
LANE = "realtime"
STREAM = queue_stream(LANE)
CLAIM_IDLE_MS = 1000
READY_TIMEOUT_S = 90.0  # both models, on a shared 2-core machine
ANSWER_TIMEOUT_S = 30.0
STEP_TIMEOUT_S = 15.0
PAUSE_MS = 30_000  # the longest a pause may last if a test dies holding it; each test unpauses itself
# Longer than a blocking XREADGROUP: a worker stopped this long is blocked in no read.
READ_EXPIRED_S = FETCH_BLOCK_MS / 1000.0 + 0.2
SIGNING_KID = "k1"
SIGNING_KEY = base64.b64encode(b"exactly-once-test-key-0123456789").decode()
WINDOW_TOKENS = 32  # the triage model's window in this module: a long note needs more than 64 windows
FAILING_NOTE = "chest pain " * 800


# ---------------------------------------------------------------------------------------------
# Requests and the paths


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _event(amount: float, ago_s: float, currency: str = "EUR") -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "mcc": "5411", "channel": "card_present", "country": "DE",
            "timestamp": _rfc3339(time.time() - ago_s)}


def _fraud(currency: str = "EUR", **extra: Any) -> str:
    history = [_event(20.0 + k, 3_600.0 * (10 - k)) for k in range(8)]
    return json.dumps({"tenant": "exactly-once", "transaction": _event(35.0, 60.0, currency), "history": history,
                       **extra})


def _entry(task: str, task_id: str, request: str, **fields: str) -> dict[str, str]:
    return {"task": task, "id": task_id, "request": request, **fields}


def _ok(task_id: str) -> dict[str, str]:
    return _entry(TASK_FRAUD, task_id, _fraud())


def _invalid(task_id: str) -> dict[str, str]:
    return _entry(TASK_FRAUD, task_id, _fraud(currency="ZZZ"))


def _expired(task_id: str) -> dict[str, str]:
    return _entry(TASK_FRAUD, task_id, _fraud(timeout_ms=1))


def _rejected(task_id: str) -> dict[str, str]:
    # Signed with the workers' key id, but the MAC is wrong.
    return _entry(TASK_FRAUD, task_id, _fraud(), sig_kid=SIGNING_KID, sig_ts=str(int(time.time() * 1000)),
                  sig="0" * 64)


def _failed(task_id: str) -> dict[str, str]:
    return _entry(TASK_TRIAGE, task_id, json.dumps({"tenant": "exactly-once", "note": FAILING_NOTE}))


def _deadletter(task_id: str) -> dict[str, str]:
    # As if delivered max_deliveries (3) times already: the next delivery is one too many.
    return _entry(TASK_FRAUD, task_id, _fraud(), **{FIELD_PRIOR_DELIVERIES: "3"})


def _unanswerable(task_id: str) -> dict[str, str]:
    # A task name inferq does not run, delivered too often: dead-lettered unread, with no kind to answer
    # as (one delivered once is answered `invalid` `unknown_task` on the stream of the kind it looks like).
    return _entry("inferq.unknown", task_id, _fraud(), **{FIELD_PRIOR_DELIVERIES: "3"})


@dataclass(frozen=True)
class OutcomePath:
    name: str
    entry: Callable[[str], dict[str, str]]  # task id -> the lane entry's fields
    status: str | None  # None: acked only, no result
    code: str | None = None
    deadletter: bool = False
    duplicate: bool = False  # every entry repeats the id of a task answered before


PATHS = [
    OutcomePath("ok", _ok, "ok"),
    OutcomePath("invalid", _invalid, "invalid", "unknown_currency"),
    OutcomePath("expired", _expired, "expired", "expired"),
    OutcomePath("rejected", _rejected, "rejected", "bad_signature"),
    OutcomePath("failed", _failed, "failed", "model_error"),
    OutcomePath("dead-letter", _deadletter, "failed", "too_many_deliveries", deadletter=True),
    OutcomePath("ack-only", _ok, None, duplicate=True),
]
UNANSWERABLE = OutcomePath("dead-letter-unanswerable", _unanswerable, None, deadletter=True)
STALL_PATHS = [*PATHS, UNANSWERABLE]


# ---------------------------------------------------------------------------------------------
# The module's server and workers


def _models_dir(target: Path) -> Path:
    """A copy of the shipped models, the triage model reading 32-token windows (a copy: a training run
    may rewrite models/ meanwhile)."""
    shutil.copytree(REPO / "models" / "fraud", target / "fraud")
    shutil.copytree(REPO / "models" / "triage", target / "triage")
    manifest_path = target / "triage" / "inferq-model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(max_length=WINDOW_TOKENS, chunk_stride=8)
    manifest_path.write_text(json.dumps(manifest))
    return target


class Cluster:
    """A private embedded Valkey and two worker processes on it; a killed worker is replaced."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.state_dir = home / "valkey"
        self.url = embedded.start(self.state_dir).url
        self.admin = redis.Redis.from_url(self.url, decode_responses=True)
        self.models = _models_dir(home / "models")
        self.spawned = 0
        self.workers: list[WorkerProcess] = [self.spawn(), self.spawn()]

    def spawn(self) -> WorkerProcess:
        self.spawned += 1
        env = {
            "INFERQ_MODELS_DIR": str(self.models),
            "INFERQ_LANES": json.dumps([LANE]),
            "INFERQ_DEVICE": "cpu",
            "INFERQ_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "INFERQ_DRAIN_TIMEOUT_S": "5",
            "INFERQ_SIGNING_KEYS": f"{SIGNING_KID}:{SIGNING_KEY}",
            "INFERQ_SIGNING_REQUIRED": "false",
            "INFERQ_LOG_LEVEL": "INFO",
        }
        return spawn_worker(self.url, f"w{self.spawned}", self.home, env)

    def pair(self) -> tuple[WorkerProcess, WorkerProcess]:
        """(victim, peer), both ready."""
        for w in self.workers:
            w.wait_ready(READY_TIMEOUT_S)
        victim, peer = self.workers
        return victim, peer

    def replace(self, dead: WorkerProcess) -> WorkerProcess:
        """Restart a killed worker (under a new consumer name); the survivor is the next test's victim."""
        fresh = self.spawn()
        self.workers = [w for w in self.workers if w is not dead] + [fresh]
        return fresh

    def release(self) -> None:
        """Whatever a test left: writes unpaused, every live worker running."""
        try:
            self.admin.execute_command("CLIENT", "UNPAUSE")
        finally:
            for w in self.workers:
                if w.proc.poll() is None:
                    os.kill(w.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        try:
            self.release()
            for w in self.workers:
                w.stop(timeout_s=10.0)
        finally:
            self.admin.close()
            embedded.stop(self.state_dir)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster(tmp_path_factory.mktemp("exactly-once"))
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def clean(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with nothing in flight and no outcome written yet; released (unpaused, continued)
    whatever the test did."""
    admin = cluster.admin
    if admin.exists(STREAM) and (admin.xlen(STREAM) or _group_pending(admin)):
        admin.flushdb()  # what a failed test left behind
    ensure_group(admin, LANE)
    for pattern in (RESULTS_PREFIX + "*", done_key("*"), DEADLETTER_STREAM):
        for key in admin.scan_iter(match=pattern):
            admin.delete(key)
    try:
        yield cluster
    finally:
        cluster.release()


# ---------------------------------------------------------------------------------------------
# Signals, the server's view of its clients, what is written


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = STEP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        time.sleep(0.01)


def _stopped(pid: int) -> bool:
    """Every thread of the process is in a job-control stop."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state not in ("T", "t"):
            return False
    return True


def _stop(w: WorkerProcess) -> None:
    os.kill(w.proc.pid, signal.SIGSTOP)
    _wait(lambda: _stopped(w.proc.pid), f"{w.name} stops")


def _cont(w: WorkerProcess) -> None:
    os.kill(w.proc.pid, signal.SIGCONT)


def _kill(w: WorkerProcess) -> None:
    w.proc.kill()
    assert w.proc.wait(10.0) == -signal.SIGKILL


def _blocked(admin: redis.Redis, command: str) -> int:
    """Clients the server holds in `command`: a blocking read, or a write held by a pause."""
    return sum(1 for c in admin.client_list() if c["cmd"] == command and "b" in c["flags"])


def _pause(admin: redis.Redis) -> None:
    admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")


def _unpause(admin: redis.Redis) -> None:
    admin.execute_command("CLIENT", "UNPAUSE")


def _holder(admin: redis.Redis, entry_id: str) -> tuple[str, int] | None:
    """(consumer, times delivered) of a pending entry; None when it is not pending."""
    rows = admin.xpending_range(STREAM, CONSUMER_GROUP, entry_id, entry_id, 1)
    return (rows[0]["consumer"], int(rows[0]["times_delivered"])) if rows else None


def _in_lane(admin: redis.Redis, entry_id: str) -> bool:
    return bool(admin.xrange(STREAM, entry_id, entry_id))


def _group_pending(admin: redis.Redis) -> int:
    return int(admin.xpending(STREAM, CONSUMER_GROUP)["pending"])


def _results(admin: redis.Redis) -> dict[str, list[dict[str, Any]]]:
    """Every result message, per task id, over every result stream."""
    found: dict[str, list[dict[str, Any]]] = {}
    for stream in admin.scan_iter(match=RESULTS_PREFIX + "*", _type="stream"):
        for _, fields in admin.xrange(stream):
            message = json.loads(fields[RESULT_MESSAGE])
            found.setdefault(message["task_id"], []).append(message)
    return found


def _deadletters(admin: redis.Redis) -> Counter[str]:
    return Counter(fields["task_id"] for _, fields in admin.xrange(DEADLETTER_STREAM))


def _metric(w: WorkerProcess, name: str) -> float:
    """Sum of a worker's samples of one Prometheus metric."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{w.port}/metrics", timeout=5.0) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


# ---------------------------------------------------------------------------------------------
# Driving a worker to the two moments


def _quiet(admin: redis.Redis, *workers: WorkerProcess) -> None:
    """Stop every worker, and wait until none of them can be blocked in a read any more."""
    for w in workers:
        _stop(w)
    time.sleep(READ_EXPIRED_S)
    assert _blocked(admin, "xreadgroup") == 0


def _deliver(admin: redis.Redis, victim: WorkerProcess, fields: dict[str, str]) -> str:
    """XADD the entry at a moment the stopped victim is blocked in its read: the server hands it over.

    Precondition: every other worker is stopped and in no read (`_quiet`). Returns the entry id,
    pending for the victim; the victim stays stopped and has not seen it yet.
    """
    for _ in range(200):
        _cont(victim)
        time.sleep(0.02)
        _stop(victim)
        if _blocked(admin, "xreadgroup") != 1:
            continue
        entry_id = str(admin.xadd(STREAM, fields))  # type: ignore[arg-type]
        holder = _holder(admin, entry_id)
        if holder is not None:
            assert holder == (victim.name, 1)
            return entry_id
        # Its read timed out in between: nobody has the entry, and nobody can take it; try again.
        admin.xdel(STREAM, entry_id)
    raise AssertionError(f"{victim.name} was never caught blocked in its read")


def _hold_finish(admin: redis.Redis, victim: WorkerProcess) -> None:
    """Let the victim compute what it holds and send FINISH, which the paused server holds; stop it there."""
    _pause(admin)
    _cont(victim)
    _wait(lambda: _blocked(admin, "evalsha") >= 1, f"{victim.name} sends FINISH")
    _stop(victim)


def _answered_once(path: OutcomePath, messages: list[dict[str, Any]]) -> None:
    assert len(messages) == 1, messages
    message = messages[0]
    assert message["status"] == path.status, message
    assert (message["error"] or {}).get("code") == path.code, message


def _check_written(admin: redis.Redis, path: OutcomePath, task_id: str, entry_id: str) -> None:
    """After FINISH: the outcome whole, the entry acked and deleted."""
    assert _holder(admin, entry_id) is None and not _in_lane(admin, entry_id)
    results = _results(admin)
    if path.duplicate:
        assert len(results[task_id]) == 1  # the first answer only
    elif path.status is None:
        assert task_id not in results
    else:
        _answered_once(path, results[task_id])
        assert admin.get(done_key(task_id)) is not None
    assert _deadletters(admin)[task_id] == (1 if path.deadletter else 0)


def _check_untouched(admin: redis.Redis, path: OutcomePath, task_id: str, entry_id: str, victim: str) -> None:
    """Killed before FINISH ran: nothing of the outcome written, the entry pending for the dead victim."""
    assert _holder(admin, entry_id) == (victim, 1)
    assert _in_lane(admin, entry_id)
    results = _results(admin)
    if path.duplicate:
        assert len(results[task_id]) == 1
    else:
        assert task_id not in results
        assert admin.get(done_key(task_id)) is None
    assert _deadletters(admin)[task_id] == 0


def _answer_first(admin: redis.Redis, task_id: str) -> None:
    """The ack-only path's first answer, by whichever worker takes it."""
    admin.xadd(STREAM, _ok(task_id))  # type: ignore[arg-type]
    _wait(lambda: task_id in _results(admin) and _group_pending(admin) == 0 and admin.xlen(STREAM) == 0,
          "the first submission is answered", ANSWER_TIMEOUT_S)


def _drained(admin: redis.Redis) -> bool:
    return admin.xlen(STREAM) == 0 and _group_pending(admin) == 0


def _ids(path: OutcomePath, tag: str) -> tuple[str, str]:
    if path.duplicate:
        return f"{path.name}-{tag}-answered", f"{path.name}-{tag}-answered"
    return f"{path.name}-{tag}-after", f"{path.name}-{tag}-before"


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_killed_before_or_after_finish_the_task_is_answered_once(clean: Cluster, path: OutcomePath) -> None:
    admin = clean.admin
    victim, peer = clean.pair()
    after_id, before_id = _ids(path, "kill")
    if path.duplicate:
        _answer_first(admin, after_id)
    _quiet(admin, victim, peer)

    # After: FINISH runs while the victim is stopped; it never learns that it did.
    after_entry = _deliver(admin, victim, path.entry(after_id))
    _hold_finish(admin, victim)
    _unpause(admin)
    _wait(lambda: _holder(admin, after_entry) is None, "the held FINISH runs")
    _check_written(admin, path, after_id, after_entry)

    # Before: the victim dies with its FINISH sent and held; the server drops it with the connection.
    before_entry = _deliver(admin, victim, path.entry(before_id))
    _hold_finish(admin, victim)
    _kill(victim)
    _wait(lambda: _blocked(admin, "evalsha") == 0, "the server drops the dead victim's FINISH")
    _unpause(admin)
    _check_untouched(admin, path, before_id, before_entry, victim.name)

    # A peer and the restarted worker: the pending task answered once, the written one not again.
    restarted = clean.replace(victim)
    _cont(peer)
    _wait(lambda: _drained(admin), "the dead victim's task is taken over and answered", ANSWER_TIMEOUT_S)
    restarted.wait_ready(READY_TIMEOUT_S)
    assert _drained(admin)
    results = _results(admin)
    if path.status is None:
        assert set(results) == {after_id} and len(results[after_id]) == 1
        assert results[after_id][0]["status"] == "ok"
    else:
        assert set(results) == {after_id, before_id}
        _answered_once(path, results[after_id])
        _answered_once(path, results[before_id])
        assert admin.get(done_key(before_id)) is not None
    expected_dead = Counter({after_id: 1, before_id: 1}) if path.deadletter else Counter()
    assert _deadletters(admin) == expected_dead


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", STALL_PATHS, ids=[p.name for p in STALL_PATHS])
def test_a_stalled_worker_resuming_after_a_takeover_writes_nothing_more(clean: Cluster, path: OutcomePath) -> None:
    admin = clean.admin
    victim, peer = clean.pair()
    task_id = f"{path.name}-stall-answered" if path.duplicate else f"{path.name}-stall"
    if path.duplicate:
        _answer_first(admin, task_id)
    late = "inferq_deadlettered_total" if path.deadletter else "inferq_duplicates_total"
    late_before = _metric(victim, late)
    _quiet(admin, victim, peer)

    entry_id = _deliver(admin, victim, path.entry(task_id))
    # The victim stalls past claim_idle_ms holding the entry; the peer takes it over and answers it.
    _cont(peer)
    _wait(lambda: _drained(admin), "the stalled victim's task is taken over and answered", ANSWER_TIMEOUT_S)
    _check_written(admin, path, task_id, entry_id)
    # The victim goes on with its copy: its outcome must add nothing.
    _cont(victim)
    _wait(lambda: _metric(victim, late) > late_before, f"{victim.name} finishes its late copy")
    assert _drained(admin)
    _check_written(admin, path, task_id, entry_id)
