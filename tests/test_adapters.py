"""worker.adapters: a request reaches the engine as its typed input, every field intact.

A fraud request's history becomes columns of the same events; a triage request's age and vitals
reach the runner as numbers (the structured features), not only as rendered text.
"""

from __future__ import annotations

import pytest
import torch

from contracts import FraudRequest, TransactionEvent, TriageRequest, parse_request
from engine.fraud_features import EventColumns, FraudInput, featurize
from engine.triage_input import TriageInput, structured_features
from training import samples
from training.fraud_sim import FraudSimulator, SimConfig
from worker.adapters import epoch_seconds, event, fraud_input, triage_input


def _request(index: int) -> FraudRequest:
    inp = FraudSimulator(SimConfig(seed=11)).example(index).input
    request = parse_request("fraud", samples.fraud_request(inp, "t1", age_s=60.0))
    assert isinstance(request, FraudRequest)
    return request


@pytest.mark.parametrize("index", range(12))
def test_history_columns_hold_the_events_one_by_one_conversion_gives(index: int) -> None:
    request = _request(index)
    one_by_one = [event(TransactionEvent.model_validate(item)) for item in request.history]
    inp = fraud_input(request)
    assert isinstance(inp.history, EventColumns)
    assert list(inp.history) == one_by_one
    assert inp.transaction == event(request.transaction)
    a, b = featurize(inp), featurize(FraudInput(one_by_one, inp.transaction))
    assert torch.equal(a.cat, b.cat) and torch.equal(a.num, b.num) and a.reasons == b.reasons


def test_an_empty_history_becomes_empty_columns() -> None:
    data = {**_request(0).model_dump(mode="json", exclude_none=True), "history": []}
    request = parse_request("fraud", data)
    inp = fraud_input(request)
    assert len(inp.history) == 0 and featurize(inp).n_events == 1


def test_epoch_seconds_equal_timestamp_in_every_zone() -> None:
    from datetime import UTC, datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)), ZoneInfo("Europe/Berlin")]
    base = datetime(2026, 3, 29, 0, 30, 0, 250_001, tzinfo=UTC)
    moments = [(base + timedelta(minutes=37 * i)).astimezone(zones[i % len(zones)]) for i in range(60)]
    for sample in (moments, moments[1:], sorted(moments, key=lambda m: m.utcoffset() or timedelta(0)), []):
        assert epoch_seconds(sample) == [m.timestamp() for m in sample]
    zulu = _request(1).history
    assert epoch_seconds([e["timestamp"] for e in zulu]) == [e["timestamp"].timestamp() for e in zulu]


def test_a_triage_request_reaches_the_engine_with_its_numbers() -> None:
    request = parse_request("triage", {
        "tenant": "t1", "note": "CP x45 min, pressure, goes to L jaw", "age": 67, "sex": "F",
        "arrival_mode": "ems", "vitals": {"heart_rate": 112, "systolic_bp": 94, "diastolic_bp": 60,
                                          "spo2": 91.5, "temperature_c": 38.6, "pain": 8},
    })
    assert isinstance(request, TriageRequest)
    inp = triage_input(request)
    assert inp == TriageInput(
        note="CP x45 min, pressure, goes to L jaw", age_years=67.0, sex="F", arrival_mode="EMS",
        vitals={"heart_rate": 112.0, "systolic_bp": 94.0, "diastolic_bp": 60.0, "spo2": 91.5,
                "temperature_c": 38.6, "pain": 8.0},
    )
    features = structured_features(inp)
    assert features[1] == 1.0 and features.count(1.0) >= 7  # age and six vitals present as numbers


def test_a_bare_triage_note_has_no_structured_numbers() -> None:
    request = parse_request("triage", {"tenant": "t1", "note": "sore throat x2 days"})
    assert isinstance(request, TriageRequest)
    assert structured_features(triage_input(request)) == structured_features(None)
