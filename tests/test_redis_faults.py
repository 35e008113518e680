"""Redis faults, with real servers and real worker processes.

Every test that stops, restarts or fills Redis runs its own embedded Valkey (`worker.embedded`: its own
state directory, append-only file with `appendfsync everysec` as docs/operations.md asks, and a port
of its own that a restart keeps), never the shared test server. Workers are `python -m worker.app`
processes (`worker.processes.spawn_worker`) serving fraud only, so they start in a few seconds.

What "accepted" means (docs/operations.md, "Redis outages and out of memory"): `submit` returned the
task's id. Under `appendfsync everysec` an accepted task survives a graceful restart (SIGTERM), and
a crash (SIGKILL) once it was accepted more than about two seconds before: Redis may hold back the
write of the last second while an fsync is slow. So after a SIGTERM every accepted task must be
answered exactly once; after a SIGKILL every task accepted more than `FSYNC_WINDOW_S` before the kill,
and none twice (the test prints how many of the window's tasks were lost: none on a healthy disk).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis

import worker.client
from contracts import TaskStatus
from contracts.wire import LANES, RESULT_MESSAGE, RESULTS_PREFIX, TASK_FRAUD, queue_stream
from worker import embedded
from worker.client import InferqClient, raw_fields
from worker.config import Settings
from worker.errors import RedisUnavailable, ServerFull
from worker.keys import CONSUMER_GROUP
from worker.processes import WorkerProcess, free_port
from worker.processes import spawn_worker as spawn_worker_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READY_TIMEOUT_S = 60.0  # a fraud model loads in a few seconds, longer on a busy 2-core machine
ANSWER_TIMEOUT_S = 30.0
CLAIM_IDLE_MS = 1500
DRAIN_TIMEOUT_S = 4.0
CLIENT_RETRY_S = 1.0  # producers give up on a Redis that does not answer after this long
OUTAGE_S = 3.0
# appendfsync everysec: Redis may postpone the write of the last ~2 s of the AOF while an fsync is slow.
FSYNC_WINDOW_S = 2.0
# A RedisUnavailable may come this long after client_retry_s: the attempt that found the time up.
RETRY_SLACK_S = 1.0
MARKER = "phi-marker-7f3a"  # in every request: no log line may carry it


# ---------------------------------------------------------------------------------------------
# Servers, workers, requests, results


class PrivateRedis:
    """An embedded Valkey of one test: its own state dir and a port kept across restarts."""

    def __init__(self, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        # embedded.start picks a free port each time; a restart must come back where workers look.
        monkeypatch.setattr(embedded, "_free_port", lambda: self.port)
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> float:
        server = embedded.start(self.state_dir)
        assert server.url == self.url and server.started_here
        self.pid = server.pid
        return time.monotonic()

    def kill(self, sig: signal.Signals) -> float:
        """Send `sig` and return once the server no longer answers."""
        assert self.pid is not None
        os.kill(self.pid, sig)
        deadline = time.monotonic() + 10.0
        while self.answers():
            assert time.monotonic() < deadline, f"Redis did not stop on {sig.name}"
            time.sleep(0.01)
        self.pid = None
        return time.monotonic()

    def answers(self) -> bool:
        # from_url: no client-side retries (redis.Redis() retries a refused connection for seconds).
        probe = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(probe.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            probe.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def close(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                self.kill(signal.SIGKILL)


@pytest.fixture
def private_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "state", monkeypatch)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts fraud-only workers; whatever still runs at the end is drained, then killed."""
    started: list[WorkerProcess] = []

    def start(url: str, name: str, **env: str) -> WorkerProcess:
        full_env = {
            "INFERQ_KINDS": '["fraud"]',
            "INFERQ_DEVICE": "cpu",
            "INFERQ_LOG_LEVEL": "INFO",
            "INFERQ_LOG_JSON": "true",
            "INFERQ_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "INFERQ_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
            **env,
        }
        process = spawn_worker_process(url, name, tmp_path, full_env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.stop(timeout_s=DRAIN_TIMEOUT_S + 5.0)


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _event(amount: float, ago_s: float) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR", "mcc": "5411", "channel": "card_present", "country": "DE",
            "timestamp": _rfc3339(time.time() - ago_s), "device_id": "pos-1"}


def fraud_request(i: int, events: int = 12) -> dict[str, Any]:
    """A fraud request; 160 events make one of about 25 KB."""
    history = [_event(20.0 + k % 50, 3_600.0 * (events - k) + 120) for k in range(events)]
    return {"tenant": MARKER, "transaction": _event(15.0 + 7 * i, 60), "history": history}


def answered(client: redis.Redis) -> Counter[str]:
    """Result entries per task id, over every result stream."""
    per_task: Counter[str] = Counter()
    for stream in client.scan_iter(match=RESULTS_PREFIX + "*", _type="stream"):
        for _, fields in cast(list[tuple[str, dict[str, str]]], client.xrange(stream)):
            message = json.loads(fields[RESULT_MESSAGE])
            assert message["status"] == TaskStatus.OK.value, message
            per_task[message["task_id"]] += 1
    return per_task


def in_lanes(client: redis.Redis) -> int:
    return sum(int(client.xlen(queue_stream(lane))) for lane in LANES)


def pending_of(client: redis.Redis, consumer: str) -> int:
    return sum(
        len(client.xpending_range(queue_stream(lane), CONSUMER_GROUP, "-", "+", 10_000, consumername=consumer))
        for lane in LANES
        if client.exists(queue_stream(lane))
    )


def wait_answered(client: redis.Redis, ids: set[str], timeout_s: float = ANSWER_TIMEOUT_S) -> Counter[str]:
    """Waits until every id in `ids` has a result and no lane entry is left; the results per id."""
    deadline = time.monotonic() + timeout_s
    while True:
        per_task = answered(client)
        if ids <= set(per_task) and in_lanes(client) == 0:
            return per_task
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(ids - set(per_task))} of {len(ids)} accepted tasks unanswered; "
                                 f"{in_lanes(client)} lane entries left")
        time.sleep(0.1)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Polls `condition` until true; returns when it became so (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:g}s: {what}"
        time.sleep(0.05)
    return time.monotonic()


def probe(process: WorkerProcess, path: str) -> int:
    """HTTP status of /livez or /readyz (0: not listening)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{process.port}{path}", timeout=1.0) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def log_events(process: WorkerProcess, event: str) -> list[dict[str, Any]]:
    """The worker's JSON log lines of one event."""
    found = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def assert_clean_log(process: WorkerProcess) -> None:
    text = process.log_path.read_text(errors="replace")
    assert MARKER not in text, "a log line carries request content"
    assert "thread.crashed" not in text and "Unrecoverable error" not in text, process.log_tail()


def client_settings(url: str) -> Settings:
    return Settings(redis_url=url, client_retry_s=CLIENT_RETRY_S)


# ---------------------------------------------------------------------------------------------
# 1 and 3. Redis restarts mid-run


@dataclass
class Call:
    started: float
    ended: float
    task_id: str
    ids: list[str] = field(default_factory=list)  # what submit returned: [task_id] when accepted
    error: BaseException | None = None


class Producer:
    """A thread submitting one fraud task per call until stopped, recording each call's outcome."""

    def __init__(self, url: str) -> None:
        self._client = InferqClient(url, settings=client_settings(url))
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops calling; the client (and its reply stream, which `close` deletes) stays until `close`."""
        self._stop.set()
        self._thread.join(30.0)

    def close(self) -> None:
        self._client.close()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            started, task_id = time.monotonic(), f"p-{i}"
            i += 1
            try:
                ids = [self._client.submit("fraud", fraud_request(i), task_id=task_id)]
            except Exception as exc:  # the test asserts which exceptions these were
                self.calls.append(Call(started, time.monotonic(), task_id, error=exc))
                continue  # at once: some call is always retrying when Redis comes back
            self.calls.append(Call(started, time.monotonic(), task_id, ids=ids))
            self._stop.wait(0.08)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_redis_restart_mid_run_loses_no_accepted_task(
    private_redis: PrivateRedis, spawn: Callable[..., WorkerProcess], sig: signal.Signals
) -> None:
    private_redis.start()
    config = private_redis.client().config_get("append*")
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec", "the documented policy"
    process = spawn(private_redis.url, f"restart-{sig.name.lower()}")
    process.wait_ready(READY_TIMEOUT_S)

    with Producer(private_redis.url) as producer:
        time.sleep(1.5)  # accepted before the outage
        killed_at = time.monotonic()
        down_at = private_redis.kill(sig)
        # Readiness says Redis is unreachable while it is down; liveness does not.
        wait_for(lambda: probe(process, "/readyz") == 503, OUTAGE_S, "/readyz 503 while Redis is down")
        assert probe(process, "/livez") == 200
        time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        up_at = private_redis.start()
        ready_at = wait_for(lambda: probe(process, "/readyz") == 200, 15.0, "/readyz 200 once Redis answers")
        time.sleep(1.5)  # accepted after the outage

    calls = producer.calls
    accepted = {task_id for call in calls for task_id in call.ids}
    # After SIGKILL, what was accepted in the last fsync window may be gone (see the module docstring).
    at_risk = set() if sig is signal.SIGTERM else {
        task_id for call in calls if killed_at - FSYNC_WINDOW_S < call.ended <= down_at for task_id in call.ids
    }
    client = private_redis.client()
    per_task = wait_answered(client, accepted - at_risk)
    assert [task_id for task_id, n in per_task.items() if n != 1] == [], "a task answered twice"
    # A call that gave up may still have queued its task (the reply was lost): answered once, or not at all.
    assert set(per_task) <= {call.task_id for call in calls}

    failed = [call for call in calls if call.error is not None]
    print(f"{sig.name}: {len(accepted)} accepted, {len(at_risk)} in the fsync window, "
          f"{len(accepted - set(per_task))} of those lost; {len(failed)} calls gave up after "
          f"{[round(c.ended - c.started, 2) for c in failed]} s")
    assert failed, "a call during a 3 s outage gives up after client_retry_s"
    for call in failed:
        assert isinstance(call.error, RedisUnavailable), repr(call.error)
        took = call.ended - call.started
        assert CLIENT_RETRY_S <= took <= CLIENT_RETRY_S + RETRY_SLACK_S, f"RedisUnavailable after {took:.2f}s"
    retried = [call for call in calls if call.ids and down_at <= call.started < up_at]
    assert retried, "the call in flight when Redis came back succeeded after retrying"
    assert any(call.ids and call.started > ready_at for call in calls), "producers carry on after the outage"

    producer.close()
    assert process.proc.poll() is None and probe(process, "/livez") == 200
    assert log_events(process, "fetch.redis_error") and log_events(process, "fetch.redis_recovered")
    assert_clean_log(process)
    process.terminate()
    assert process.proc.wait(DRAIN_TIMEOUT_S + 10.0) == 0, process.log_tail()


@pytest.mark.timeout(90)
def test_readyz_follows_redis_reachability(private_redis: PrivateRedis, spawn: Callable[..., WorkerProcess]) -> None:
    private_redis.start()
    process = spawn(private_redis.url, "readyz")
    process.wait_ready(READY_TIMEOUT_S)
    private_redis.kill(signal.SIGTERM)
    wait_for(lambda: probe(process, "/readyz") == 503, 5.0, "/readyz 503 while Redis is down")
    for _ in range(10):  # down for 2 s: never ready, always live
        assert probe(process, "/readyz") == 503 and probe(process, "/livez") == 200
        time.sleep(0.2)
    private_redis.start()
    wait_for(lambda: probe(process, "/readyz") == 200, 10.0, "/readyz 200 once Redis answers")
    with InferqClient(private_redis.url, settings=client_settings(private_redis.url)) as producer:
        task_id = producer.submit("fraud", fraud_request(0))
        assert producer.result(task_id, ANSWER_TIMEOUT_S).status is TaskStatus.OK
    assert_clean_log(process)


# ---------------------------------------------------------------------------------------------
# 2. Redis down when the worker starts


@pytest.mark.timeout(90)
def test_worker_started_before_redis_waits_and_becomes_ready(
    private_redis: PrivateRedis, spawn: Callable[..., WorkerProcess]
) -> None:
    process = spawn(private_redis.url, "early")
    spawned = time.monotonic()
    # Redis comes 5-10 s later, once the worker has loaded its model and backed off a few times.
    while time.monotonic() < spawned + 5.0 or len(log_events(process, "fetch.redis_error")) < 4:
        assert process.proc.poll() is None, f"the worker exited without Redis: {process.log_tail()}"
        assert probe(process, "/readyz") in (0, 503), "ready without Redis"
        assert time.monotonic() < spawned + 10.0 + READY_TIMEOUT_S, process.log_tail()
        time.sleep(0.2)
    assert probe(process, "/livez") == 200
    private_redis.start()
    process.wait_ready(15.0)

    errors = log_events(process, "fetch.redis_error")
    waits = [record["retry_in_s"] for record in errors]
    assert waits[:4] == sorted(waits[:4]) and waits[3] > waits[0], f"backs off: {waits}"
    assert [record["attempt"] for record in errors[:4]] == [1, 2, 3, 4]
    wait_for(lambda: bool(log_events(process, "fetch.redis_recovered")), 5.0, "recovery logged")
    with InferqClient(private_redis.url, settings=client_settings(private_redis.url)) as producer:
        ids = producer.submit_many("fraud", [fraud_request(i) for i in range(4)])
        assert {t: m.status for t, m in producer.wait(ids, ANSWER_TIMEOUT_S).items()} == dict.fromkeys(
            ids, TaskStatus.OK)
    assert process.proc.poll() is None
    assert_clean_log(process)


# ---------------------------------------------------------------------------------------------
# 4. Out of memory


def consumers(client: redis.Redis) -> set[str]:
    names: set[str] = set()
    for lane in LANES:
        with contextlib.suppress(redis.ResponseError):
            names |= {c["name"] for c in client.xinfo_consumers(queue_stream(lane), CONSUMER_GROUP)}
    return names


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def out_of_memory(client: redis.Redis) -> bool:
    try:
        client.set("oom-probe", "1")
    except redis.OutOfMemoryError:
        return True
    client.delete("oom-probe")
    return False


@pytest.mark.timeout(120)
def test_out_of_memory_refuses_producers_exactly_and_workers_answer_what_was_accepted(
    private_redis: PrivateRedis, spawn: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    private_redis.start()
    admin = private_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    # The worker holds what it fetched for 2.5 s before its batch starts: long enough to fill Redis meanwhile.
    process = spawn(private_redis.url, "oom", INFERQ_REALTIME_MAX_WAIT_MS="2500",
                    INFERQ_REALTIME_MAX_BATCH_SIZE="64")
    process.wait_ready(READY_TIMEOUT_S)
    monkeypatch.setattr(worker.client, "SUBMIT_CHUNK", 4)  # several all-or-nothing chunks in one call
    producer = InferqClient(private_redis.url, settings=client_settings(private_redis.url))

    # Accepted (8 entries of ~50 KB), then Redis fills up while the worker holds them.
    held_ids = [f"held-{i}" for i in range(8)]
    held = set(producer.submit_many("fraud", [fraud_request(i, events=320) for i in range(8)], task_ids=held_ids))
    wait_for(lambda: pending_of(admin, "oom") == len(held), 5.0, "the worker holds the tasks")
    # And a worker that died holding two tasks: queued and handed to it in one step, so only a takeover gets them.
    ghost = {"ghost-0", "ghost-1"}
    pipe = admin.pipeline(transaction=True)
    for task_id in sorted(ghost):
        pipe.xadd(queue_stream("realtime"), cast(Any, raw_fields(TASK_FRAUD, task_id, json.dumps(fraud_request(0)))))
    pipe.xreadgroup(CONSUMER_GROUP, "ghost", {queue_stream("realtime"): ">"}, count=len(ghost))
    pipe.execute()
    admin.setrange("filler", 2_000_000, "x")  # 2 MB, without a 2 MB command in Redis' input buffer
    admin.config_set("maxmemory", str(used_memory(admin) - 800_000))
    full_at = used_memory(admin)
    assert out_of_memory(admin) and pending_of(admin, "oom") == len(held), "full while the worker holds them"

    # Producers are refused, every chunk, and told that nothing was queued.
    refused_ids = [f"refused-{i}" for i in range(8)]
    with pytest.raises(ServerFull) as refused:
        producer.submit_many("fraud", [fraud_request(i) for i in range(8)], task_ids=refused_ids)
    assert refused.value.queued == ()

    # The worker answers what it held, and takes over and answers the dead one's tasks, while Redis is
    # still full; finishing frees the lane entries, and the dead consumer leaves the group.
    wait_answered(admin, held | ghost)
    assert out_of_memory(admin), "answered while Redis was still over maxmemory"
    assert used_memory(admin) < full_at - 150_000, "finishing freed the lane entries"
    assert [record["count"] for record in log_events(process, "task.takeover")] == [len(ghost)]
    wait_for(lambda: consumers(admin) == {"oom"}, 5.0, "the dead consumer removed while Redis is full")
    assert out_of_memory(admin)
    assert probe(process, "/livez") == 200 and probe(process, "/readyz") == 200 and process.proc.poll() is None

    # Room for the first chunk only (3 chunks of 4 entries of ~100 KB): it goes in, and the refusal names
    # exactly its ids. Redis reads a command's arguments before it runs it, and they count as used memory
    # until it has run: each chunk is checked with its own ~400 KB on top of what the chunks before left.
    before = used_memory(admin)
    admin.delete("filler")  # freed in the background (lazyfree-lazy-user-del): wait until it is
    wait_for(lambda: used_memory(admin) < before - 1_500_000, 5.0, "the filler freed")
    partial_ids = [f"partial-{i}" for i in range(12)]
    partial_requests = [fraud_request(i, events=640) for i in range(12)]
    chunk_bytes = sum(len(json.dumps(request)) for request in partial_requests[:4])
    admin.config_set("maxmemory", str(used_memory(admin) + chunk_bytes * 3 // 2))
    with pytest.raises(ServerFull) as partial:
        producer.submit_many("fraud", partial_requests, task_ids=partial_ids)
    assert partial.value.queued == tuple(partial_ids[:4])
    per_task = wait_answered(admin, held | set(partial_ids[:4]))
    assert not set(per_task) & (set(refused_ids) | set(partial_ids[4:])), "refused tasks were not queued"

    # Memory allows again: what was refused is accepted and answered, nothing twice.
    admin.config_set("maxmemory", "0")
    resubmitted = producer.submit_many("fraud", [fraud_request(i) for i in range(16)],
                                       task_ids=refused_ids + partial_ids[4:])
    per_task = wait_answered(admin, held | ghost | set(partial_ids) | set(refused_ids))
    assert set(per_task) == held | ghost | set(partial_ids) | set(resubmitted)
    assert all(n == 1 for n in per_task.values())
    producer.close()

    # Never wedged: it kept trying what Redis refused (the heartbeat), and is live and ready.
    assert log_events(process, "heartbeat.refused") and log_events(process, "heartbeat.recovered")
    assert probe(process, "/livez") == 200 and process.proc.poll() is None
    assert process.ready(), "ready again"
    assert_clean_log(process)
    process.terminate()
    assert process.proc.wait(DRAIN_TIMEOUT_S + 10.0) == 0, process.log_tail()


# ---------------------------------------------------------------------------------------------
# 5. Takeover of a killed worker's tasks, and its consumer removed


@pytest.mark.timeout(120)
def test_takeover_is_logged_and_the_dead_consumer_removed(
    private_redis: PrivateRedis, spawn: Callable[..., WorkerProcess]
) -> None:
    private_redis.start()
    admin = private_redis.client()
    # The victim holds what it fetched for 5 s before its batch starts.
    victim = spawn(private_redis.url, "victim", INFERQ_REALTIME_MAX_WAIT_MS="5000", INFERQ_REALTIME_MAX_BATCH_SIZE="64")
    victim.wait_ready(READY_TIMEOUT_S)
    with InferqClient(private_redis.url, settings=client_settings(private_redis.url)) as producer:
        ids = set(producer.submit_many("fraud", [fraud_request(i) for i in range(6)]))
        wait_for(lambda: pending_of(admin, "victim") == len(ids), 5.0, "the victim holds every task")
        victim.proc.send_signal(signal.SIGKILL)
        assert victim.proc.wait(10.0) == -signal.SIGKILL
        assert "victim" in consumers(admin)

        survivor = spawn(private_redis.url, "survivor")
        survivor.wait_ready(READY_TIMEOUT_S)
        per_task = wait_answered(admin, ids)
        assert set(per_task) == ids and all(n == 1 for n in per_task.values())

    takeovers = log_events(survivor, "task.takeover")
    assert sum(record["count"] for record in takeovers) == len(ids), takeovers
    assert all(record["level"] == "warning" and set(record) <= {
        "component", "count", "lanes", "consumers", "event", "level", "timestamp"} for record in takeovers)
    wait_for(lambda: "victim" not in consumers(admin), 10.0, "the dead consumer leaves the group")
    assert consumers(admin) == {"survivor"}
    removed = log_events(survivor, "consumers.removed")
    assert removed and "victim" in removed[0]["consumers"]
    assert_clean_log(survivor)


# ---------------------------------------------------------------------------------------------
# 6. A drain that runs out of time


@pytest.mark.timeout(120)
def test_a_worker_whose_drain_timed_out_exits_nonzero_and_loses_nothing(
    private_redis: PrivateRedis, spawn: Callable[..., WorkerProcess]
) -> None:
    private_redis.start()
    admin = private_redis.client()
    process = spawn(private_redis.url, "undrained", INFERQ_DRAIN_TIMEOUT_S="2",
                    INFERQ_REALTIME_MAX_WAIT_MS="1500", INFERQ_REALTIME_MAX_BATCH_SIZE="64")
    process.wait_ready(READY_TIMEOUT_S)
    with InferqClient(private_redis.url, settings=client_settings(private_redis.url)) as producer:
        ids = set(producer.submit_many("fraud", [fraud_request(i) for i in range(6)]))
    wait_for(lambda: pending_of(admin, "undrained") == len(ids), 5.0, "the worker holds every task")
    # Redis goes away with the batch in hand: computed, its results cannot be posted.
    private_redis.kill(signal.SIGTERM)
    wait_for(lambda: bool(log_events(process, "batch.done")), 10.0, "the batch ran")
    stopping = time.monotonic()
    process.terminate()
    code = process.proc.wait(2.0 + 10.0)
    assert code == 1, process.log_tail()  # a non-zero exit of its own, not a signal's
    assert time.monotonic() - stopping < 2.0 + 5.0, "exits soon after its drain timeout"
    stopped = log_events(process, "worker.stopped")
    assert stopped and stopped[0]["drained"] is False and stopped[0]["abandoned"] == len(ids), stopped
    assert log_events(process, "publish.given_up")

    # Nothing lost: the entries stayed pending and a peer takes them over once Redis is back.
    private_redis.start()
    assert pending_of(admin, "undrained") == len(ids)
    peer = spawn(private_redis.url, "peer")
    peer.wait_ready(READY_TIMEOUT_S)
    per_task = wait_answered(admin, ids)
    assert set(per_task) == ids and all(n == 1 for n in per_task.values())
    assert_clean_log(process)
