"""The worker's pipeline: fetch -> prepare -> batch and compute -> publish, four threads.

Owners are joined by bounded hand-offs (the habit of text-embeddings-inference's queue/infer):
the fetcher takes entries off Redis (one XREADGROUP for many, stale ones by XAUTOCLAIM); the
preparer validates and tokenizes them, so the next batch is ready when the current one ends;
ONE inference thread per device forms batches from the lane queues and runs the model; the
publisher posts each result and acks its entry in one atomic script. Nothing is acked before
its result is written. Preparing and the forward pass take turns rather than overlap (see
`_take_prepare_turn`): a fetched group is prepared whole between two batches, while fetching and
publishing go on. A graceful stop (SIGTERM) stops fetching, finishes the batch in hand, posts,
acks and gives back what was fetched but not started.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import redis
from redis.typing import EncodableT, FieldT

from contracts import (
    ContractError,
    ErrorCode,
    Kind,
    TaskResultMessage,
    Timings,
    effective_deadline_ms,
    parse_request,
)
from contracts.errors import ROOT_FIELD, Problem
from contracts.requests import Request
from engine.errors import InputError
from worker import metrics
from worker.batcher import LaneKey, LaneScheduler
from worker.config import Settings
from worker.constants import CONSUMER_GROUP, LANES, Lane, queue_stream, worker_key
from worker.errors import ConfigurationError
from worker.health import HealthServer
from worker.logging import bind_batch, bind_task, get_logger
from worker.models import KindModel, Prepared, load_models
from worker.streams import Delivery, Ingress, Publisher, connect

log = get_logger("runtime")

# XREADGROUP blocks at most this long, so a stop request is noticed within it; a task that
# arrives meanwhile ends the wait at once, so it costs no latency.
FETCH_BLOCK_MS: Final = 200
# Heartbeat hash refresh period and lifetime: a worker missing three beats has gone.
HEARTBEAT_S: Final = 5.0
HEARTBEAT_TTL_S: Final = 15
# Results posted per round trip; each stays atomic on its own inside the pipeline.
PUBLISH_CHUNK: Final = 256
# Back-off after a Redis error in a loop, so an outage does not spin the CPU.
REDIS_RETRY_S: Final = 0.5
# An idle publisher wakes this often, so its loop keeps turning for the liveness probe.
IDLE_TURN_S: Final = 0.5
# A pipeline loop that has not turned for this long is hung: /livez fails and the orchestrator
# restarts the process. Far above one batch (seconds on a CPU at the default token budgets) and
# above the client's 30 s socket timeout, so only a real hang trips it.
LOOP_STALL_S: Final = 120.0


def now_ms() -> float:
    return time.time() * 1000.0


@dataclass
class Job:
    """A decoded, validated and prepared task waiting for its batch."""

    delivery: Delivery
    kind: Kind
    request: Request
    prepared: Prepared
    stream: str
    task_id: str


@dataclass(frozen=True)
class Answer:
    """A result to post; the entry is acked in the same script."""

    delivery: Delivery
    message: TaskResultMessage
    stream: str


@dataclass(frozen=True)
class AckOnly:
    """A delivery of a task id that already has its result."""

    delivery: Delivery


@dataclass(frozen=True)
class DeadLetter:
    """A task that cannot be answered normally: to the dead-letter stream with its error."""

    delivery: Delivery
    code: ErrorCode
    message: str


Outcome = Answer | AckOnly | DeadLetter


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def prepare_overlaps(settings: Settings) -> bool:
    """Whether preparing runs during the forward pass: `auto` overlaps only where a GPU computes."""
    if settings.prepare_overlap != "auto":
        return settings.prepare_overlap == "always"
    from engine.device import pick_device

    return pick_device(settings.device).type == "cuda"


class WorkerRuntime:
    """One worker process's pipeline over the lanes in `settings.lanes` and models of `settings.kinds`."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        models: Mapping[str, KindModel] | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        if client is None and not settings.redis_url:
            raise ConfigurationError("WorkerRuntime needs settings.redis_url (or a client)")
        self.settings = settings
        self.name = name or default_name()
        self._models: dict[str, KindModel] = dict(models) if models is not None else {}
        self._client = client if client is not None else connect(str(settings.redis_url))
        self._ingress = Ingress(self._client, self.name, settings)
        self._publisher = Publisher(self._client, settings)
        self._scheduler: LaneScheduler[Job] = LaneScheduler.from_settings(settings, self._models or settings.kinds)
        self._wake = threading.Condition()
        # Turn-taking between the preparer and the forward pass, both guarded by `_wake`; off when
        # preparation may overlap the forward pass (a GPU computes while Python prepares).
        self._overlap = prepare_overlaps(settings)
        self._prepare_waiting = False
        self._preparing = False
        self._computing = False
        self._fetched: queue.Queue[tuple[float, list[Delivery]]] = queue.Queue(maxsize=4)
        self._outcomes: queue.Queue[Outcome | None] = queue.Queue()
        self._holding: dict[str, dict[str, Delivery]] = {lane: {} for lane in LANES}
        self._room = threading.Condition()
        self._stop_fetch = threading.Event()
        self._stop_prepare = threading.Event()
        self._stop_compute = threading.Event()
        self._stopped = threading.Event()
        self._ready = False
        self._threads: list[threading.Thread] = []
        self._health: HealthServer | None = None
        self._stop_lock = threading.Lock()
        self._started_ms = 0.0
        self._turned: dict[str, float] = {}

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load and warm up the models, then start the pipeline; ready once all of that is done."""
        self._started_ms = now_ms()
        self._start_health()
        if not self._models:
            self._models = load_models(self.settings)
        for kind, model in self._models.items():
            started = time.perf_counter()
            model.warmup()
            log.info("model.ready", kind=kind, model=model.model_id, warmup_ms=_ms_since(started))
        self._ingress.ensure_groups(self.settings.lanes)
        # Everything loaded so far (torch, models, tokenizers) lives as long as the process; frozen,
        # a full collection no longer walks it. Unfrozen, one such collection stalled every
        # thread for ~200 ms: realtime fraud p99 205-218 ms against 10-11 ms frozen (100 tasks/s).
        gc.freeze()
        self._spawn("inferq-publisher", self._publish_loop)
        self._spawn("inferq-inference", self._inference_loop)
        self._spawn("inferq-preparer", self._prepare_loop)
        self._spawn("inferq-fetcher", self._fetch_loop)
        self._ready = True
        metrics.READY.set(1)
        self._beat()
        log.info("worker.ready", worker=self.name, kinds=list(self._models), lanes=list(self.settings.lanes))

    @property
    def ready(self) -> bool:
        return self._ready and not self._stop_fetch.is_set()

    def alive(self) -> bool:
        """Every pipeline thread runs and its loop turned within LOOP_STALL_S (True while starting)."""
        if self._stopped.is_set():
            return False
        now = time.monotonic()
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
                return True
            deadline = time.monotonic() + (self.settings.drain_timeout_s if timeout_s is None else timeout_s)
            drained = self._drain(deadline)
            self._close()
            self._stopped.set()
            return drained

    def _drain(self, deadline: float) -> bool:
        log.info("worker.stopping", worker=self.name)
        self._ready = False
        metrics.READY.set(0)
        self._stop_fetch.set()
        self._join("inferq-fetcher", deadline)
        self._stop_prepare.set()
        self._join("inferq-preparer", deadline)
        with self._wake:
            self._stop_compute.set()
            self._wake.notify_all()
        finished = self._join("inferq-inference", deadline)
        self._requeue_unstarted()
        self._outcomes.put(None)
        posted = self._join("inferq-publisher", deadline)
        log.info("worker.stopped", worker=self.name, drained=finished and posted)
        return finished and posted

    def _requeue_unstarted(self) -> None:
        with self._wake:
            unstarted = [job.delivery for job in self._scheduler.drain()]
        while True:
            try:
                unstarted.extend(self._fetched.get_nowait()[1])
            except queue.Empty:
                break
        if not unstarted:
            return
        try:
            self._publisher.requeue(unstarted)
        except redis.RedisError as exc:
            # Still pending for this consumer: another worker claims them after claim_idle_ms.
            log.warning("requeue.failed", count=len(unstarted), error=type(exc).__name__)
            return
        metrics.REQUEUED.inc(len(unstarted))
        self._release(unstarted)
        log.info("worker.requeued", count=len(unstarted))

    def _close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._client.delete(worker_key(self.name))
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
            except Exception:
                # A dead pipeline thread fails /livez, so the orchestrator restarts the process;
                # its tasks stay pending and are claimed by another worker.
                log.exception("thread.crashed", thread=name)

        return run

    def _join(self, name: str, deadline: float) -> bool:
        for thread in self._threads:
            if thread.name == name:
                thread.join(max(0.0, deadline - time.monotonic()))
                return not thread.is_alive()
        return True

    # -- fetcher ------------------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        claim_every_s = self.settings.claim_idle_ms / 3000.0
        next_claim = time.monotonic()
        next_beat = time.monotonic() + HEARTBEAT_S
        while not self._stop_fetch.is_set():
            self._turn()
            try:
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + claim_every_s
                    self._touch_held()
                    self._route(self._ingress.claim_stale(self.settings.fetch_count, self.settings.lanes), True)
                self._fetch_once()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_S
                    self._beat()
            except redis.RedisError as exc:
                log.warning("fetch.redis_error", error=type(exc).__name__)
                self._stop_fetch.wait(REDIS_RETRY_S)

    def _touch_held(self) -> None:
        """Restart the idle clock of every task held here, so no peer takes over live work."""
        with self._room:
            held = [d for lane in self._holding.values() for d in lane.values()]
        if held:
            self._ingress.touch(held)

    def _fetch_once(self) -> None:
        lanes, count = self._room_to_fetch()
        if not lanes:
            with self._room:
                self._room.wait(FETCH_BLOCK_MS / 1000.0)
            return
        self._route(self._ingress.fetch(lanes, count, FETCH_BLOCK_MS), False)

    def held_limit(self, lane: str) -> int:
        """Tasks of one lane this worker may hold unanswered: three full batches.

        Why three: one batch runs, the next waits prepared, and a third is being fetched and
        prepared while results of the first are posted (with two, batches came out ~10% smaller
        under a saturating fraud backlog); more would only hoard work that idle workers could do
        now, and that a crash would delay by claim_idle_ms.
        """
        return 3 * self.settings.lane(lane).max_batch_size

    def _room_to_fetch(self) -> tuple[list[str], int]:
        with self._room:
            room: dict[str, int] = {
                lane: self.held_limit(lane) - len(self._holding[lane]) for lane in self.settings.lanes
            }
        lanes: list[str] = [lane for lane in LANES if room.get(lane, 0) > 0]
        count = min([self.settings.fetch_count, *(room[lane] for lane in lanes)])
        return lanes, count

    def _route(self, deliveries: list[Delivery], claimed: bool) -> None:
        if not deliveries:
            return
        with self._room:
            for delivery in deliveries:
                self._holding[delivery.lane][delivery.entry_id] = delivery
            self._count_held()
        if claimed:
            metrics.CLAIMED.inc(len(deliveries))
        fresh = []
        for delivery in deliveries:
            if delivery.deliveries > self.settings.max_deliveries:
                message = f"delivered {delivery.deliveries} times, more than max_deliveries"
                self._outcomes.put(DeadLetter(delivery, ErrorCode.TOO_MANY_DELIVERIES, message))
            else:
                fresh.append(delivery)
        self._hand_over(fresh)

    def _hand_over(self, deliveries: list[Delivery]) -> None:
        fetched_ms = now_ms()
        while deliveries and not self._stop_fetch.is_set():
            try:
                self._fetched.put((fetched_ms, deliveries), timeout=0.1)
                return
            except queue.Full:
                continue
        if deliveries:
            # Stopping: these never started, so they go straight back for another worker.
            self._publisher.requeue(deliveries)
            metrics.REQUEUED.inc(len(deliveries))
            self._release(deliveries)

    def _beat(self) -> None:
        pipe = self._client.pipeline(transaction=False)
        key = worker_key(self.name)
        pipe.hset(key, mapping=self._beat_fields())
        pipe.expire(key, HEARTBEAT_TTL_S)
        for lane in LANES:
            pipe.xlen(queue_stream(lane))
        replies = pipe.execute()
        for lane, depth in zip(LANES, replies[2:], strict=True):
            metrics.LANE_DEPTH.labels(lane).set(depth)

    def _beat_fields(self) -> dict[FieldT, EncodableT]:
        return {
            "pid": str(os.getpid()),
            "host": socket.gethostname(),
            "kinds": ",".join(self._models),
            "lanes": ",".join(self.settings.lanes),
            "ready": "1" if self.ready else "0",
            "started_ms": str(int(self._started_ms)),
            "beat_ms": str(int(now_ms())),
        }

    # -- preparer -----------------------------------------------------------------------------

    def _prepare_loop(self) -> None:
        while not self._stop_prepare.is_set():
            self._turn()
            try:
                fetched_ms, deliveries = self._fetched.get(timeout=0.1)
            except queue.Empty:
                continue
            self._take_prepare_turn()
            try:
                self._prepare_all(deliveries, fetched_ms)
            finally:
                self._end_prepare_turn()

    def _take_prepare_turn(self) -> None:
        """Wait for the forward pass in progress to end; the next batch then waits for this group.

        Why turns: preparing is Python work that holds the GIL, and the forward pass of a small
        model is many short torch calls that each need it back. Run side by side in one process
        they convoyed: a 16 x 128-event fraud forward took 24 ms alone and 54 ms next to the
        preparer, and the worker's throughput fell below running the two one after the other.
        Preparing a whole fetched group before the next batch also gives the batcher the group
        to bucket by length, as one fetch does in the engine-only benchmark.
        """
        if self._overlap:
            return
        with self._wake:
            self._prepare_waiting = True
            while self._computing:
                self._wake.wait(0.1)
            self._prepare_waiting = False
            self._preparing = True

    def _end_prepare_turn(self) -> None:
        if self._overlap:
            return
        with self._wake:
            self._preparing = False
            self._wake.notify_all()

    def _end_compute_turn(self) -> None:
        with self._wake:
            self._computing = False
            self._wake.notify_all()

    def _prepare_all(self, deliveries: list[Delivery], fetched_ms: float) -> None:
        try:
            answered = self._publisher.already_answered(d.task_id for d in deliveries if d.task_id)
        except redis.RedisError:
            answered = set()  # publishing still refuses a second result for the same id
        for delivery in deliveries:
            with bind_task(delivery.task_id or "", delivery.kind, delivery.lane):
                if delivery.task_id in answered:
                    log.info("task.duplicate")
                    self._outcomes.put(AckOnly(delivery))
                    continue
                self._prepare_one(delivery, fetched_ms)

    def _prepare_one(self, delivery: Delivery, fetched_ms: float) -> None:
        kind, stream, task_id = delivery.kind, delivery.result_stream, delivery.task_id
        if kind is None or stream is None or task_id is None:
            code = delivery.decode_code or ErrorCode.UNKNOWN_TASK
            self._outcomes.put(DeadLetter(delivery, code, delivery.decode_error or "no task id or kind"))
            return
        if delivery.decode_error is not None:
            code = delivery.decode_code or ErrorCode.MALFORMED
            error = ContractError([Problem(code, ROOT_FIELD, delivery.decode_error)])
            self._answer_invalid(delivery, kind, stream, error)
            return
        if kind not in self._models:
            # Left pending, not answered: a worker that serves this kind claims it after
            # claim_idle_ms, and the delivery count dead-letters it if none ever does.
            log.warning("task.kind_not_served")
            self._release([delivery])
            return
        self._validate_and_queue(delivery, kind, stream, task_id, fetched_ms)

    def _validate_and_queue(self, delivery: Delivery, kind: Kind, stream: str, task_id: str, fetched_ms: float) -> None:
        try:
            request = parse_request(kind, delivery.request or {})
        except ContractError as error:
            self._answer_invalid(delivery, kind, stream, error)
            return
        deadline = effective_deadline_ms(request, delivery.enqueued_ms)
        if deadline is not None and deadline <= now_ms():
            self._answer_expired(delivery, kind, stream)
            return
        try:
            prepared = self._models[kind].prepare(request)
        except InputError as exc:
            self._answer_failed(delivery, kind, stream, ErrorCode.MODEL_ERROR, f"model refused the input: {exc}")
            return
        except Exception as exc:
            # One input that breaks preparation must not take the worker (and then its peers) down.
            log.error("task.prepare_crashed", error=type(exc).__name__)  # no message: it may quote the input
            self._answer_failed(delivery, kind, stream, ErrorCode.INTERNAL_ERROR, "preparing the input failed")
            return
        job = Job(delivery, kind, request, prepared, stream, task_id)
        key: LaneKey = (kind, _lane(delivery))
        with self._wake:
            # Queued as of its fetch, not of its preparation: a group fetched together stays inside
            # one bucket window however long preparing it took, and max_wait counts that time.
            queued_ms = self._scheduler.queues[key].arrival_ms(fetched_ms)
            self._scheduler.push(key, job, prepared.n_tokens, queued_ms, deadline)

    def _answer_invalid(self, delivery: Delivery, kind: Kind, stream: str, error: ContractError) -> None:
        log.info("task.invalid", code=error.code.value, field=error.field)
        message = TaskResultMessage.invalid(
            str(delivery.task_id), kind, error, timings=_unqueued(delivery), finished_at=int(now_ms())
        )
        self._outcomes.put(Answer(delivery, message, stream))

    def _answer_expired(self, delivery: Delivery, kind: Kind, stream: str) -> None:
        log.info("task.expired")
        message = TaskResultMessage.expired(
            str(delivery.task_id), kind, timings=_unqueued(delivery), finished_at=int(now_ms())
        )
        self._outcomes.put(Answer(delivery, message, stream))

    def _answer_failed(self, delivery: Delivery, kind: Kind, stream: str, code: ErrorCode, text: str) -> None:
        log.warning("task.failed", code=code.value)
        message = TaskResultMessage.failed(
            str(delivery.task_id), kind, code, text, timings=_unqueued(delivery), finished_at=int(now_ms())
        )
        self._outcomes.put(Answer(delivery, message, stream))

    # -- inference ----------------------------------------------------------------------------

    def _inference_loop(self) -> None:
        while True:
            formed = self._next_batch()
            if formed is None:
                return
            key, jobs = formed
            try:
                self._run_batch(key, jobs)
            finally:
                self._end_compute_turn()

    def _next_batch(self) -> tuple[LaneKey, list[Job]] | None:
        """Wait for the scheduler to release a batch; None once the runtime is stopping."""
        with self._wake:
            while not self._stop_compute.is_set():
                self._turn()
                if self._prepare_waiting or self._preparing:
                    self._wake.wait(0.1)
                    continue
                now = now_ms()
                for job in self._scheduler.pop_expired(now):
                    self._expire_queued(job)
                formed = self._scheduler.next_batch(now)
                if formed is not None and formed.key is not None and formed.batch:
                    self._computing = True
                    return formed.key, formed.batch
                due = self._scheduler.next_due_ms()
                self._wake.wait(0.1 if due is None else min(0.1, max(0.0, (due - now) / 1000.0)))
        return None

    def _expire_queued(self, job: Job) -> None:
        with bind_task(job.task_id, job.kind, job.delivery.lane):
            self._answer_expired(job.delivery, job.kind, job.stream)

    def _run_batch(self, key: LaneKey, jobs: list[Job]) -> None:
        kind, lane = key
        model = self._models[kind]
        batch_id = uuid.uuid4().hex[:12]
        with bind_batch(batch_id, kind, lane, len(jobs)):
            started_ms = now_ms()
            started = time.perf_counter()
            outputs = self._compute(model, jobs)
            compute_ms = _ms_since(started)
            log.debug("batch.done", compute_ms=round(compute_ms, 3))
        self._observe_batch(kind, lane, jobs, started_ms, compute_ms)
        for job, output in zip(jobs, outputs, strict=True):
            self._answer_computed(model, job, output, started_ms, compute_ms, len(jobs))

    def _compute(self, model: KindModel, jobs: Sequence[Job]) -> list[Any]:
        """One output per job: the prediction, or the exception a job alone still raised.

        A batch that raises is split in halves and each half retried, down to single items, so
        one poisonous input fails only itself.
        """
        try:
            return model.run([job.prepared for job in jobs])
        except Exception as exc:
            if len(jobs) == 1:
                log.warning("task.model_error", task_id=jobs[0].task_id, error=type(exc).__name__)
                return [exc]
            metrics.BATCH_SPLITS.labels(model.kind).inc()
            log.warning("batch.split", size=len(jobs), error=type(exc).__name__)
            half = len(jobs) // 2
            return self._compute(model, jobs[:half]) + self._compute(model, jobs[half:])

    def _answer_computed(
        self, model: KindModel, job: Job, output: Any, started_ms: float, compute_ms: float, size: int
    ) -> None:
        finished = now_ms()
        timings = Timings(
            queue_ms=max(0.0, started_ms - job.delivery.enqueued_ms),
            batch_size=size,
            compute_ms=compute_ms,
            total_ms=max(0.0, finished - job.delivery.enqueued_ms),
        )
        message = self._message(model, job, output, timings, int(finished))
        self._outcomes.put(Answer(job.delivery, message, job.stream))

    def _message(self, model: KindModel, job: Job, output: Any, timings: Timings, finished: int) -> TaskResultMessage:
        if isinstance(output, BaseException):
            return TaskResultMessage.failed(
                job.task_id,
                job.kind,
                ErrorCode.MODEL_ERROR,
                f"the model raised {type(output).__name__}",
                timings=timings,
                finished_at=finished,
                model=model.model_id,
            )
        try:
            result = model.to_result(output)
        except ValueError as exc:
            log.error("task.bad_output", task_id=job.task_id, error=type(exc).__name__)
            return TaskResultMessage.failed(
                job.task_id,
                job.kind,
                ErrorCode.INTERNAL_ERROR,
                "the model's output broke the result contract",
                timings=timings,
                finished_at=finished,
                model=model.model_id,
            )
        return TaskResultMessage.ok(job.task_id, result, model=model.model_id, timings=timings, finished_at=finished)

    @staticmethod
    def _observe_batch(kind: str, lane: str, jobs: Sequence[Job], started_ms: float, compute_ms: float) -> None:
        metrics.BATCH_SIZE.labels(kind, lane).observe(len(jobs))
        longest = max(job.prepared.n_tokens for job in jobs)
        metrics.BATCH_TOKENS.labels(kind, lane).observe(longest * len(jobs))
        metrics.COMPUTE.labels(kind, lane).observe(compute_ms / 1000.0)
        for job in jobs:
            metrics.QUEUE_WAIT.labels(kind, lane).observe(max(0.0, started_ms - job.delivery.enqueued_ms) / 1000.0)

    # -- publisher ----------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        closing = False
        while not closing:
            self._turn()
            chunk, closing = self._next_outcomes()
            if chunk:
                self._publish_chunk(chunk)

    def _next_outcomes(self) -> tuple[list[Outcome], bool]:
        """Up to PUBLISH_CHUNK outcomes (waiting for the first); True once the stop marker came."""
        try:
            first = self._outcomes.get(timeout=IDLE_TURN_S)
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        chunk: list[Outcome] = [first]
        while len(chunk) < PUBLISH_CHUNK:
            try:
                item = self._outcomes.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return chunk, True
            chunk.append(item)
        return chunk, False

    def _publish_chunk(self, chunk: list[Outcome]) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while True:
            try:
                self._write(chunk)
                return
            except redis.RedisError as exc:
                # Not acked, so nothing is lost: the entries stay pending and are claimed later.
                log.warning("publish.redis_error", count=len(chunk), error=type(exc).__name__)
                if self._stop_compute.is_set() and time.monotonic() > deadline:
                    return
                time.sleep(REDIS_RETRY_S)

    def _write(self, chunk: list[Outcome]) -> None:
        answers = [o for o in chunk if isinstance(o, Answer)]
        posted = self._publisher.publish_many([(a.delivery, a.message, a.stream) for a in answers])
        for answer, new in zip(answers, posted, strict=True):
            self._count_answer(answer, new)
        self._ack_only([o.delivery for o in chunk if isinstance(o, AckOnly)])
        for letter in (o for o in chunk if isinstance(o, DeadLetter)):
            self._deadletter(letter)
        self._release([o.delivery for o in chunk])

    def _count_answer(self, answer: Answer, new: bool) -> None:
        if not new:
            metrics.DUPLICATES.inc()
            return
        status = answer.message.status.value
        metrics.TASKS.labels(answer.message.kind, status).inc()
        metrics.TOTAL.labels(answer.message.kind, status).observe(answer.message.timings.total_ms / 1000.0)

    def _ack_only(self, deliveries: list[Delivery]) -> None:
        """Ack and delete entries of task ids that already have their result."""
        if not deliveries:
            return
        pipe = self._client.pipeline(transaction=False)
        for delivery in deliveries:
            pipe.xack(queue_stream(delivery.lane), CONSUMER_GROUP, delivery.entry_id)
            pipe.xdel(queue_stream(delivery.lane), delivery.entry_id)
        pipe.execute()
        metrics.DUPLICATES.inc(len(deliveries))

    def _deadletter(self, letter: DeadLetter) -> None:
        with bind_task(letter.delivery.task_id or "", letter.delivery.kind, letter.delivery.lane):
            log.warning("task.deadlettered", code=letter.code.value, deliveries=letter.delivery.deliveries)
        self._publisher.deadletter(letter.delivery, letter.code, letter.message)
        metrics.DEADLETTERED.labels(letter.code.value).inc()

    def _release(self, deliveries: Sequence[Delivery]) -> None:
        with self._room:
            for delivery in deliveries:
                self._holding[delivery.lane].pop(delivery.entry_id, None)
            self._count_held()
            self._room.notify_all()

    def _count_held(self) -> None:
        for lane, held in self._holding.items():
            metrics.HELD.labels(lane).set(len(held))


def _lane(delivery: Delivery) -> Lane:
    """The lane a task came from (and is batched in)."""
    return cast(Lane, delivery.lane)


def _unqueued(delivery: Delivery) -> Timings:
    """Timings of a task answered without reaching a batch."""
    waited = max(0.0, now_ms() - delivery.enqueued_ms)
    return Timings(queue_ms=waited, batch_size=0, compute_ms=0.0, total_ms=waited)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
