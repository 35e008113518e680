"""Card aggregates: the incremental fold equals the batch computation, the packed form round-trips,
and the features say what they claim."""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine.fraud_aggregates import (
    AGGREGATE_FEATURES,
    COUNTRY_SLOTS,
    N_AGGREGATES,
    PACKED_SIZE,
    RECENT_EVENTS,
    STATE_DTYPE,
    CardState,
    aggregate_features,
    card_aggregates,
)
from engine.fraud_features import Event, EventColumns
from training.fraud_sim import FraudSimulator, SimConfig

T0 = 1.75e9
HOUR = 3600.0


def _assert_same_state(a: CardState, b: CardState) -> None:
    for name in STATE_DTYPE.names or ():
        x, y = a.record[name], b.record[name]
        if x.dtype.kind == "f":
            # Sums added in the same order agree to the last bit; the tolerance covers libm vs numpy
            # vector math in log1p/sin/cos.
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=0, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def _fold(events: list[Event]) -> CardState:
    state = CardState()
    for event in events:
        state.update(event)
    return state


SIM = FraudSimulator(SimConfig(seed=11, lengths=((1, 600, 0.9), (600, 2000, 0.1))))


@pytest.mark.parametrize("index", range(25))
def test_incremental_fold_equals_the_batch_computation(index: int) -> None:
    example = SIM.example(index)
    history = list(example.input.history)
    batch = CardState.from_history(history)
    folded = _fold(history)
    _assert_same_state(folded, batch)
    txn = example.input.transaction
    np.testing.assert_allclose(aggregate_features(folded, txn), aggregate_features(batch, txn), rtol=1e-6)
    # A history given as columns (the worker's form) builds the same state.
    _assert_same_state(CardState.from_history(EventColumns.of(history)), batch)


@pytest.mark.parametrize("index", range(10))
def test_events_out_of_time_order_are_placed_where_they_belong(index: int) -> None:
    history = list(SIM.example(100 + index).input.history)
    shuffled = history.copy()
    random.Random(index).shuffle(shuffled)
    _assert_same_state(_fold(shuffled), CardState.from_history(history))


LONG = list(FraudSimulator(SimConfig(seed=7, lengths=((4200, 4400, 1.0),))).example(0).input.history)


def _varied(events: list[Event], kind: str, rng: random.Random) -> list[Event]:
    """Copies of the events, with missing ids, ties, late events or unusual values."""
    out = [
        Event(e.amount, e.currency, e.mcc, e.channel, e.country, e.timestamp, e.merchant_id, e.device_id)
        for e in events
    ]
    for i, e in enumerate(out):
        if kind == "missing_ids":
            e.merchant_id = None if rng.random() < 0.4 else e.merchant_id
            e.device_id = None if rng.random() < 0.5 else e.device_id
        elif kind == "distinct_ids":
            e.merchant_id, e.device_id = f"m{i}", f"d{i}"
        elif kind == "ties_and_late" and i and rng.random() < 0.1:
            e.timestamp = out[i - 1].timestamp if rng.random() < 0.5 else e.timestamp - rng.uniform(0, 30 * 86400)
        elif kind == "unusual" and rng.random() < 0.2:
            e.mcc, e.channel = rng.choice(["0000", "3050", "4511", "x"]), rng.choice(["moto", "", "atm"])
            e.country, e.amount = rng.choice(["XYZ", "", "de", "ÄÖ"]), rng.choice([0.0, 1.999, 2.0, 1e7])
    if kind == "shuffled":
        rng.shuffle(out)
    return out


@pytest.mark.parametrize("kind", ["ordered", "missing_ids", "distinct_ids", "ties_and_late", "unusual", "shuffled"])
@pytest.mark.parametrize("length", [1, 2, 255, 256, 257, 4096])
def test_batch_state_equals_the_fold_over_varied_histories(length: int, kind: str) -> None:
    """The batch build is pinned to `update`, event by event in the given order, whatever the events."""
    history = _varied(LONG[-length:], kind, random.Random(length))
    folded = _fold(history)
    for form in (history, EventColumns.of(history)):
        _assert_same_state(CardState.from_history(form), folded)
    last = max(e.timestamp for e in history)
    txn = Event(12.5, "EUR", "5411", "contactless", history[-1].country, last + 60.0, history[-1].merchant_id)
    np.testing.assert_allclose(card_aggregates(history, txn), aggregate_features(folded, txn), rtol=1e-6)


def test_one_late_event_lands_in_the_recent_window_in_time_order() -> None:
    events = [Event(10.0, "EUR", "5411", "contactless", "DE", T0 + i * HOUR, f"m{i}") for i in range(5)]
    late = Event(1.0, "EUR", "5999", "ecommerce", "DE", T0 + 2.5 * HOUR, "late")
    state = _fold([*events, late])
    k = int(state["recent_n"])
    assert list(state["recent_ts"][:k]) == sorted(e.timestamp for e in [*events, late])
    assert float(state["last_ts"]) == events[-1].timestamp
    _assert_same_state(state, CardState.from_history(sorted([*events, late], key=lambda e: e.timestamp)))


def test_packed_form_has_a_fixed_size_and_round_trips() -> None:
    empty = CardState()
    assert len(empty.to_bytes()) == PACKED_SIZE
    state = CardState.from_history(list(SIM.example(3).input.history))
    packed = state.to_bytes()
    assert len(packed) == PACKED_SIZE < 16_384
    restored = CardState.from_bytes(packed)
    assert restored.to_bytes() == packed
    _assert_same_state(restored, state)
    restored.update(Event(5.0, "EUR", "5411", "atm", "DE", T0))  # a restored state is writable
    with pytest.raises(ValueError):
        CardState.from_bytes(packed[:-1])
    with pytest.raises(ValueError):
        CardState.from_bytes(b"XXXX" + packed[4:])


def test_recent_window_and_country_slots_stay_bounded() -> None:
    events = [
        Event(1.0 + i, "EUR", "5411", "ecommerce", f"{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}", T0 + 60.0 * i,
              f"m{i}", f"d{i % 7}")
        for i in range(RECENT_EVENTS + 40)
    ]
    state = _fold(events)
    _assert_same_state(state, CardState.from_history(events))
    assert int(state["recent_n"]) == RECENT_EVENTS
    assert float(state["recent_ts"][0]) == events[40].timestamp
    assert int((state["country_code"] > 0).sum()) == COUNTRY_SLOTS
    assert int(state["country_other"]) == len(events) - COUNTRY_SLOTS
    assert state.n == len(events)


def _features(history: list[Event], txn: Event) -> dict[str, float]:
    values = card_aggregates(history, txn)
    assert values.shape == (N_AGGREGATES,) and np.isfinite(values).all()
    return dict(zip(AGGREGATE_FEATURES, values.tolist(), strict=True))


def test_features_name_velocity_novelty_and_amount() -> None:
    history = [
        Event(40.0 + i % 5, "EUR", "5411", "contactless", "DE", T0 + i * 20 * HOUR, f"DE-{i % 3}", None)
        for i in range(60)
    ]
    t = history[-1].timestamp + 10 * HOUR
    usual = _features(history, Event(42.0, "EUR", "5411", "contactless", "DE", t, "DE-1", None))
    assert usual["new_merchant"] == usual["new_country"] == usual["new_device"] == 0.0
    assert usual["home_country"] == 1.0 and usual["log_count_1h"] == 0.0
    assert abs(usual["amount_z"]) < 1.0
    burst = [Event(0.5, "USD", "5999", "ecommerce", "US", t - 60.0 * k, f"US-{k}", "bot") for k in range(6, 0, -1)]
    attack = _features(history + burst, Event(900.0, "USD", "5732", "ecommerce", "RO", t, "RO-1", "bot-2"))
    assert attack["log_count_10m"] == pytest.approx(np.log1p(6))
    assert attack["log_small_online_1h"] == pytest.approx(np.log1p(6))
    assert attack["log_merchants_1h"] == pytest.approx(np.log1p(6))
    assert attack["new_merchant"] == attack["new_country"] == attack["new_device"] == 1.0
    assert attack["amount_z"] > 3.0 and attack["risky_category"] == 1.0
    assert attack["present_elsewhere"] == 1.0  # the card was last used in person in Germany


def test_an_empty_history_gives_finite_features() -> None:
    features = _features([], Event(25.0, "EUR", "5411", "atm", "DE", T0, None, None))
    assert features["log_n_history"] == 0.0 and features["home_country"] == 1.0
