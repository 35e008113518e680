"""Computing: one lane batch through its kind's adapter, one answer per job.

A batch that raises is split in halves and each half retried, down to single items, so one
poisonous input fails only itself (`failed`, model_error); an output that breaks the result
contract fails only its own task (`failed`, internal_error).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contracts import ErrorCode, TaskResultMessage, Timings
from contracts.wire import Kind
from worker import metrics
from worker.adapters import KindAdapter, Result, without_explanation
from worker.logging import bind_batch, get_logger
from worker.outcomes import Answer
from worker.preparing import Job, now_ms
from worker.usage import Usage, apportion

log = get_logger("computing")



@dataclass(frozen=True)
class Raised:
    """The exception the model raised on one input alone (kept apart from a ValueError it returned)."""

    error: Exception


# Per job: its result, the ValueError of an output that broke the result contract, or what the model raised.
Computed = Result | ValueError | Raised


class BatchComputer:
    """Runs lane batches on the adapters and builds their answers (one inference thread calls it)."""

    def __init__(self, adapters: Mapping[Kind, KindAdapter]) -> None:
        self._adapters = adapters

    def run(self, kind: Kind, lane: str, jobs: Sequence[Job]) -> list[Answer]:
        adapter = self._adapters[kind]
        batch_id = uuid.uuid4().hex[:12]
        with bind_batch(batch_id, kind, lane, len(jobs)):
            started_ms = now_ms()
            started = time.perf_counter()
            outputs = self._compute(adapter, jobs)
            compute_ms = (time.perf_counter() - started) * 1000.0
            tokens = max(job.prepared.n_tokens for job in jobs) * len(jobs)
            log.info("batch.done", size=len(jobs), tokens=tokens, compute_ms=round(compute_ms, 3))
            for job, output in zip(jobs, outputs, strict=True):
                # One line per task (debug), with the batch's ids bound: which batch computed which task.
                log.debug("task.computed", task_id=job.task_id, computed=not isinstance(output, Raised | ValueError))
        _observe(kind, lane, jobs, started_ms, compute_ms, tokens)
        finished = now_ms()
        # Each task's share of the batch's model time, by its tokens (worker/usage.py), metered with its result.
        shares = apportion(compute_ms / 1000.0, [job.prepared.n_tokens for job in jobs])
        return [
            Answer(job.delivery, self._message(adapter, job, output, _timings(job, started_ms, compute_ms, finished,
                                                                              len(jobs)), int(finished)), job.stream,
                   Usage(job.tenant, share))
            for job, output, share in zip(jobs, outputs, shares, strict=True)
        ]

    def _compute(self, adapter: KindAdapter, jobs: Sequence[Job]) -> list[Computed]:
        try:
            outputs: list[Computed] = list(adapter.compute([job.prepared for job in jobs]))
            if len(outputs) != len(jobs):
                # Answers are matched to jobs by position: a short or long reply cannot be matched.
                raise RuntimeError(f"{len(outputs)} outputs for a batch of {len(jobs)}")
            return outputs
        except Exception as exc:
            if len(jobs) == 1:
                log.warning("task.model_error", task_id=jobs[0].task_id, error=type(exc).__name__)
                return [Raised(exc)]
            metrics.BATCH_SPLITS.labels(adapter.kind).inc()
            log.warning("batch.split", size=len(jobs), error=type(exc).__name__)
            half = len(jobs) // 2
            return self._compute(adapter, jobs[:half]) + self._compute(adapter, jobs[half:])

    @staticmethod
    def _message(adapter: KindAdapter, job: Job, output: Computed, timings: Timings,
                 finished: int) -> TaskResultMessage:
        if isinstance(output, Raised):
            # Checked first: a model that raises a ValueError failed, its output did not break the contract.
            return TaskResultMessage.failed(
                job.task_id, job.kind, ErrorCode.MODEL_ERROR, f"the model raised {type(output.error).__name__}",
                timings=timings, finished_at=finished, model=adapter.model_id,
            )
        if isinstance(output, ValueError):
            log.error("task.bad_output", task_id=job.task_id, error=type(output).__name__)
            return TaskResultMessage.failed(
                job.task_id, job.kind, ErrorCode.INTERNAL_ERROR, "the model's output broke the result contract",
                timings=timings, finished_at=finished, model=adapter.model_id,
            )
        result = output if job.explain else without_explanation(output)
        return TaskResultMessage.ok(job.task_id, result, model=adapter.model_id, timings=timings, finished_at=finished)


def _timings(job: Job, started_ms: float, compute_ms: float, finished_ms: float, size: int) -> Timings:
    return Timings(
        queue_ms=max(0.0, started_ms - job.delivery.enqueued_ms),
        batch_size=size,
        compute_ms=compute_ms,
        total_ms=max(0.0, finished_ms - job.delivery.enqueued_ms),
    )


def _observe(kind: str, lane: str, jobs: Sequence[Job], started_ms: float, compute_ms: float, tokens: int) -> None:
    metrics.BATCH_SIZE.labels(kind, lane).observe(len(jobs))
    metrics.BATCH_TOKENS.labels(kind, lane).observe(tokens)
    metrics.COMPUTE.labels(kind, lane).observe(compute_ms / 1000.0)
    for job in jobs:
        metrics.QUEUE_WAIT.labels(kind, lane).observe(max(0.0, started_ms - job.delivery.enqueued_ms) / 1000.0)
