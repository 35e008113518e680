"""Model inputs exactly as a worker builds them, for training and evaluation.

A generated example becomes the JSON request a producer would send (`training.samples`); like a
worker, this module decodes that JSON and validates it with the contract (`contracts.parse_request`),
then builds the engine's input with the worker's own adapter function (`worker.adapters.triage_input`,
`worker.adapters.fraud_input`). Training, evaluation and serving therefore share one function per
kind: whatever the contract rounds or maps (an age to three decimals, "private vehicle" to the
`walk_in` arrival code) the model sees the same way in all three places.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from contracts import FraudRequest, TriageRequest, parse_request
from engine.fraud_features import FraudInput
from engine.triage_input import TriageInput
from training import samples
from training.triage_data import TriageExample
from worker.adapters import fraud_input, triage_input

TENANT = "evaluation"


def _as_worker_decodes(payload: dict[str, Any]) -> dict[str, Any]:
    """The request object a worker holds after decoding the entry's JSON."""
    decoded: dict[str, Any] = orjson.loads(orjson.dumps(payload))
    return decoded


def triage_payload(example: TriageExample) -> dict[str, Any]:
    """The JSON request a producer would send for this example."""
    return samples.triage_request(example, TENANT)


def triage_request(example: TriageExample) -> TriageRequest:
    request = parse_request("triage", _as_worker_decodes(triage_payload(example)))
    assert isinstance(request, TriageRequest)
    return request


def triage_inputs(examples: Iterable[TriageExample]) -> list[TriageInput]:
    """The engine inputs a worker builds for these examples."""
    return [triage_input(triage_request(example)) for example in examples]


def fraud_payload(inp: FraudInput) -> dict[str, Any]:
    """The JSON request for this simulated transaction, at its own time (no shift: the hour of day
    and the gaps are features)."""
    return samples.fraud_request_at(inp, TENANT)


def fraud_request(inp: FraudInput) -> FraudRequest:
    request = parse_request("fraud", _as_worker_decodes(fraud_payload(inp)))
    assert isinstance(request, FraudRequest)
    return request


def fraud_inputs(inputs: Iterable[FraudInput]) -> list[FraudInput]:
    """The engine inputs a worker builds for these simulated transactions."""
    return [fraud_input(fraud_request(inp)) for inp in inputs]
