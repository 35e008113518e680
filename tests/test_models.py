"""worker.models: a fraud request's history reaches the engine as columns of the same events."""

from __future__ import annotations

import pytest
import torch

from contracts import FraudRequest, TransactionEvent, parse_request
from engine.fraud_features import EventColumns, FraudInput, featurize
from training import samples
from training.fraud_sim import FraudSimulator, SimConfig
from worker.models import FraudModel, epoch_seconds, event


def _request(index: int) -> FraudRequest:
    inp = FraudSimulator(SimConfig(seed=11)).example(index).input
    request = parse_request("fraud", samples.fraud_request(inp, "t1", age_s=60.0))
    assert isinstance(request, FraudRequest)
    return request


def _model() -> FraudModel:
    return FraudModel(runner=None, review_threshold=0.5, decline_threshold=0.9)  # type: ignore[arg-type]


@pytest.mark.parametrize("index", range(12))
def test_history_columns_hold_the_events_one_by_one_conversion_gives(index: int) -> None:
    request = _request(index)
    one_by_one = [event(TransactionEvent.model_validate(item)) for item in request.history]
    inp = _model().engine_input(request)
    assert isinstance(inp.history, EventColumns)
    assert list(inp.history) == one_by_one
    assert inp.transaction == event(request.transaction)
    a, b = featurize(inp), featurize(FraudInput(one_by_one, inp.transaction))
    assert torch.equal(a.cat, b.cat) and torch.equal(a.num, b.num) and a.reasons == b.reasons


def test_an_empty_history_becomes_empty_columns() -> None:
    data = {**_request(0).model_dump(mode="json", exclude_none=True), "history": []}
    request = parse_request("fraud", data)
    inp = _model().engine_input(request)
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
