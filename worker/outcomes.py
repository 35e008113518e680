"""Outcomes: how each delivery ends, written in one atomic script per delivery.

Every delivery ends in exactly one of three ways, and each is one call of `worker.keys.Scripts.finish`:
an `Answer` (a result of any status, posted once per task id under the exactly-once marker), an
`AckOnly` (the task id already has its result), or a `DeadLetter` (moved to `inferq:deadletter` with
its raw bytes and reason, and answered `failed` where it has an id and a result stream). The ack and
the delete of the lane entry are in the same script, so no outcome can be half-written by a crash.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from contracts import ErrorCode, TaskResultMessage, TaskStatus, Timings
from contracts.wire import DEADLETTER_STREAM, RESULTS_PREFIX
from worker.config import Settings
from worker.entries import Delivery, raw_json
from worker.keys import (
    DEADLETTER_NOT_A_STREAM,
    FIELD_ORIGIN,
    FIELD_PRIOR_DELIVERIES,
    NOT_A_STREAM,
    POSTED_NOT_METERED,
    Scripts,
    UsageCall,
    done_key,
    replay_key,
)
from worker.logging import bind_task, get_logger
from worker.signing import SignatureGate, replay_marker
from worker.usage import FIELD_SEP, Usage, day_of, usage_prefix

log = get_logger("outcomes")


@dataclass(frozen=True)
class Answer:
    """A result to post; the entry is acked in the same script.

    `usage` (tasks that reached the model) is metered in the same script, when the result is posted:
    an inference if the status is `ok`, and its compute time whatever the status (`worker.usage`).
    """

    delivery: Delivery
    message: TaskResultMessage
    stream: str
    usage: Usage | None = None


@dataclass(frozen=True)
class AckOnly:
    """A delivery of a task id that already has its result."""

    delivery: Delivery


@dataclass(frozen=True)
class DeadLetter:
    """A task that cannot be answered normally: to the dead-letter stream with its error.

    It is also answered `failed` on its result stream where it has an id and a kind, unless
    `answer` is False (its result stream cannot take a result).
    """

    delivery: Delivery
    code: ErrorCode
    message: str
    answer: bool = True


Outcome = Answer | AckOnly | DeadLetter


def _checked_stream(stream: str) -> str:
    if not stream.startswith(RESULTS_PREFIX):
        raise ValueError(f"result stream {stream!r} lies outside {RESULTS_PREFIX}")
    return stream


def failed_message(delivery: Delivery, code: ErrorCode, text: str) -> TaskResultMessage | None:
    """The `failed` result that answers a dead-lettered task; None without an id or a kind."""
    kind = delivery.kind
    if delivery.task_id is None or kind is None:
        return None
    now_ms = int(time.time() * 1000)
    waited_ms = float(max(0, now_ms - delivery.enqueued_ms))
    return TaskResultMessage.failed(
        delivery.task_id, kind, code, text,
        timings=Timings(queue_ms=waited_ms, batch_size=0, compute_ms=0.0, total_ms=waited_ms), finished_at=now_ms,
    )


def deadletter_fields(letter: DeadLetter) -> list[str]:
    """Field/value pairs of a dead-letter entry: who, why, and the raw entry, losslessly."""
    delivery = letter.delivery
    fields = {
        "task_id": delivery.task_id or "",
        "task": delivery.task_name or "",
        "lane": delivery.lane,
        "entry_id": delivery.entry_id,
        "deliveries": str(delivery.deliveries),
        "error_code": letter.code.value,
        "error_message": letter.message,
        "raw": raw_json(delivery.raw),
        "failed_ms": str(int(time.time() * 1000)),
    }
    return [part for pair in fields.items() for part in pair]


def _requeue_fields(delivery: Delivery) -> dict[bytes, bytes]:
    origin, prior = FIELD_ORIGIN.encode(), FIELD_PRIOR_DELIVERIES.encode()
    fields = {name: value for name, value in delivery.raw.items() if name not in (origin, prior)}
    fields[origin] = delivery.raw.get(origin, delivery.entry_id.encode())
    # This delivery never started, so it does not count towards the dead-letter rule.
    fields[prior] = str(max(0, delivery.deliveries - 1)).encode()
    return fields


def _flat(fields: dict[bytes, bytes]) -> list[bytes]:
    return [part for pair in fields.items() for part in pair]


class Publisher:
    """Writes outcomes: each delivery's result, marker, dead letter, ack and delete in one script."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._scripts = Scripts(client)
        # Signed entries (None: signing off): the preparer checks fetched entries with it, and `requeue`
        # re-signs the copies it puts back.
        self.signatures = SignatureGate.from_settings(client, settings)

    def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Write `outcomes` in one round trip, each atomic on its own; whether each posted a new result.

        An outcome whose result stream is a key of another type (nothing was written for it) is
        dead-lettered instead, without a result, in a second round trip: retrying could never post it.
        """
        if not outcomes:
            return []
        replies = [int(reply) for reply in self._execute(outcomes)]
        unpostable = [index for index, reply in enumerate(replies) if reply == NOT_A_STREAM]
        if unpostable:
            letters = [_unpostable(outcomes[index]) for index in unpostable]
            for index, reply in zip(unpostable, self._execute(letters), strict=True):
                replies[index] = int(reply)
        broken = sum(reply == DEADLETTER_NOT_A_STREAM for reply in replies)
        if broken:
            log.error("deadletter.not_a_stream", key=DEADLETTER_STREAM, left_pending=broken)
        unmetered = sum(reply == POSTED_NOT_METERED for reply in replies)
        if unmetered:
            log.error("usage.not_a_hash", posted_unmetered=unmetered)
        return [reply in (1, POSTED_NOT_METERED) for reply in replies]

    def _execute(self, outcomes: Sequence[Outcome]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for outcome in outcomes:
            self._finish(pipe, outcome)
        return list(pipe.execute())

    def finish(self, outcome: Outcome) -> bool:
        return self.finish_many([outcome])[0]

    def _finish(self, pipe: Any, outcome: Outcome) -> None:
        delivery = outcome.delivery
        result: TaskResultMessage | None = None
        stream: str | None = None
        deadletter: list[str] = []
        usage: UsageCall | None = None
        if isinstance(outcome, Answer):
            result, stream = outcome.message, _checked_stream(outcome.stream)
            if result.task_id != delivery.task_id:
                raise ValueError(f"result of task {result.task_id!r} is not for delivery of {delivery.task_id!r}")
            usage = self._usage_call(outcome)
        elif isinstance(outcome, DeadLetter):
            result = failed_message(delivery, outcome.code, _failed_text(outcome)) if outcome.answer else None
            stream = delivery.result_stream if result is not None else None
            deadletter = deadletter_fields(outcome)
        self._scripts.finish(
            pipe, lane=delivery.lane, entry_id=delivery.entry_id, task_id=delivery.task_id or "",
            result_stream=stream, result=result.model_dump_json() if result is not None and stream else None,
            status=result.status.value if result is not None else "", result_ttl_s=self._settings.result_ttl_s,
            maxlen=self._settings.result_stream_maxlen, deadletter=deadletter, usage=usage,
        )

    def _usage_call(self, answer: Answer) -> UsageCall | None:
        if answer.usage is None or FIELD_SEP in answer.usage.tenant:
            return None  # the contract's tenant pattern has no FIELD_SEP; anything else is not metered
        message = answer.message
        return UsageCall(
            day=day_of(message.finished_at), prefix=usage_prefix(answer.usage.tenant, message.kind),
            inferences=1 if message.status is TaskStatus.OK else 0, compute_us=answer.usage.compute_us,
            ttl_s=self._settings.usage_retention_days * 86_400,
        )

    def already_answered(self, task_ids: Iterable[str]) -> set[str]:
        """The task ids among `task_ids` that already have a result (one round trip)."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return set()
        markers = cast(list[bytes | None], self._client.mget([done_key(task_id) for task_id in ids]))
        return {task_id for task_id, marker in zip(ids, markers, strict=True) if marker is not None}

    def requeue(self, deliveries: Sequence[Delivery]) -> list[str]:
        """Put fetched but unstarted tasks back at the end of their lanes for any worker to take now.

        Each entry is copied (with its original enqueue time and its delivery count so far, this
        unstarted delivery not counted) and the original acked and deleted, atomically per entry.
        Returns the copies' entry ids.

        With signing on, a copy is re-signed with this worker's key, and only when the entry would be
        accepted: its signature checked here and its replay marker in the same script as the copy. An
        entry that would be refused is not copied; it stays pending, and a peer claims and refuses it.
        """
        if not deliveries:
            return []
        pipe = self._client.pipeline(transaction=False)
        for delivery in deliveries:
            fields = _requeue_fields(delivery)
            gate = self.signatures
            if gate is None:
                self._scripts.requeue(pipe, lane=delivery.lane, entry_id=delivery.entry_id, fields=_flat(fields))
                continue
            verdict = gate.verdict(delivery)
            if verdict.code is not None:
                continue
            copy = _flat(gate.resigned(fields))
            if verdict.sig is None:  # unsigned, accepted while signatures are not required
                self._scripts.requeue(pipe, lane=delivery.lane, entry_id=delivery.entry_id, fields=copy)
            else:
                self._scripts.requeue_signed(
                    pipe, lane=delivery.lane, entry_id=delivery.entry_id, replay=replay_key(verdict.sig),
                    marker=replay_marker(delivery.lane, delivery.entry_id),
                    replay_ttl_ms=gate.ring.replay_ttl_ms, fields=copy,
                )
        copies = [e.decode() if isinstance(e, bytes) else str(e) for e in pipe.execute() if e is not None]
        if len(copies) < len(deliveries):
            log.warning("requeue.refused_left_pending", count=len(deliveries) - len(copies))
        return copies


def _result_stream(outcome: Outcome) -> str | None:
    return outcome.stream if isinstance(outcome, Answer) else outcome.delivery.result_stream


def _unpostable(outcome: Outcome) -> DeadLetter:
    """The dead letter of an outcome whose result stream holds a key of another type."""
    delivery, stream = outcome.delivery, _result_stream(outcome)
    code = ErrorCode.BAD_REPLY_TO if stream is not None and stream == delivery.reply_to else ErrorCode.INTERNAL_ERROR
    with bind_task(delivery.task_id or "", delivery.kind, delivery.lane):
        log.error("task.unpostable", stream=stream, code=code.value)
    return DeadLetter(delivery, code, f"result stream {stream} is a key of another type; no result was posted",
                      answer=False)


def _failed_text(letter: DeadLetter) -> str:
    if letter.code is ErrorCode.TOO_MANY_DELIVERIES:
        return f"delivered {letter.delivery.deliveries} times without a result; moved to {DEADLETTER_STREAM}"
    return f"{letter.message}; moved to {DEADLETTER_STREAM}"
