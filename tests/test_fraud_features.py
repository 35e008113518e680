"""Fraud featurisation inputs: a history as EventColumns, and the numpy shortcuts featurize takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.fraud_features import Event, EventColumns, FraudInput, _median, _percentile_99, featurize
from training.fraud_sim import FraudSimulator, SimConfig

EVENTS = [
    Event(12.5, "EUR", "5411", "contactless", "DE", 1.75e9, "m-1", None),
    Event(0.9, "USD", "3100", "ecommerce", "US", 1.75e9 + 60.0, None, "dev-1"),
    Event(300.0, "EUR", "4511", "weird", "FR", 1.75e9 + 30.0, "m-1", "dev-1"),
]


def _same(a: FraudInput, b: FraudInput) -> None:
    fa, fb = featurize(a), featurize(b)
    assert torch.equal(fa.cat, fb.cat) and torch.equal(fa.num, fb.num) and fa.reasons == fb.reasons


def test_columns_are_a_sequence_of_the_same_events() -> None:
    columns = EventColumns.of(EVENTS)
    assert len(columns) == 3 and list(columns) == EVENTS and columns[-1] == EVENTS[-1]
    assert list(columns[1:]) == EVENTS[1:] and isinstance(columns[1:], EventColumns)
    assert EventColumns.of(columns) is columns
    assert len(EventColumns.of([])) == 0


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        EventColumns([1.0], ["EUR"], ["5411"], ["atm"], ["DE"], [1.0, 2.0], [None], [None])


@pytest.mark.parametrize("index", range(40))
def test_a_history_as_columns_featurizes_exactly_as_a_list(index: int) -> None:
    inp = FraudSimulator(SimConfig(seed=3)).example(index).input
    _same(inp, FraudInput(EventColumns.of(inp.history), inp.transaction))


def test_edge_inputs_featurize_the_same_as_columns() -> None:
    for history in ([], EVENTS[:1], EVENTS):
        _same(FraudInput(list(history), EVENTS[0]), FraudInput(EventColumns.of(history), EVENTS[0]))


def test_bad_values_in_columns_are_refused() -> None:
    bad = EventColumns.of([Event(float("nan"), "EUR", "5411", "atm", "DE", 1.0)])
    with pytest.raises(InputError, match="amounts"):
        featurize(FraudInput(bad, EVENTS[0]))


@pytest.mark.parametrize("seed", range(30))
def test_median_and_percentile_equal_numpys(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    counts = rng.integers(0, 30, n)
    amounts = rng.lognormal(3.0, 1.5, n)
    assert _percentile_99(counts) == np.percentile(counts, 99)
    assert _percentile_99(amounts) == np.percentile(amounts, 99)
    assert _median(amounts) == np.median(amounts)
    assert _median(counts.astype(np.float64)) == np.median(counts)


def test_remembered_ids_forget_past_their_limit() -> None:
    from engine.fraud_features import _Remembered

    calls: list[str] = []
    table = _Remembered(lambda value: calls.append(value) or len(value), limit=2)
    assert list(table.ids(["a", "bb", "a"], 3)) == [1, 2, 1] and calls == ["a", "bb"]
    assert list(table.ids(["ccc", "a"], 2)) == [3, 1] and len(table) <= 2
