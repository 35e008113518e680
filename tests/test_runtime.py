"""The worker pipeline in-process against a real Redis, with small real torch models behind the real adapters.

The runners here have the engine runners' interface (`prepare` an engine input into the engine's own
`PreparedTriage`/`PreparedFraud`, `run` a batch along its `plan_batch` plan, `warmup`, pass limits) and
are tiny but real computations (embedding, pooling, a linear head over the structured numbers), so the
real `TriageAdapter`/`FraudAdapter`, batching, splitting and result translation run through torch
exactly as with the shipped models. The triage one has a fixed positional table of 32 positions: a
longer note makes torch raise inside the batch, which is how a real model fails on one input.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import pytest
import redis
import structlog
import torch
from torch import nn

from contracts import ErrorCode, FraudRequest, TaskResultMessage, TaskStatus, TriageRequest, parse_request
from contracts.wire import DEADLETTER_STREAM, TASK_FRAUD, TASK_TRIAGE, Kind, queue_stream, results_stream
from engine.batching import BatchLimits, BatchPlan
from engine.errors import InputError
from engine.fraud_features import N_NUMERIC, FraudInput, featurize
from engine.fraud_model import padded_length
from engine.fraud_runner import FraudPrediction, PreparedFraud
from engine.triage_input import TriageInput, structured_features
from engine.triage_runner import PreparedTriage, TriagePrediction
from worker.adapters import (
    FraudAdapter,
    KindAdapter,
    Prepared,
    Result,
    TriageAdapter,
    fraud_input,
    fraud_thresholds,
    triage_input,
    triage_result,
)
from worker.client import raw_fields
from worker.computing import BatchComputer
from worker.config import Settings
from worker.entries import MAX_ENTRY_BYTES, decode_entry
from worker.errors import ConfigurationError
from worker.keys import CONSUMER_GROUP
from worker.preparing import Job
from worker.runtime import WorkerRuntime
from worker.transport import enqueue
from worker.turns import prepare_overlaps

MAX_POSITIONS = 32  # the tiny triage model's positional table
WARMUP_BATCHES = 2  # TinyTriageRunner.warmup, then the adapter's sample request through the contract path
N_STRUCTURED = len(structured_features(None))


class TinyTriageRunner:
    """Hashes words to ids, embeds them with positions, mean-pools, adds the structured numbers, scores five levels."""

    name, version = "tiny-triage", "1"
    pass_limits = BatchLimits(4096, 64)
    pass_cost = 1

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.embed = nn.Embedding(1000, 16)
        self.positions = nn.Embedding(MAX_POSITIONS, 16)
        self.structured = nn.Linear(N_STRUCTURED, 16)
        self.head = nn.Linear(16, 5)
        self.batches: list[int] = []
        self.inputs: list[TriageInput] = []

    def prepare(self, item: TriageInput) -> PreparedTriage:
        if not isinstance(item, TriageInput):
            raise InputError(f"expected a TriageInput, got {type(item).__name__}")
        self.inputs.append(item)
        ids = [zlib.crc32(word.encode()) % 1000 for word in item.note.split()]
        return PreparedTriage([ids], structured_features(item))

    @torch.inference_mode()
    def run(self, batch: Sequence[PreparedTriage], plan: BatchPlan) -> list[TriagePrediction]:
        self.batches.append(len(batch))
        out: list[TriagePrediction | None] = [None] * len(batch)
        for forward_pass in plan:
            items = [batch[item] for item, _ in forward_pass]
            chunks = [batch[item].chunks[seg] for item, seg in forward_pass]
            longest = max(len(c) for c in chunks)
            ids = torch.zeros(len(chunks), longest, dtype=torch.long)  # (B, T)
            mask = torch.zeros(len(chunks), longest)  # (B, T)
            for row, chunk in enumerate(chunks):
                ids[row, : len(chunk)] = torch.tensor(chunk)
                mask[row, : len(chunk)] = 1.0
            hidden = self.embed(ids) + self.positions(torch.arange(longest))  # (B, T, 16)
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)  # (B, 16)
            numbers = torch.tensor([p.structured for p in items], dtype=torch.float32)  # (B, S)
            probs = self.head(pooled + self.structured(numbers)).softmax(-1)  # (B, 5)
            for row, (item, _) in enumerate(forward_pass):
                out[item] = TriagePrediction(probs[row].tolist(), int(probs[row].argmax()), 1)
        return [p for p in out if p is not None]

    def warmup(self) -> None:
        self.run([self.prepare(TriageInput("warm up"))], [[(0, 0)]])


class TinyFraudRunner:
    """Featurises with the engine, then scores the transaction row and the mean row with one linear head."""

    name, version = "tiny-fraud", "1"
    thresholds = {"review": 0.5, "decline": 0.9}
    pass_limits = BatchLimits(16384, 64)
    pass_cost = 200

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.head = nn.Linear(2 * N_NUMERIC, 1)

    def prepare(self, item: FraudInput) -> PreparedFraud:
        features = featurize(item)
        return PreparedFraud(features, padded_length(features.n_events, 64))

    @torch.inference_mode()
    def run(self, batch: Sequence[PreparedFraud], plan: BatchPlan) -> list[FraudPrediction]:
        feats = torch.stack([torch.cat([p.features.num[-1], p.features.num.mean(0)]) for p in batch])  # (B, 2N)
        scores = torch.sigmoid(self.head(feats)).squeeze(-1)  # (B,)
        return [FraudPrediction(float(score), [*p.features.reasons, "not-a-contract-code"])
                for score, p in zip(scores, batch, strict=True)]

    def warmup(self) -> None:
        pass


def triage_adapter(runner: TinyTriageRunner | None = None) -> TriageAdapter:
    return TriageAdapter(runner or TinyTriageRunner())  # type: ignore[arg-type]


def fraud_adapter(review: float = 0.5, decline: float = 0.9) -> FraudAdapter:
    return FraudAdapter(TinyFraudRunner(), review, decline)  # type: ignore[arg-type]


def _settings(redis_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "metrics_port": 0,
        "realtime_max_wait_ms": 2.0,
        "batch_max_wait_ms": 30.0,
        "claim_idle_ms": 300,
        "drain_timeout_s": 10.0,
    }
    return Settings(**{**base, **overrides})


@pytest.fixture
def runtime_factory(redis_url: str, redis_client: redis.Redis) -> Iterator[Callable[..., WorkerRuntime]]:
    """Builds started runtimes with the tiny models; every one is stopped at the end."""
    started: list[WorkerRuntime] = []

    def make(adapters: dict[Kind, KindAdapter] | None = None, **overrides: Any) -> WorkerRuntime:
        if adapters is None:
            adapters = {"triage": triage_adapter(), "fraud": fraud_adapter()}
        runtime = WorkerRuntime(_settings(redis_url, **overrides), name=f"test-{len(started)}", adapters=adapters)
        started.append(runtime)
        runtime.start()
        return runtime

    yield make
    for runtime in started:
        runtime.stop(timeout_s=5.0)


def _submit(client: redis.Redis, task: str, task_id: str, request: dict[str, Any], lane: str = "batch") -> None:
    enqueue(client, lane, raw_fields(task, task_id, json.dumps(request)), 10_000)


def _entries(client: redis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], client.xrange(stream))


def _results(client: redis.Redis, kind: str, count: int, timeout_s: float = 10.0,
             stream: str | None = None) -> dict[str, TaskResultMessage]:
    deadline = time.monotonic() + timeout_s
    found: dict[str, TaskResultMessage] = {}
    while time.monotonic() < deadline:
        found = {}
        for _, fields in _entries(client, stream or results_stream(kind)):
            message = TaskResultMessage.model_validate_json(fields["message"])
            found[message.task_id] = message
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{len(found)} of {count} results after {timeout_s}s")


def _wait(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _event(amount: float, ts: str) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR", "mcc": "5411", "channel": "ecommerce", "country": "DE",
            "timestamp": ts}


def _fraud(amount: float) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"tenant": "bank", "transaction": _event(amount, now), "history": [_event(12.5, now), _event(40.0, now)]}


# ---------------------------------------------------------------------------------------------
# The pipeline


def test_both_kinds_flow_end_to_end_in_batches(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    for i in range(12):
        _submit(redis_client, TASK_TRIAGE, f"t{i}", {"tenant": "ed", "note": f"chest pain {i} hours", "age": 60})
    for i in range(5):
        _submit(redis_client, TASK_FRAUD, f"f{i}", _fraud(10.0 * (i + 1)), lane="realtime")
    runtime = runtime_factory()
    triage = _results(redis_client, "triage", 12)
    fraud = _results(redis_client, "fraud", 5)
    assert all(m.status is TaskStatus.OK for m in [*triage.values(), *fraud.values()])
    assert triage["t0"].model == "tiny-triage@1" and fraud["f0"].model == "tiny-fraud@1"
    assert max(m.timings.batch_size for m in triage.values()) > 1, "tasks fetched together share a batch"
    result = triage["t3"].result
    assert result is not None and 1 <= result.acuity <= 5  # type: ignore[union-attr]
    assert fraud["f4"].result.decision in ("approve", "review", "decline")  # type: ignore[union-attr]
    assert "not-a-contract-code" not in fraud["f4"].result.reasons  # type: ignore[union-attr]
    assert redis_client.xlen(queue_stream("batch")) == 0, "every entry was acked and deleted"
    assert redis_client.xlen(queue_stream("realtime")) == 0
    assert redis_client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 0
    assert runtime.ready and runtime.alive()


def test_structured_fields_reach_the_model_as_numbers(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runner = TinyTriageRunner()
    runtime_factory(adapters={"triage": triage_adapter(runner)})
    note = "short of breath"
    _submit(redis_client, TASK_TRIAGE, "plain", {"tenant": "ed", "note": note})
    _submit(redis_client, TASK_TRIAGE, "vitals", {"tenant": "ed", "note": note, "age": 67, "sex": "F",
                                                  "vitals": {"heart_rate": 140, "spo2": 84}})
    found = _results(redis_client, "triage", 2)
    served = {item.age_years: item for item in runner.inputs if item.note == note}
    assert served[67].vitals == {"heart_rate": 140.0, "spo2": 84.0} and served[67].sex == "F"
    assert served[None].vitals == {}
    plain, vitals = found["plain"].result, found["vitals"].result
    assert plain is not None and vitals is not None
    assert plain.probabilities != vitals.probabilities, "same note, other numbers: another prediction"  # type: ignore[union-attr]


def test_invalid_task_in_a_batch_leaves_its_batch_mates_ok(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    _submit(redis_client, TASK_TRIAGE, "good-1", {"tenant": "ed", "note": "fall from ladder"})
    _submit(redis_client, TASK_TRIAGE, "bad", {"tenant": "ed", "note": "sob", "vitals": {"spo2": 140}})
    _submit(redis_client, TASK_TRIAGE, "good-2", {"tenant": "ed", "note": "rash for two days"})
    runtime_factory()
    found = _results(redis_client, "triage", 3)
    assert found["bad"].status is TaskStatus.INVALID
    assert found["bad"].error is not None and found["bad"].error.code.value == "vital_out_of_range"
    assert found["good-1"].status is TaskStatus.OK and found["good-2"].status is TaskStatus.OK


def test_a_batch_that_raises_is_split_and_only_the_culprit_fails(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runner = TinyTriageRunner()
    long_note = " ".join(f"word{i}" for i in range(MAX_POSITIONS + 8))
    for i in range(7):
        note = long_note if i == 3 else f"ankle sprain {i}"
        _submit(redis_client, TASK_TRIAGE, f"s{i}", {"tenant": "ed", "note": note})
    runtime_factory(adapters={"triage": triage_adapter(runner)}, batch_token_budget=10_000)
    found = _results(redis_client, "triage", 7)
    assert found["s3"].status is TaskStatus.FAILED
    assert found["s3"].error is not None and found["s3"].error.code.value == "model_error"
    assert all(found[f"s{i}"].status is TaskStatus.OK for i in range(7) if i != 3)
    runs = runner.batches[WARMUP_BATCHES:]
    assert runs[0] == 7 and runs.count(7) == 1 and 1 in runs, "split in halves down to the culprit alone"


def test_preparation_failures_fail_only_their_task(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    class Picky(TinyTriageRunner):
        def prepare(self, item: TriageInput) -> PreparedTriage:
            if "refuse" in item.note:
                raise InputError("cannot take this one")
            if "crash" in item.note:
                raise RuntimeError("secret-phi-marker in a message")
            return super().prepare(item)

    runtime = runtime_factory(adapters={"triage": triage_adapter(Picky())})
    for task_id in ("refuse", "crash", "fine"):
        _submit(redis_client, TASK_TRIAGE, task_id, {"tenant": "ed", "note": f"{task_id} me"})
    found = _results(redis_client, "triage", 3)
    assert found["refuse"].error is not None and found["refuse"].error.code is ErrorCode.MODEL_ERROR
    assert found["crash"].error is not None and found["crash"].error.code is ErrorCode.INTERNAL_ERROR
    assert "secret-phi-marker" not in found["crash"].error.message
    assert found["fine"].status is TaskStatus.OK and runtime.alive()


def test_expired_tasks_are_answered_and_never_computed(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runner = TinyTriageRunner()
    past = int(time.time() * 1000) - 1000
    _submit(redis_client, TASK_TRIAGE, "late", {"tenant": "ed", "note": "headache", "deadline": past})
    runtime_factory(adapters={"triage": triage_adapter(runner)})
    found = _results(redis_client, "triage", 1)
    assert found["late"].status is TaskStatus.EXPIRED
    assert len(runner.batches) == WARMUP_BATCHES, "nothing ran after the warm-up"


def test_a_task_id_answered_before_is_acked_without_a_second_result(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    _submit(redis_client, TASK_TRIAGE, "dup", {"tenant": "ed", "note": "cough"})
    runtime_factory()
    _results(redis_client, "triage", 1)
    _submit(redis_client, TASK_TRIAGE, "dup", {"tenant": "ed", "note": "cough"})
    assert _wait(lambda: not redis_client.xlen(queue_stream("batch")))
    assert redis_client.xlen(results_stream("triage")) == 1
    assert redis_client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 0


def test_too_many_deliveries_go_to_the_dead_letter_stream(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    # Three workers took this task and died: each delivery is counted by Redis, as after crashes.
    reply_to = "inferq:results:client:ward-7"
    _submit(redis_client, TASK_TRIAGE, "poison", {"tenant": "ed", "note": "seizure", "reply_to": reply_to})
    stream = queue_stream("batch")
    redis_client.xgroup_create(stream, CONSUMER_GROUP, id="0")
    reply = cast(list[Any], redis_client.xreadgroup(CONSUMER_GROUP, "crashed-0", {stream: ">"}))
    entry_id = str(reply[0][1][0][0])
    for n in (1, 2):
        redis_client.xclaim(stream, CONSUMER_GROUP, f"crashed-{n}", 0, [entry_id])
    runtime_factory(max_deliveries=3)
    found = _results(redis_client, "triage", 1, stream=reply_to)
    assert found["poison"].status is TaskStatus.FAILED
    assert found["poison"].error is not None and found["poison"].error.code.value == "too_many_deliveries"
    letters = _entries(redis_client, DEADLETTER_STREAM)
    assert len(letters) == 1 and letters[0][1]["task_id"] == "poison" and letters[0][1]["deliveries"] == "4"
    assert dict(json.loads(letters[0][1]["raw"]))["id"] == "poison"
    assert redis_client.xlen(stream) == 0 and not redis_client.xlen(results_stream("triage"))


def test_undecodable_entry_without_an_id_is_dead_lettered_at_once(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    redis_client.xadd(queue_stream("batch"), {"task": TASK_TRIAGE, "request": "{not json"})
    runtime_factory()
    assert _wait(lambda: bool(redis_client.xlen(DEADLETTER_STREAM)))
    letters = _entries(redis_client, DEADLETTER_STREAM)
    assert len(letters) == 1 and letters[0][1]["error_code"] == "invalid_json"
    assert _wait(lambda: not redis_client.xlen(queue_stream("batch")))


def test_an_undecodable_request_with_an_id_is_answered_invalid(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    redis_client.xadd(queue_stream("batch"), {"task": TASK_TRIAGE, "id": "broken", "request": "{not json"})
    runtime_factory()
    found = _results(redis_client, "triage", 1)
    error = found["broken"].error
    assert found["broken"].status is TaskStatus.INVALID and error is not None
    assert error.code.value == "invalid_json" and error.message == "request is not valid JSON"
    assert redis_client.xlen(DEADLETTER_STREAM) == 0


def test_entries_that_are_not_utf8_oversize_or_not_json_never_stop_the_worker(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    lane = queue_stream("batch")
    redis_client.xadd(lane, {"task": TASK_TRIAGE, "id": "latin1", "request": b'{"tenant": "ed", "note": "caf\xe9"}'})
    redis_client.xadd(lane, {"task": TASK_TRIAGE, "id": "surrogate", "request": '{"tenant": "ed", "note": "\\ud800"}'})
    redis_client.xadd(lane, {"task": TASK_TRIAGE, "id": "huge",
                             "request": '{"tenant": "ed", "note": "' + "x" * MAX_ENTRY_BYTES + '"}'})
    redis_client.xadd(lane, {"task": TASK_TRIAGE, "id": "notjson", "request": b"\x00\x01\x02"})
    redis_client.xadd(lane, {"task": TASK_TRIAGE, "id": b"\xff\xfe", "request": "{}"})
    redis_client.xadd(lane, {b"\xff": b"\xfe"})
    _submit(redis_client, TASK_TRIAGE, "fine", {"tenant": "ed", "note": "sprained wrist"})
    runtime = runtime_factory(adapters={"triage": triage_adapter()})
    found = _results(redis_client, "triage", 5)
    codes = {task_id: m.error.code for task_id, m in found.items() if m.error is not None}
    assert codes == {"latin1": ErrorCode.INVALID_UNICODE, "surrogate": ErrorCode.INVALID_UNICODE,
                     "huge": ErrorCode.OUT_OF_RANGE, "notjson": ErrorCode.INVALID_JSON}
    assert all(found[t].status is TaskStatus.INVALID for t in codes) and found["fine"].status is TaskStatus.OK
    assert _wait(lambda: redis_client.xlen(DEADLETTER_STREAM) == 2)
    dead = {fields["error_code"] for _, fields in _entries(redis_client, DEADLETTER_STREAM)}
    assert dead == {"invalid_unicode", "missing_field"}
    assert _wait(lambda: not redis_client.xlen(lane)) and runtime.alive() and runtime.ready


def test_a_reply_to_naming_a_key_of_another_type_is_dead_lettered_and_the_worker_goes_on(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    redis_client.set("inferq:results:taken", "not a stream")
    misdirected = {"tenant": "ed", "note": "cut", "reply_to": "inferq:results:taken"}
    _submit(redis_client, TASK_TRIAGE, "misdirected", misdirected)
    _submit(redis_client, TASK_TRIAGE, "before", {"tenant": "ed", "note": "burn"})
    runtime = runtime_factory(adapters={"triage": triage_adapter()})
    assert _results(redis_client, "triage", 1)["before"].status is TaskStatus.OK
    assert _wait(lambda: redis_client.xlen(DEADLETTER_STREAM) == 1)
    [(_, letter)] = _entries(redis_client, DEADLETTER_STREAM)
    assert letter["task_id"] == "misdirected" and letter["error_code"] == "bad_reply_to"
    _submit(redis_client, TASK_TRIAGE, "after", {"tenant": "ed", "note": "bruise"})
    assert _results(redis_client, "triage", 2)["after"].status is TaskStatus.OK, "the publisher is not wedged"
    assert redis_client.get("inferq:results:taken") == "not a stream"
    assert _wait(lambda: not redis_client.xlen(queue_stream("batch"))) and runtime.alive()


def test_a_kind_no_worker_serves_is_dead_lettered_by_the_delivery_count(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    _submit(redis_client, TASK_TRIAGE, "unserved", {"tenant": "ed", "note": "wheezing"})
    runtime_factory(adapters={"fraud": fraud_adapter()}, max_deliveries=2)
    found = _results(redis_client, "triage", 1)
    assert found["unserved"].error is not None and found["unserved"].error.code.value == "too_many_deliveries"
    letters = _entries(redis_client, DEADLETTER_STREAM)
    assert [fields["task_id"] for _, fields in letters] == ["unserved"] and letters[0][1]["deliveries"] == "3"


# ---------------------------------------------------------------------------------------------
# Stopping, probes, logs


class SlowTriageRunner(TinyTriageRunner):
    def run(self, batch: Sequence[PreparedTriage], plan: BatchPlan) -> list[TriagePrediction]:
        time.sleep(0.3)
        return super().run(batch, plan)


def test_graceful_stop_finishes_the_batch_in_hand_and_gives_back_the_rest(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    for i in range(40):
        _submit(redis_client, TASK_TRIAGE, f"g{i}", {"tenant": "ed", "note": f"back pain {i}"})
    runtime = runtime_factory(adapters={"triage": triage_adapter(SlowTriageRunner())}, batch_max_batch_size=4)
    assert _wait(lambda: bool(redis_client.xlen(results_stream("triage"))))
    assert runtime.stop(timeout_s=5.0)
    answered = redis_client.xlen(results_stream("triage"))
    waiting = redis_client.xlen(queue_stream("batch"))
    assert 0 < answered < 40
    assert answered + waiting == 40, "every task is either answered or back in its lane"
    assert redis_client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 0
    copies = [fields for _, fields in _entries(redis_client, queue_stream("batch")) if "origin" in fields]
    assert copies and all(fields["prior_deliveries"] == "0" for fields in copies), "fetched, not started"
    assert not runtime.alive() and not runtime.ready


def test_health_probes_follow_the_life_cycle(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runtime = runtime_factory(metrics_port=18_000 + (int(time.time() * 1000) % 2000))
    base = f"http://127.0.0.1:{runtime.settings.metrics_port}"
    assert _wait(lambda: runtime.ready)
    for probe in ("/readyz", "/livez"):
        with urllib.request.urlopen(base + probe) as reply:
            assert reply.status == 200
    with urllib.request.urlopen(base + "/metrics") as reply:
        assert b"inferq_worker_ready 1.0" in reply.read()
    assert _wait(lambda: redis_client.hget(f"inferq:worker:{runtime.name}", "ready") == "1", timeout_s=2.0)
    runtime.stop(timeout_s=5.0)
    assert not redis_client.exists(f"inferq:worker:{runtime.name}")
    assert not runtime.alive() and not runtime.ready


def test_logs_bind_task_ids_and_never_carry_the_note(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    note = "patient states secret-phi-marker chest pain"
    _submit(redis_client, TASK_TRIAGE, "logged", {"tenant": "ed", "note": note, "vitals": {"pain": 11}})
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        runtime_factory()
        _results(redis_client, "triage", 1)
    invalid = [e for e in logs if e["event"] == "task.invalid"]
    assert invalid and invalid[0]["task_id"] == "logged"
    assert "secret-phi-marker" not in repr(logs)


def test_a_task_expiring_while_queued_is_answered_without_computing(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runner = SlowTriageRunner()
    runtime_factory(adapters={"triage": triage_adapter(runner)}, batch_max_batch_size=1, batch_max_wait_ms=0.0)
    # Submitted to a running worker, so "waits" is live at fetch and expires behind "first".
    _submit(redis_client, TASK_TRIAGE, "first", {"tenant": "ed", "note": "laceration"})
    _submit(redis_client, TASK_TRIAGE, "waits", {"tenant": "ed", "note": "earache", "timeout_ms": 150})
    found = _results(redis_client, "triage", 2)
    assert found["first"].status is TaskStatus.OK
    assert found["waits"].status is TaskStatus.EXPIRED and found["waits"].timings.batch_size == 0
    assert runner.batches[WARMUP_BATCHES:] == [1], "only the first task ran"


class GatedTriageRunner(TinyTriageRunner):
    """Warms up only once the test opens the gate, so readiness can be observed before it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def warmup(self) -> None:
        assert self.gate.wait(10.0)
        super().warmup()


def _probe(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0  # not listening yet


def test_not_ready_until_the_warm_up_batch_ran(redis_url: str, redis_client: redis.Redis) -> None:
    runner = GatedTriageRunner()
    port = 20_000 + (int(time.time() * 1000) % 2000)
    runtime = WorkerRuntime(_settings(redis_url, metrics_port=port), adapters={"triage": triage_adapter(runner)})
    starting = threading.Thread(target=runtime.start)
    starting.start()
    try:
        assert _wait(lambda: _probe(f"http://127.0.0.1:{port}/livez") == 200)
        assert _probe(f"http://127.0.0.1:{port}/readyz") == 503 and not runtime.ready
        runner.gate.set()
        starting.join(10.0)
        assert _wait(lambda: runtime.ready) and _probe(f"http://127.0.0.1:{port}/readyz") == 200
    finally:
        runner.gate.set()
        starting.join(10.0)
        runtime.stop(timeout_s=5.0)


class StallingTriageRunner(TinyTriageRunner):
    """Once `stall` is set, each batch blocks inside the model until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.stall = False
        self.release = threading.Event()

    def run(self, batch: Sequence[PreparedTriage], plan: BatchPlan) -> list[TriagePrediction]:
        if self.stall:
            assert self.release.wait(10.0)
        return super().run(batch, plan)


def test_liveness_fails_while_a_loop_is_stuck(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = StallingTriageRunner()
    runtime = runtime_factory(adapters={"triage": triage_adapter(runner)}, batch_max_wait_ms=0.0)
    monkeypatch.setattr("worker.runtime.LOOP_STALL_S", 0.5)
    runner.stall = True
    _submit(redis_client, TASK_TRIAGE, "stuck", {"tenant": "ed", "note": "abdominal pain"})
    assert _wait(lambda: not runtime.alive()), "a hung inference thread fails liveness"
    runner.release.set()
    assert _results(redis_client, "triage", 1)["stuck"].status is TaskStatus.OK
    assert _wait(runtime.alive), "it turns again once the batch ends"


def test_a_runtime_needs_a_redis_url() -> None:
    with pytest.raises(ConfigurationError):
        WorkerRuntime(Settings(redis_url=None, metrics_port=0), adapters={"triage": triage_adapter()})


# ---------------------------------------------------------------------------------------------
# Preparing and the forward pass take turns


class OverlapTriageRunner(TinyTriageRunner):
    """Counts preparations made while a forward pass runs."""

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.prepared_during_run = 0
        self.prepared = 0

    def prepare(self, item: TriageInput) -> PreparedTriage:
        self.prepared += 1
        self.prepared_during_run += self.running
        return super().prepare(item)

    def run(self, batch: Sequence[PreparedTriage], plan: BatchPlan) -> list[TriagePrediction]:
        self.running = True
        try:
            time.sleep(0.05)
            return super().run(batch, plan)
        finally:
            self.running = False


def test_preparing_never_overlaps_a_forward_pass(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runner = OverlapTriageRunner()
    runtime_factory(adapters={"triage": triage_adapter(runner)}, batch_max_batch_size=4, fetch_count=4)
    for i in range(40):
        _submit(redis_client, TASK_TRIAGE, f"o{i}", {"tenant": "ed", "note": f"knee pain {i}"})
        time.sleep(0.005)  # arrivals keep coming while batches run
    results = _results(redis_client, "triage", 40)
    assert all(m.status is TaskStatus.OK for m in results.values())
    assert runner.prepared >= 40 and runner.prepared_during_run == 0
    assert len(runner.batches) > 2, "several forward passes ran while tasks kept arriving"


def test_preparing_overlaps_forward_passes_where_asked(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runner = OverlapTriageRunner()
    runtime_factory(adapters={"triage": triage_adapter(runner)}, batch_max_batch_size=4, fetch_count=4,
                    prepare_overlap="always")
    for i in range(40):
        _submit(redis_client, TASK_TRIAGE, f"v{i}", {"tenant": "ed", "note": f"knee pain {i}"})
        time.sleep(0.005)
    results = _results(redis_client, "triage", 40)
    assert all(m.status is TaskStatus.OK for m in results.values())
    assert runner.prepared_during_run > 0


def test_auto_overlap_follows_the_device() -> None:
    assert not prepare_overlaps(Settings(device="cpu"))
    assert prepare_overlaps(Settings(device="cpu", prepare_overlap="always"))
    assert not prepare_overlaps(Settings(device="cuda", prepare_overlap="never"))


# ---------------------------------------------------------------------------------------------
# The adapters: contract request -> engine input, prediction -> contract result


def test_the_triage_adapter_hands_the_runner_structured_numbers() -> None:
    request = parse_request(
        "triage", {"tenant": "ed", "note": "sob", "age": 67, "sex": "F", "vitals": {"heart_rate": 112, "spo2": 91},
                   "arrival_mode": "walk_in"},
    )
    assert isinstance(request, TriageRequest)
    runner = TinyTriageRunner()
    prepared = triage_adapter(runner).prepare(request)
    [given] = runner.inputs
    assert isinstance(given, TriageInput) and given.note == "sob"
    assert given.age_years == 67 and isinstance(given.age_years, int | float)
    assert given.vitals == {"heart_rate": 112.0, "spo2": 91.0}
    assert all(type(v) is float for v in given.vitals.values())
    assert given.sex == "F" and given.arrival_mode == "walk-in"  # spelled as the training notes spell it
    assert given == triage_input(request)
    assert isinstance(prepared, PreparedTriage) and prepared.structured == structured_features(given)
    assert prepared.structured is not None and prepared.structured[1] == 1.0, "age present"
    bare = triage_input(parse_request("triage", {"tenant": "ed", "note": "sob"}))  # type: ignore[arg-type]
    assert bare.age_years is None and bare.vitals == {} and bare.arrival_mode is None


def test_triage_results_count_acuity_from_one() -> None:
    result = triage_result(TriagePrediction([0.1, 0.6, 0.1, 0.1, 0.1], 1, 2, True))
    assert result.acuity == 2 and result.chunks == 2 and result.truncated
    assert result.probabilities == [0.1, 0.6, 0.1, 0.1, 0.1]


def test_fraud_events_translate_with_epoch_seconds_and_thresholds_decide() -> None:
    request = parse_request("fraud", _fraud(99.0))
    assert isinstance(request, FraudRequest)
    adapter = fraud_adapter(review=0.3, decline=0.8)
    inp = fraud_input(request)
    assert inp.transaction.timestamp == request.transaction.timestamp.timestamp()
    assert [e.amount for e in inp.history] == [12.5, 40.0]
    assert isinstance(adapter.prepare(request), PreparedFraud)
    assert [adapter.decide(s) for s in (0.29, 0.3, 0.79, 0.8)] == ["approve", "review", "review", "decline"]
    result = adapter.result(FraudPrediction(0.85, ["velocity", "unheard_of"]))
    assert (result.decision, [r.value for r in result.reasons]) == ("decline", ["velocity"])


def test_operator_thresholds_override_the_model_card() -> None:
    card = {"review": 0.5, "decline": 0.9}
    assert fraud_thresholds(Settings(), card) == (0.5, 0.9)
    assert fraud_thresholds(Settings(fraud_decline_threshold=0.7), card) == (0.5, 0.7)
    with pytest.raises(ConfigurationError):
        fraud_adapter(review=0.9, decline=0.5)


class _ScriptedAdapter(KindAdapter):
    """A triage adapter whose compute does what the test tells it."""

    kind: Kind = "triage"

    def __init__(self, compute: Callable[[Sequence[Prepared]], list[Result | ValueError]]) -> None:
        self._compute = compute

    @property
    def model_id(self) -> str:
        return "scripted@1"

    def prepare(self, request: Any) -> Prepared:
        return PreparedTriage([[1, 2, 3]])

    def compute(self, batch: Sequence[Prepared]) -> list[Result | ValueError]:
        return self._compute(batch)

    def warmup(self) -> None:
        pass


def _jobs(n: int) -> list[Job]:
    jobs = []
    for i in range(n):
        fields = {b"task": TASK_TRIAGE.encode(), b"id": f"j{i}".encode(), b"request": b"{}"}
        delivery = decode_entry("batch", f"{int(time.time() * 1000)}-{i}", fields, 1)
        jobs.append(Job(delivery, "triage", "ed", PreparedTriage([[1, 2, 3]]), results_stream("triage"), f"j{i}"))
    return jobs


def test_a_model_that_raises_a_value_error_is_a_model_error_not_a_broken_output() -> None:
    def raising(batch: Sequence[Prepared]) -> list[Result | ValueError]:
        raise ValueError("shape mismatch inside the model")

    [answer] = BatchComputer({"triage": _ScriptedAdapter(raising)}).run("triage", "batch", _jobs(1))
    assert answer.message.error is not None and answer.message.error.code is ErrorCode.MODEL_ERROR

    def broken(batch: Sequence[Prepared]) -> list[Result | ValueError]:
        return [ValueError("acuity 9") for _ in batch]

    answers = BatchComputer({"triage": _ScriptedAdapter(broken)}).run("triage", "batch", _jobs(2))
    assert [a.message.error.code for a in answers] == [ErrorCode.INTERNAL_ERROR] * 2  # type: ignore[union-attr]
    assert all(a.message.model == "scripted@1" for a in answers)


def test_an_adapter_answering_the_wrong_number_of_items_fails_them_without_crashing() -> None:
    def short(batch: Sequence[Prepared]) -> list[Result | ValueError]:
        return [triage_result(TriagePrediction([0.2] * 5, 0, 1))] * (len(batch) - 1)

    answers = BatchComputer({"triage": _ScriptedAdapter(short)}).run("triage", "batch", _jobs(3))
    assert [a.message.status for a in answers] == [TaskStatus.FAILED] * 3
    assert {a.delivery.task_id for a in answers} == {"j0", "j1", "j2"}
