"""The worker pipeline in-process against a real Redis, with small real torch models.

The models here are tiny but real computations (embedding, pooling, a linear head), so batching,
splitting and result translation run through torch exactly as with the shipped models. The
triage one has a fixed positional table of 32 positions: a longer note makes torch raise inside
the batch, which is how a real model fails on one input.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis
import structlog
import torch
from torch import nn

from contracts import TaskResultMessage, TaskStatus
from engine.fraud_features import FraudInput
from worker.config import Settings
from worker.constants import (
    CONSUMER_GROUP,
    DEADLETTER_STREAM,
    TASK_FRAUD,
    TASK_TRIAGE,
    queue_stream,
    results_stream,
)
from worker.errors import ConfigurationError
from worker.models import FraudModel, KindModel, TriageModel
from worker.runtime import WorkerRuntime, prepare_overlaps
from worker.streams import enqueue, raw_fields

MAX_POSITIONS = 32  # the tiny triage model's positional table
WARMUP_BATCHES = 2  # TinyTriageRunner.warmup, then the sample request through the contract path


@dataclass
class Tokens:
    ids: torch.Tensor  # (T,)

    @property
    def n_tokens(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class TextPrediction:
    probabilities: list[float]
    label_index: int
    chunks: int
    truncated: bool


@dataclass
class FraudPrediction:
    score: float
    reasons: list[str]


class TinyTriageRunner:
    """Hashes words to ids, embeds them with positions, mean-pools, and scores five levels."""

    name, version = "tiny-triage", "1"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.embed = nn.Embedding(1000, 16)
        self.positions = nn.Embedding(MAX_POSITIONS, 16)
        self.head = nn.Linear(16, 5)
        self.batches: list[int] = []

    def prepare(self, text: str) -> Tokens:
        ids = [zlib.crc32(word.encode()) % 1000 for word in text.split()]
        return Tokens(torch.tensor(ids, dtype=torch.long))

    @torch.inference_mode()
    def run(self, batch: list[Tokens]) -> list[TextPrediction]:
        self.batches.append(len(batch))
        longest = max(p.n_tokens for p in batch)
        ids = torch.zeros(len(batch), longest, dtype=torch.long)  # (B, T)
        mask = torch.zeros(len(batch), longest)  # (B, T)
        for row, p in enumerate(batch):
            ids[row, : p.n_tokens] = p.ids
            mask[row, : p.n_tokens] = 1.0
        hidden = self.embed(ids) + self.positions(torch.arange(longest))  # (B, T, 16)
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)  # (B, 16)
        probs = self.head(pooled).softmax(-1)  # (B, 5)
        return [TextPrediction(row.tolist(), int(row.argmax()), 1, False) for row in probs]

    def warmup(self) -> None:
        self.run([self.prepare("warm up")])


class TinyFraudRunner:
    """Scores the transaction from log amounts of the transaction and its history."""

    name, version = "tiny-fraud", "1"
    thresholds = {"review": 0.5, "decline": 0.9}

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.head = nn.Linear(2, 1)

    def prepare(self, inp: FraudInput) -> Tokens:
        amounts = [e.amount for e in [*inp.history, inp.transaction]]
        return Tokens(torch.log1p(torch.tensor(amounts)))

    @torch.inference_mode()
    def run(self, batch: list[Tokens]) -> list[FraudPrediction]:
        feats = torch.stack([torch.stack([p.ids[-1], p.ids.mean()]) for p in batch])  # (B, 2)
        scores = torch.sigmoid(self.head(feats)).squeeze(-1)  # (B,)
        return [FraudPrediction(float(s), ["velocity"]) for s in scores]

    def warmup(self) -> None:
        self.run([Tokens(torch.tensor([1.0, 2.0]))])


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

    def make(models: dict[str, KindModel] | None = None, **overrides: Any) -> WorkerRuntime:
        if models is None:
            models = {"triage": TriageModel(TinyTriageRunner()), "fraud": FraudModel(TinyFraudRunner(), 0.5, 0.9)}
        runtime = WorkerRuntime(_settings(redis_url, **overrides), name=f"test-{len(started)}", models=models)
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


def _results(client: redis.Redis, kind: str, count: int, timeout_s: float = 10.0) -> dict[str, TaskResultMessage]:
    deadline = time.monotonic() + timeout_s
    found: dict[str, TaskResultMessage] = {}
    while time.monotonic() < deadline:
        found = {}
        for _, fields in _entries(client, results_stream(kind)):
            message = TaskResultMessage.model_validate_json(fields["message"])
            found[message.task_id] = message
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{len(found)} of {count} results after {timeout_s}s")


def _event(amount: float, ts: str) -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "EUR",
        "mcc": "5411",
        "channel": "ecommerce",
        "country": "DE",
        "timestamp": ts,
    }


def _fraud(amount: float) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"tenant": "bank", "transaction": _event(amount, now), "history": [_event(12.5, now), _event(40.0, now)]}


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
    assert redis_client.xlen(queue_stream("batch")) == 0, "every entry was acked and deleted"
    assert runtime.ready


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
    runtime_factory(models={"triage": TriageModel(runner)}, batch_token_budget=10_000)
    found = _results(redis_client, "triage", 7)
    assert found["s3"].status is TaskStatus.FAILED
    assert found["s3"].error is not None and found["s3"].error.code.value == "model_error"
    assert all(found[f"s{i}"].status is TaskStatus.OK for i in range(7) if i != 3)
    runs = runner.batches[WARMUP_BATCHES:]
    assert runs[0] == 7 and runs.count(7) == 1 and 1 in runs, "split in halves down to the culprit alone"


def test_expired_tasks_are_answered_and_never_computed(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runner = TinyTriageRunner()
    past = int(time.time() * 1000) - 1000
    _submit(redis_client, TASK_TRIAGE, "late", {"tenant": "ed", "note": "headache", "deadline": past})
    runtime_factory(models={"triage": TriageModel(runner)})
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
    deadline = time.monotonic() + 5
    while redis_client.xlen(queue_stream("batch")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert redis_client.xlen(queue_stream("batch")) == 0
    assert redis_client.xlen(results_stream("triage")) == 1


def test_too_many_deliveries_go_to_the_dead_letter_stream(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    # Three workers took this task and died: each delivery is counted by Redis, as after crashes.
    _submit(redis_client, TASK_TRIAGE, "poison", {"tenant": "ed", "note": "seizure"})
    stream = queue_stream("batch")
    redis_client.xgroup_create(stream, CONSUMER_GROUP, id="0")
    reply = cast(list[Any], redis_client.xreadgroup(CONSUMER_GROUP, "crashed-0", {stream: ">"}))
    entry_id = str(reply[0][1][0][0])
    for n in (1, 2):
        redis_client.xclaim(stream, CONSUMER_GROUP, f"crashed-{n}", 0, [entry_id])
    runtime_factory(max_deliveries=3)
    found = _results(redis_client, "triage", 1)
    assert found["poison"].status is TaskStatus.FAILED
    assert found["poison"].error is not None and found["poison"].error.code.value == "too_many_deliveries"
    letters = _entries(redis_client, DEADLETTER_STREAM)
    assert len(letters) == 1 and letters[0][1]["task_id"] == "poison"
    assert json.loads(letters[0][1]["raw"])["id"] == "poison"


def test_undecodable_entry_without_an_id_is_dead_lettered_at_once(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    redis_client.xadd(queue_stream("batch"), {"task": TASK_TRIAGE, "request": "{not json"})
    runtime_factory()
    deadline = time.monotonic() + 5
    while not redis_client.xlen(DEADLETTER_STREAM) and time.monotonic() < deadline:
        time.sleep(0.02)
    letters = _entries(redis_client, DEADLETTER_STREAM)
    assert len(letters) == 1 and letters[0][1]["error_code"] == "invalid_json"
    assert redis_client.xlen(queue_stream("batch")) == 0


class SlowTriageRunner(TinyTriageRunner):
    def run(self, batch: list[Tokens]) -> list[TextPrediction]:
        time.sleep(0.3)
        return super().run(batch)


def test_graceful_stop_finishes_the_batch_in_hand_and_gives_back_the_rest(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    for i in range(40):
        _submit(redis_client, TASK_TRIAGE, f"g{i}", {"tenant": "ed", "note": f"back pain {i}"})
    runtime = runtime_factory(models={"triage": TriageModel(SlowTriageRunner())}, batch_max_batch_size=4)
    deadline = time.monotonic() + 5
    while not redis_client.xlen(results_stream("triage")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.stop(timeout_s=5.0)
    answered = redis_client.xlen(results_stream("triage"))
    waiting = redis_client.xlen(queue_stream("batch"))
    assert 0 < answered < 40
    assert answered + waiting == 40, "every task is either answered or back in its lane"
    assert redis_client.xpending(queue_stream("batch"), CONSUMER_GROUP)["pending"] == 0
    assert not runtime.alive() and not runtime.ready


def test_health_probes_follow_the_life_cycle(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runtime = runtime_factory(metrics_port=18_000 + (int(time.time() * 1000) % 2000))
    base = f"http://127.0.0.1:{runtime.settings.metrics_port}"
    for probe in ("/readyz", "/livez"):
        with urllib.request.urlopen(base + probe) as reply:
            assert reply.status == 200
    with urllib.request.urlopen(base + "/metrics") as reply:
        assert b"inferq_worker_ready 1.0" in reply.read()
    assert redis_client.hget(f"inferq:worker:{runtime.name}", "ready") == "1"
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


def test_fraud_events_translate_with_epoch_seconds_and_thresholds_decide() -> None:
    from contracts import FraudRequest, parse_request

    request = parse_request("fraud", _fraud(99.0))
    assert isinstance(request, FraudRequest)
    model = FraudModel(TinyFraudRunner(), review_threshold=0.3, decline_threshold=0.8)
    inp = model.engine_input(request)
    assert inp.transaction.timestamp == request.transaction.timestamp.timestamp()
    assert [e.amount for e in inp.history] == [12.5, 40.0]
    assert [model.decide(s) for s in (0.29, 0.3, 0.79, 0.8)] == ["approve", "review", "review", "decline"]


def test_operator_thresholds_override_the_model_card() -> None:
    from worker.models import fraud_thresholds

    card = {"review": 0.5, "decline": 0.9}
    assert fraud_thresholds(Settings(), card) == (0.5, 0.9)
    assert fraud_thresholds(Settings(fraud_decline_threshold=0.7), card) == (0.5, 0.7)
    with pytest.raises(ConfigurationError):
        FraudModel(TinyFraudRunner(), review_threshold=0.9, decline_threshold=0.5)


def test_triage_text_carries_the_structured_fields_and_results_count_acuity_from_one() -> None:
    from contracts import TriageRequest, parse_request

    request = parse_request(
        "triage", {"tenant": "ed", "note": "sob", "age": 67, "sex": "F", "vitals": {"heart_rate": 112}}
    )
    assert isinstance(request, TriageRequest)
    model = TriageModel(TinyTriageRunner())
    assert model.engine_input(request) == "age 67 F | HR 112 | sob"
    arrived = parse_request("triage", {"tenant": "ed", "note": "sob", "arrival_mode": "walk_in"})
    assert model.engine_input(arrived) == "walk-in | sob"  # spelled as the training notes spell it
    result = model.to_result(TextPrediction([0.1, 0.6, 0.1, 0.1, 0.1], 1, 2, True))
    assert result.acuity == 2 and result.chunks == 2 and result.truncated


def test_a_task_expiring_while_queued_is_answered_without_computing(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runner = SlowTriageRunner()
    runtime_factory(models={"triage": TriageModel(runner)}, batch_max_batch_size=1, batch_max_wait_ms=0.0)
    # Submitted to a running worker, so "waits" is live at fetch and expires behind "first".
    _submit(redis_client, TASK_TRIAGE, "first", {"tenant": "ed", "note": "laceration"})
    _submit(redis_client, TASK_TRIAGE, "waits", {"tenant": "ed", "note": "earache", "timeout_ms": 150})
    found = _results(redis_client, "triage", 2)
    assert found["first"].status is TaskStatus.OK
    assert found["waits"].status is TaskStatus.EXPIRED and found["waits"].timings.batch_size == 0
    assert runner.batches[WARMUP_BATCHES:] == [1], "only the first task ran"


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
    runtime = WorkerRuntime(_settings(redis_url, metrics_port=port), models={"triage": TriageModel(runner)})
    starting = threading.Thread(target=runtime.start)
    starting.start()
    try:
        deadline = time.monotonic() + 5
        while _probe(f"http://127.0.0.1:{port}/livez") != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _probe(f"http://127.0.0.1:{port}/readyz") == 503 and not runtime.ready
        runner.gate.set()
        starting.join(10.0)
        assert runtime.ready and _probe(f"http://127.0.0.1:{port}/readyz") == 200
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

    def run(self, batch: list[Tokens]) -> list[TextPrediction]:
        if self.stall:
            assert self.release.wait(10.0)
        return super().run(batch)


def test_liveness_fails_while_a_loop_is_stuck(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = StallingTriageRunner()
    runtime = runtime_factory(models={"triage": TriageModel(runner)}, batch_max_wait_ms=0.0)
    monkeypatch.setattr("worker.runtime.LOOP_STALL_S", 0.5)
    runner.stall = True
    _submit(redis_client, TASK_TRIAGE, "stuck", {"tenant": "ed", "note": "abdominal pain"})
    assert _wait(lambda: not runtime.alive()), "a hung inference thread fails liveness"
    runner.release.set()
    assert _results(redis_client, "triage", 1)["stuck"].status is TaskStatus.OK
    assert _wait(runtime.alive), "it turns again once the batch ends"


def _wait(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_kind_no_worker_serves_is_dead_lettered_by_the_delivery_count(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    _submit(redis_client, TASK_TRIAGE, "unserved", {"tenant": "ed", "note": "wheezing"})
    runtime_factory(models={"fraud": FraudModel(TinyFraudRunner(), 0.5, 0.9)}, max_deliveries=2)
    found = _results(redis_client, "triage", 1)
    assert found["unserved"].error is not None and found["unserved"].error.code.value == "too_many_deliveries"
    letters = _entries(redis_client, DEADLETTER_STREAM)
    assert [fields["task_id"] for _, fields in letters] == ["unserved"] and letters[0][1]["deliveries"] == "3"


class OverlapTriageRunner(TinyTriageRunner):
    """Counts preparations made while a forward pass runs."""

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.prepared_during_run = 0
        self.prepared = 0

    def prepare(self, text: str) -> Tokens:
        self.prepared += 1
        self.prepared_during_run += self.running
        return super().prepare(text)

    def run(self, batch: list[Tokens]) -> list[TextPrediction]:
        self.running = True
        try:
            time.sleep(0.05)
            return super().run(batch)
        finally:
            self.running = False


def test_preparing_never_overlaps_a_forward_pass(
    redis_client: redis.Redis, runtime_factory: Callable[..., WorkerRuntime]
) -> None:
    runner = OverlapTriageRunner()
    runtime_factory(models={"triage": TriageModel(runner)}, batch_max_batch_size=4, fetch_count=4)
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
    runtime_factory(
        models={"triage": TriageModel(runner)}, batch_max_batch_size=4, fetch_count=4, prepare_overlap="always"
    )
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
