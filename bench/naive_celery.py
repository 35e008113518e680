"""The baseline bench/e2e.py measures inferq against: a naive Celery worker, one task per forward pass.

Stock everything: kombu's Redis list transport as the broker (BRPOP plus the `unacked` hash), the
stock Redis result backend, the prefork pool. Each task validates its request against the same
contract, runs the same engine runner on a batch of one, and returns the same result. The models
load once per pool process, as anyone would write it, so the comparison measures per-task
dispatch and batch-of-one inference, not model loading.

    NAIVE_REDIS_URL=redis://127.0.0.1:6379/11 celery -A bench.naive_celery worker -c 2
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from contracts import parse_request
from contracts.wire import Kind
from worker.adapters import KindAdapter, load_adapters
from worker.config import Settings

REDIS_URL = os.environ.get("NAIVE_REDIS_URL", "redis://127.0.0.1:6379/11")
TASK_TRIAGE = "naive.triage"
TASK_FRAUD = "naive.fraud"

app = Celery("naive", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)

_models: dict[Kind, KindAdapter] = {}


@worker_process_init.connect
def _load_models(**_: Any) -> None:
    """Load and warm up both models in each pool process before it takes a task."""
    settings = Settings(kinds=["triage", "fraud"], redis_url=REDIS_URL)
    _models.update(load_adapters(settings))
    for model in _models.values():
        model.warmup()


def infer(kind: Kind, request: dict[str, Any]) -> dict[str, Any]:
    """One task, start to end: validate, prepare, a forward pass over a batch of one, the result."""
    if not _models:
        _load_models()
    model = _models[kind]
    [result] = model.compute([model.prepare(parse_request(kind, request))])
    if isinstance(result, ValueError):
        raise result
    return result.model_dump(mode="json")


@app.task(name=TASK_TRIAGE)
def triage(request: dict[str, Any]) -> dict[str, Any]:
    return infer("triage", request)


@app.task(name=TASK_FRAUD)
def fraud(request: dict[str, Any]) -> dict[str, Any]:
    return infer("fraud", request)
