"""Synthetic traffic for the demo and benchmarks is valid under the wire contract."""

from __future__ import annotations

import itertools

from contracts import FraudRequest, TriageRequest, parse_request
from training import samples
from training.fraud_sim import FraudSimulator, SimConfig


def test_triage_samples_parse_and_keep_structured_fields() -> None:
    requests = list(itertools.islice(samples.triage_stream(3, "t"), 60))
    parsed = [parse_request("triage", r) for r in requests]
    assert all(isinstance(p, TriageRequest) for p in parsed)
    assert any(r.get("vitals") for r in requests) and any(r.get("arrival_mode") for r in requests)


def test_fraud_samples_parse_even_for_the_longest_histories() -> None:
    sim = FraudSimulator(SimConfig(seed=5, lengths=((4096, 4096, 1.0),)))
    request = samples.fraud_request(sim.example(0).input, "t", age_s=60.0)
    parsed = parse_request("fraud", request)
    assert isinstance(parsed, FraudRequest)
    assert 0 < len(parsed.history) <= 4096


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert samples.rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
