"""Preparing: a fetched delivery becomes a queued job or an outcome, never an exception.

In order: with signing on (`worker.signing`), every delivery of a fetched group is checked first (one
HMAC each, one round trip for the replay markers), and a refused one is answered `rejected` with its
code, or dead-lettered, and goes no further; a poisoned delivery is dead-lettered; one with a usable
id and a task name inferq does not run is answered `invalid` `unknown_task` (on its `reply_to`, else the
stream of the kind it looks like); one without a usable id is dead-lettered; an id
that already has its result is acked only; an undecodable request is answered `invalid`, a past
deadline `expired`; a valid request goes through its kind's adapter to the engine's prepared input
and waits for its batch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis

from contracts import ContractError, ErrorCode, TaskResultMessage, Timings, effective_deadline_ms, parse_request
from contracts.errors import DESCRIPTIONS, ROOT_FIELD, Problem
from contracts.results import ErrorInfo, TaskStatus
from contracts.wire import Kind
from engine.errors import InputError
from worker.adapters import KindAdapter, Prepared
from worker.entries import Delivery
from worker.logging import bind_task, get_logger
from worker.outcomes import AckOnly, Answer, DeadLetter, Outcome, Publisher
from worker.signing import SignatureGate

log = get_logger("preparing")


def now_ms() -> float:
    return time.time() * 1000.0


@dataclass
class Job:
    """A validated and prepared task waiting for its batch.

    It keeps the entry's raw fields (a graceful stop puts them back) and the engine's prepared input,
    not the decoded or validated request: for a 4,096-event history those are several MB of Python
    objects, and a worker holds up to three batches of jobs per lane.
    """

    delivery: Delivery
    kind: Kind
    tenant: str
    prepared: Prepared
    stream: str
    task_id: str
    explain: bool = False  # the request asked for the result's explanation (triage)


def unqueued(delivery: Delivery) -> Timings:
    """Timings of a task answered without reaching a batch."""
    waited = max(0.0, now_ms() - delivery.enqueued_ms)
    return Timings(queue_ms=waited, batch_size=0, compute_ms=0.0, total_ms=waited)


def answer_expired(delivery: Delivery, kind: Kind, stream: str) -> Answer:
    log.info("task.expired")
    message = TaskResultMessage.expired(
        str(delivery.task_id), kind, timings=unqueued(delivery), finished_at=int(now_ms())
    )
    return Answer(delivery, message, stream)


def _logged_field(error: ContractError) -> str | None:
    """The refused field's path, for the log: the contract's names and indices, never the producer's
    text (the path of an unknown field ends in the request's own key, which may be any part of it)."""
    return None if error.code is ErrorCode.UNKNOWN_FIELD else error.field[:200]


def _answer_invalid(delivery: Delivery, kind: Kind, stream: str, error: ContractError) -> Answer:
    log.info("task.invalid", code=error.code.value, field=_logged_field(error))
    message = TaskResultMessage.invalid(
        str(delivery.task_id), kind, error, timings=unqueued(delivery), finished_at=int(now_ms())
    )
    return Answer(delivery, message, stream)


def _answer_failed(delivery: Delivery, kind: Kind, stream: str, code: ErrorCode, text: str) -> Answer:
    log.warning("task.failed", code=code.value)
    message = TaskResultMessage.failed(
        str(delivery.task_id), kind, code, text, timings=unqueued(delivery), finished_at=int(now_ms())
    )
    return Answer(delivery, message, stream)


def refusal(delivery: Delivery, code: ErrorCode) -> Outcome:
    """The outcome of a delivery whose signature is refused; nothing of its request is used.

    Answered `rejected` with `code` where the entry names a task id and a kind. A replay is
    dead-lettered without an answer: its task id is that of the entry first accepted with the same
    signature, whose own result must not be pre-empted. The rest have nowhere to be answered.
    """
    log.warning("task.refused", code=code.value)
    text = DESCRIPTIONS[code]
    kind, stream, task_id = delivery.kind, delivery.result_stream, delivery.task_id
    if code is ErrorCode.REPLAYED or kind is None or stream is None or task_id is None:
        return DeadLetter(delivery, code, text, answer=False)
    message = TaskResultMessage.failure(
        task_id, kind, TaskStatus.REJECTED, ErrorInfo(code=code, message=text),
        timings=unqueued(delivery), finished_at=int(now_ms()),
    )
    return Answer(delivery, message, stream)


Emit = Callable[[Outcome], None]
Queue = Callable[[Job, float, float | None], None]  # job, fetched at (epoch ms), deadline (epoch ms)
Release = Callable[[Sequence[Delivery]], None]


class Preparer:
    """Turns fetched deliveries into jobs (handed to `queue`) or outcomes (handed to `emit`)."""

    def __init__(self, adapters: Mapping[Kind, KindAdapter], publisher: Publisher,
                 emit: Emit, queue: Queue, release: Release, signatures: SignatureGate | None = None) -> None:
        self._adapters = adapters
        self._publisher = publisher
        self._emit, self._queue, self._release = emit, queue, release
        # The publisher's gate unless given one: both read the worker's settings.
        self._signatures = signatures if signatures is not None else publisher.signatures

    def prepare_all(self, deliveries: Sequence[Delivery], fetched_ms: float) -> None:
        deliveries = self._signed(deliveries)
        answered = self._answered(deliveries)
        for delivery in deliveries:
            with bind_task(delivery.task_id or "", delivery.kind, delivery.lane):
                if delivery.task_id in answered:
                    log.info("task.duplicate")
                    self._emit(AckOnly(delivery))
                else:
                    self._prepare_one(delivery, fetched_ms)

    def _signed(self, deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
        """The deliveries whose signatures are accepted; the others' refusals are emitted here."""
        gate = self._signatures
        if gate is None or not deliveries:
            return deliveries
        try:
            codes = gate.check(deliveries)
        except redis.RedisError as exc:
            # Replays cannot be told apart now: all stay pending, to be claimed and checked again
            # after claim_idle_ms (the fetcher and the publisher ride out the same outage).
            log.warning("signatures.redis_error", error=type(exc).__name__, count=len(deliveries))
            self._release(deliveries)
            return []
        accepted: list[Delivery] = []
        for delivery, code in zip(deliveries, codes, strict=True):
            if code is None:
                accepted.append(delivery)
                continue
            with bind_task(delivery.task_id or "", delivery.kind, delivery.lane):
                self._emit(refusal(delivery, code))
        return accepted

    def _answered(self, deliveries: Sequence[Delivery]) -> set[str]:
        try:
            return self._publisher.already_answered(d.task_id for d in deliveries if d.task_id and not d.poisoned)
        except redis.RedisError:
            return set()  # publishing still refuses a second result for the same id

    def _prepare_one(self, delivery: Delivery, fetched_ms: float) -> None:
        if delivery.poisoned:
            text = f"delivered {delivery.deliveries} times, more than max_deliveries"
            self._emit(DeadLetter(delivery, ErrorCode.TOO_MANY_DELIVERIES, text))
            return
        kind, stream, task_id = delivery.kind, delivery.result_stream, delivery.task_id
        unknown_kind, unknown_stream = delivery.unknown_task_kind, delivery.unknown_task_stream
        if unknown_kind is not None and unknown_stream is not None:
            # A task name inferq does not run, with a usable id: answered where its producer listens.
            error = ContractError([Problem(ErrorCode.UNKNOWN_TASK, "task", delivery.decode_error or "unknown task")])
            self._emit(_answer_invalid(delivery, unknown_kind, unknown_stream, error))
            return
        if kind is None or stream is None or task_id is None:
            code = delivery.decode_code or ErrorCode.UNKNOWN_TASK
            self._emit(DeadLetter(delivery, code, delivery.decode_error or "no task id or kind"))
            return
        if delivery.decode_error is not None:
            code = delivery.decode_code or ErrorCode.MALFORMED
            error = ContractError([Problem(code, ROOT_FIELD, delivery.decode_error)])
            self._emit(_answer_invalid(delivery, kind, stream, error))
            return
        if kind not in self._adapters:
            # Left pending, not answered: a worker that serves this kind claims it after
            # claim_idle_ms, and the delivery count dead-letters it if none ever does.
            log.warning("task.kind_not_served")
            self._release([delivery])
            return
        self._validate_and_queue(delivery, kind, stream, task_id, fetched_ms)

    def _validate_and_queue(self, delivery: Delivery, kind: Kind, stream: str, task_id: str,
                            fetched_ms: float) -> None:
        try:
            request = parse_request(kind, delivery.request or {})
        except ContractError as error:
            self._emit(_answer_invalid(delivery, kind, stream, error))
            return
        deadline = effective_deadline_ms(request, delivery.enqueued_ms)
        if deadline is not None and deadline <= now_ms():
            self._emit(answer_expired(delivery, kind, stream))
            return
        try:
            prepared = self._adapters[kind].prepare(request)
        except InputError as exc:
            self._emit(_answer_failed(delivery, kind, stream, ErrorCode.MODEL_ERROR, f"model refused the input: {exc}"))
            return
        except Exception as exc:
            # One input that breaks preparation must not take the worker (and then its peers) down.
            log.error("task.prepare_crashed", error=type(exc).__name__)  # no message: it may quote the input
            self._emit(_answer_failed(delivery, kind, stream, ErrorCode.INTERNAL_ERROR, "preparing the input failed"))
            return
        job = Job(dataclasses.replace(delivery, request=None), kind, request.tenant, prepared, stream, task_id,
                  explain=bool(getattr(request, "explain", False)))
        self._queue(job, fetched_ms,
                    float(deadline) if deadline is not None else None)
