"""The worker's threads and life cycle: fetch -> prepare -> batch and compute -> publish.

Owners are joined by bounded hand-offs (the habit of text-embeddings-inference's queue/infer): the
fetcher (`worker.fetching`) takes entries off Redis; the preparer (`worker.preparing`) validates and
prepares them; ONE inference thread per device takes lane batches from the batch former
(`engine.batching`) and computes them (`worker.computing`); the publisher (`worker.publishing`) writes
each outcome in one atomic script (`worker.outcomes`). Nothing is acked before its outcome is written.
Preparing and the forward pass take turns rather than overlap on a CPU (see `Turns`). A graceful stop (SIGTERM) stops
fetching, finishes the batch in hand, posts, acks and gives back what was fetched but not started.
A thread that dies stops the process loudly (`crashed`), so its supervisor restarts it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

import redis

from contracts.wire import LANES, Kind, Lane
from engine.batching import BatchLimits, LaneLimits, LaneScheduler, QueueKey
from worker import metrics
from worker.adapters import KindAdapter, load_adapters
from worker.computing import BatchComputer
from worker.config import Settings
from worker.connection import redis_client
from worker.entries import Delivery
from worker.errors import ConfigurationError
from worker.events import Monitor
from worker.fetching import Backoff, Fetched, Fetcher, Holdings, Reachability
from worker.health import HealthServer
from worker.ingress import Ingress
from worker.logging import bind_task, get_logger
from worker.outcomes import Outcome, Publisher
from worker.preparing import Job, Preparer, answer_expired, now_ms
from worker.publishing import PublishLoop
from worker.turns import Turns

log = get_logger("runtime")

# An idle loop wakes this often, so it keeps turning for the liveness probe.
IDLE_TURN_S: Final = 0.5
# How long after the drain deadline the publisher, which gives up at that deadline, may take to end.
PUBLISH_GRACE_S: Final = 0.25
# A loop that has not turned for this long is hung: /livez fails and the orchestrator restarts the
# process. Far above one batch (seconds on a CPU) and the client's 30 s socket timeout.
LOOP_STALL_S: Final = 120.0


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def lane_limits(settings: Settings) -> dict[Lane, LaneLimits]:
    """Each lane's batching limits, from the operator's settings."""
    limits: dict[Lane, LaneLimits] = {}
    for lane in LANES:
        own = settings.lane(lane)
        limits[lane] = LaneLimits(BatchLimits(own.token_budget, own.max_batch_size), own.max_wait_ms,
                                  settings.bucket_window_ms)
    return limits


class WorkerRuntime:
    """One worker process's pipeline over the lanes in `settings.lanes` and models of `settings.kinds`."""

    def __init__(self, settings: Settings, *, name: str | None = None,
                 adapters: Mapping[Kind, KindAdapter] | None = None, client: redis.Redis | None = None,
                 monitor: Monitor | None = None) -> None:
        if client is None and not settings.redis_url:
            raise ConfigurationError("WorkerRuntime needs settings.redis_url (or a client)")
        self.settings = settings
        self.name = name or default_name()
        # Counts for `celery inspect stats`, and Celery task events while they are on (worker.events).
        self.monitor = monitor if monitor is not None else Monitor()
        self._adapters: dict[Kind, KindAdapter] = dict(adapters) if adapters is not None else {}
        self._client = client if client is not None else redis_client(str(settings.redis_url), settings)
        self._ingress = Ingress(self._client, self.name, settings)
        self._publisher = Publisher(self._client, settings)
        self._fetched: queue.Queue[Fetched] = queue.Queue(maxsize=4)
        self._outcomes: queue.Queue[Outcome | None] = queue.Queue()
        self._holdings = Holdings(settings)
        self._reach = Reachability()
        self._fetcher = Fetcher(self._ingress, self._publisher, settings, self._holdings, self._fetched, self._beat,
                                self._reach)
        self._publish_loop = PublishLoop(self._publisher, self._outcomes, settings, self._holdings, self._turn,
                                         self._fetcher.stop, IDLE_TURN_S, self._reach)
        self._turns = Turns(settings)
        self._scheduler: LaneScheduler[Job] = LaneScheduler.for_kinds(
            settings.kinds, lane_limits(settings), settings.batch_every
        )
        self._stop_prepare = threading.Event()
        self._stopped = threading.Event()
        self.crashed: str | None = None  # the thread that died, if one did
        self.drained = True
        self._ready = False
        self._threads: list[threading.Thread] = []
        self._turned: dict[str, float] = {}
        self._health: HealthServer | None = None
        self._stop_lock = threading.Lock()
        self._started_ms = 0.0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load and warm up the models, then start the threads; ready once Redis answers too."""
        self._started_ms = now_ms()
        self._start_health()
        if not self._adapters:
            self._adapters = load_adapters(self.settings)
        for kind, adapter in self._adapters.items():
            started = time.perf_counter()
            adapter.warmup()
            log.info("model.ready", kind=kind, model=adapter.model_id,
                     warmup_ms=round((time.perf_counter() - started) * 1000.0, 1))
        self._preparer = Preparer(self._adapters, self._publisher, self._put_outcome, self._queue_job,
                                  self._holdings.release)
        self._computer = BatchComputer(self._adapters)
        # Everything loaded so far (torch, models, tokenizers) lives as long as the process; frozen,
        # a full collection no longer walks it. Unfrozen, one such collection stalled every thread
        # for ~200 ms: realtime fraud p99 205-218 ms against 10-11 ms frozen (100 tasks/s).
        gc.freeze()
        self._spawn("inferq-publisher", self._publish_loop.loop)
        self._spawn("inferq-inference", self._inference_loop)
        self._spawn("inferq-preparer", self._prepare_loop)
        # Ready from here on (once the fetcher's first round trip succeeds), so its first heartbeat says so.
        self._ready = True
        self._spawn("inferq-fetcher", self._fetcher.loop)
        log.info("worker.started", worker=self.name, kinds=list(self._adapters), lanes=list(self.settings.lanes))

    def held(self) -> list[Delivery]:
        """The deliveries this worker fetched and has not answered yet (`celery inspect active`)."""
        return self._holdings.all()

    def stats(self) -> dict[str, object]:
        """What `celery inspect stats` reports under `inferq`."""
        return self.monitor.stats(self.settings.lanes, list(self._adapters), self.held(), self.ready)

    def _put_outcome(self, outcome: Outcome) -> None:
        self.monitor.outcome(outcome)
        self._outcomes.put(outcome)

    @property
    def ready(self) -> bool:
        """Models warm, Redis reachable and usable (`Reachability`), not stopping: what /readyz reports."""
        ready = self._ready and self._reach.ok and not self._fetcher.stop.is_set()
        metrics.READY.set(1 if ready else 0)
        return ready

    def alive(self) -> bool:
        """Every thread runs and its loop turned within LOOP_STALL_S (True while starting)."""
        if self._stopped.is_set() or self.crashed is not None:
            return False
        now = time.monotonic()
        self._turned["inferq-fetcher"] = self._fetcher.turned
        return all(t.is_alive() and now - self._turned.get(t.name, now) < LOOP_STALL_S for t in self._threads)

    def _turn(self) -> None:
        self._turned[threading.current_thread().name] = time.monotonic()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the runtime stopped; returns whether it did within `timeout_s`."""
        return self._stopped.wait(timeout_s)

    def stop(self, timeout_s: float | None = None) -> bool:
        """Graceful stop within `timeout_s` (default `drain_timeout_s`); returns whether it drained."""
        with self._stop_lock:
            if self._stopped.is_set():
                return self.drained
            deadline = time.monotonic() + (self.settings.drain_timeout_s if timeout_s is None else timeout_s)
            self.drained = self._drain(deadline)
            self._close()
            self._stopped.set()
            return self.drained

    def _drain(self, deadline: float) -> bool:
        """Stop fetching, finish the batch in hand, give back the rest, post; whether all of it
        happened by `deadline`. What did not stays pending for this consumer, and a peer takes it
        over after claim_idle_ms."""
        log.info("worker.stopping", worker=self.name)
        self._ready = False
        self._publish_loop.give_up_by(deadline)
        self._fetcher.stop.set()
        self._join("inferq-fetcher", deadline)
        self._stop_prepare.set()
        self._join("inferq-preparer", deadline)
        self._turns.stop()
        finished = self._join("inferq-inference", deadline)
        requeued = self._requeue_unstarted(deadline)
        self._outcomes.put(None)
        # The publisher gives up at the deadline itself; the grace lets it finish saying so.
        posted = self._join("inferq-publisher", deadline + PUBLISH_GRACE_S) and not self._publish_loop.abandoned
        drained = finished and requeued and posted
        (log.info if drained else log.error)(
            "worker.stopped", worker=self.name, drained=drained, finished=finished, requeued=requeued, posted=posted,
            abandoned=self._publish_loop.abandoned, held=len(self._holdings.all()))
        return drained

    def _requeue_unstarted(self, deadline: float) -> bool:
        """Give back what was fetched and not started, retrying until `deadline`; whether it was."""
        with self._turns.lock:
            unstarted = [job.delivery for job in self._scheduler.drain()]
        while True:
            try:
                unstarted.extend(self._fetched.get_nowait()[1])
            except queue.Empty:
                break
        if not unstarted:
            return True
        backoff = Backoff("requeue", log)
        while True:
            try:
                self._publisher.requeue(unstarted)
                break
            except redis.RedisError as exc:
                wait_s = min(backoff.failed(exc), deadline - time.monotonic())
                if wait_s <= 0:
                    # Still pending for this consumer: another worker claims them after claim_idle_ms.
                    log.error("requeue.given_up", count=len(unstarted), error=type(exc).__name__)
                    return False
                time.sleep(wait_s)
        metrics.REQUEUED.inc(len(unstarted))
        self._holdings.release(unstarted)
        log.info("worker.requeued", count=len(unstarted))
        return True

    def _close(self) -> None:
        with contextlib.suppress(redis.RedisError):  # the heartbeat expires on its own
            self._ingress.leave()
        if self._health is not None:
            self._health.close()
        self._client.close()

    def _start_health(self) -> None:
        port = self.settings.metrics_port
        if not port:
            return
        try:
            self._health = HealthServer(port, self.alive, lambda: self.ready)
        except OSError as exc:
            raise ConfigurationError(
                f"metrics port {port} is not free ({exc.strerror}); set INFERQ_METRICS_PORT, 0 disables"
            ) from exc
        self._health.start()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._guarded(name, target), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guarded(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException:
                # A dead thread stops the process (the Celery step exits non-zero): its supervisor
                # restarts it, and its tasks, still pending, are taken over by a peer.
                log.exception("thread.crashed", thread=name)
                self.crashed = name

        return run

    def _join(self, name: str, deadline: float) -> bool:
        for thread in self._threads:
            if thread.name == name:
                thread.join(max(0.0, deadline - time.monotonic()))
                return not thread.is_alive()
        return True

    def _beat(self) -> None:
        depths = self._ingress.beat(list(self._adapters), self.ready, self._started_ms)
        for lane, depth in depths.items():
            metrics.LANE_DEPTH.labels(lane).set(depth)

    # -- preparer -----------------------------------------------------------------------------

    def _prepare_loop(self) -> None:
        while not self._stop_prepare.is_set():
            self._turn()
            try:
                fetched_ms, deliveries = self._fetched.get(timeout=0.1)
            except queue.Empty:
                continue
            self.monitor.received(deliveries)
            with self._turns.preparing():
                self._preparer.prepare_all(deliveries, fetched_ms)

    def _queue_job(self, job: Job, fetched_ms: float, deadline_ms: float | None) -> None:
        key: QueueKey = (job.kind, job.delivery.lane)
        with self._turns.lock:
            # Queued as of its fetch, not of its preparation: a group fetched together stays inside
            # one bucket window however long preparing it took, and max_wait counts that time.
            queued_ms = self._scheduler.queues[key].arrival_ms(fetched_ms)
            self._scheduler.push(key, job, job.prepared.n_tokens, queued_ms, deadline_ms)
            self._turns.lock.notify_all()

    # -- inference ----------------------------------------------------------------------------

    def _inference_loop(self) -> None:
        while True:
            formed = self._turns.next_batch(self._scheduler, self._expire, self._turn)
            if formed is None:
                return
            self.monitor.batch_started(formed.batch)
            try:
                for answer in self._computer.run(formed.batch[0].kind, formed.key[1], formed.batch):
                    self._put_outcome(answer)
            finally:
                self._turns.end_compute()

    def _expire(self, job: Job) -> None:
        with bind_task(job.task_id, job.kind, job.delivery.lane):
            self._put_outcome(answer_expired(job.delivery, job.kind, job.stream))
