"""Served = evaluated: the shipped models answer a task exactly as their evaluation scored it.

A fixed slice of each model's held-out test set goes two ways:

- the worker path: the contract request a producer sends (`InferqClient.submit_many` → lane stream)
  → a real `WorkerRuntime` with the shipped models (fetch → decode → `parse_request` → adapter →
  runner → result) → the result entry on the reply stream;
- the evaluation code that wrote the model card (`training.train_triage.serve_predictions`,
  `training.train_fraud.served_scores`).

Both must give the same probabilities (within 1e-5). The slice is the start of the card's test split,
regenerated from the card's own configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from contracts import TaskStatus
from contracts.wire import Kind
from worker.adapters import KindAdapter, load_adapters
from worker.client import InferqClient
from worker.config import Settings
from worker.runtime import WorkerRuntime

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
N_TRIAGE = 200
N_FRAUD = 200
TOLERANCE = 1e-5


def _settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, models_dir=MODELS, device="cpu", precision="fp32", metrics_port=0,
                    log_level="WARNING", kinds=["triage", "fraud"], lanes=["realtime", "batch"])


@pytest.fixture(scope="module")
def adapters(redis_url: str) -> dict[Kind, KindAdapter]:
    return load_adapters(_settings(redis_url))


@pytest.fixture
def runtime(redis_url: str, redis_client: redis.Redis, adapters: dict[Kind, KindAdapter]) -> Iterator[WorkerRuntime]:
    worker = WorkerRuntime(_settings(redis_url), name="served-check", adapters=adapters)
    worker.start()
    try:
        yield worker
    finally:
        assert worker.stop(timeout_s=60)


def _through_worker(redis_url: str, kind: Kind, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    with InferqClient(redis_url, _settings(redis_url)) as client:
        ids = client.submit_many(kind, requests)
        answers = client.wait(ids, timeout_s=600)
    assert len(answers) == len(ids)
    results = []
    for task_id in ids:
        answer = answers[task_id]
        assert answer.status == TaskStatus.OK, answer
        results.append(json.loads(answer.model_dump_json())["result"])
    return results


def _card_config(model: str) -> dict[str, Any]:
    return dict(json.loads((MODELS / model / "metrics.json").read_text()))


def test_triage_served_equals_evaluated(redis_url: str, runtime: WorkerRuntime) -> None:
    from training import served
    from training.train_triage import TrainConfig, make_splits, serve_predictions

    card = _card_config("triage")["config"]
    cfg = TrainConfig(out=MODELS / "triage", n_train=int(card["n_train"]), n_val=int(card["n_val"]),
                      n_test=int(card["n_test"]), seed=int(card["seed"]))
    examples = make_splits(cfg).test[:N_TRIAGE]
    requests = [served.triage_payload(example) for example in examples]

    results = _through_worker(redis_url, "triage", requests)
    evaluated = serve_predictions(MODELS / "triage", examples, "fp32")

    worst = max(
        abs(a - b)
        for result, probs in zip(results, evaluated["probabilities"], strict=True)
        for a, b in zip(result["probabilities"], probs, strict=True)
    )
    assert worst <= TOLERANCE
    assert [r["acuity"] - 1 for r in results] == evaluated["pred"].tolist()
    # The slice exercises what the fix is about: structured numbers and chunked long notes.
    assert sum(e.age_years is not None for e in examples) > N_TRIAGE // 2
    assert sum(bool(e.vitals) for e in examples) > N_TRIAGE // 4


def test_fraud_served_equals_evaluated(redis_url: str, runtime: WorkerRuntime) -> None:
    from training import served
    from training.train_fraud import held_out_inputs, served_scores

    inputs = held_out_inputs(_card_config("fraud")["train_config"], N_FRAUD)
    requests = [served.fraud_payload(inp) for inp in inputs]

    results = _through_worker(redis_url, "fraud", requests)
    evaluated = served_scores(MODELS / "fraud", inputs)

    worst = max(abs(r["score"] - float(s)) for r, s in zip(results, evaluated, strict=True))
    assert worst <= TOLERANCE
    assert max(len(inp.history) for inp in inputs) > 512  # long histories take the sparse path
