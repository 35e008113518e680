"""The card-transaction simulator: reproducible, and every pattern carries its evidence."""

from __future__ import annotations

from collections import Counter

import pytest

from engine.fraud_features import SMALL_AMOUNT
from training.fraud_sim import FRAUD_PATTERNS, LEGIT_SCENARIOS, FraudSimulator, SimConfig

SHORT = ((16, 96, 1.0),)


@pytest.fixture(scope="module")
def fraud_examples():
    sim = FraudSimulator(SimConfig(seed=3, fraud_rate=1.0, lengths=SHORT))
    return list(sim.examples(80))


def _by_pattern(examples, name):
    found = [e for e in examples if e.pattern == name]
    assert found, f"no {name} example among {Counter(e.pattern for e in examples)}"
    return found


def test_same_seed_same_examples_and_other_seed_differs():
    a = FraudSimulator(SimConfig(seed=7)).example(11)
    b = FraudSimulator(SimConfig(seed=7)).example(11)
    c = FraudSimulator(SimConfig(seed=8)).example(11)
    assert a == b
    assert a.input.history != c.input.history


def test_an_example_does_not_depend_on_the_ones_before_it():
    sim = FraudSimulator(SimConfig(seed=5, lengths=SHORT))
    in_sequence = list(sim.examples(6))[5]
    assert FraudSimulator(SimConfig(seed=5, lengths=SHORT)).example(5) == in_sequence


def test_every_fraud_pattern_and_legit_scenario_appears(fraud_examples):
    assert {e.pattern for e in fraud_examples} == set(FRAUD_PATTERNS)
    assert all(e.label == 1 for e in fraud_examples)
    legit = list(FraudSimulator(SimConfig(seed=3, fraud_rate=0.0, lengths=SHORT)).examples(150))
    assert {e.pattern for e in legit} == set(LEGIT_SCENARIOS)
    assert all(e.label == 0 for e in legit)


def test_histories_are_time_ordered_and_lengths_in_range(fraud_examples):
    for ex in fraud_examples:
        times = [e.timestamp for e in ex.input.history]
        assert times == sorted(times)
        assert ex.input.transaction.timestamp >= times[-1]
        assert 16 <= len(ex.input.history) <= 96


def test_full_length_history():
    ex = FraudSimulator(SimConfig(seed=1, lengths=((4096, 4096, 1.0),))).example(0)
    assert len(ex.input.history) == 4096


def test_card_testing_has_a_burst_of_tiny_online_charges_before_a_large_one(fraud_examples):
    for ex in _by_pattern(fraud_examples, "card_testing"):
        t = ex.input.transaction.timestamp
        tiny = [
            e for e in ex.input.history
            if e.amount < SMALL_AMOUNT and e.channel == "ecommerce" and t - e.timestamp < 3600
        ]  # fmt: skip
        assert len(tiny) >= 3
        assert len({e.merchant_id for e in tiny}) >= 2
        assert ex.input.transaction.amount >= 150


def test_account_takeover_uses_a_device_never_seen(fraud_examples):
    for ex in _by_pattern(fraud_examples, "account_takeover"):
        seen = {e.device_id for e in ex.input.history}
        assert ex.input.transaction.device_id is not None
        assert ex.input.transaction.device_id not in seen


def test_compromised_merchant_fraud_follows_a_visit_to_a_leaking_merchant(fraud_examples):
    sim = FraudSimulator(SimConfig(seed=3))
    leaking = {m for ms in sim.world.compromised.values() for m in ms}
    for ex in _by_pattern(fraud_examples, "compromised_merchant"):
        assert leaking & {e.merchant_id for e in ex.input.history}


def test_velocity_is_a_burst_within_two_hours(fraud_examples):
    for ex in _by_pattern(fraud_examples, "velocity"):
        t = ex.input.transaction.timestamp
        assert sum(t - e.timestamp <= 2 * 3600 for e in ex.input.history) >= 5


def test_geo_impossibility_is_card_present_in_two_countries_within_hours(fraud_examples):
    for ex in _by_pattern(fraud_examples, "geo_impossible"):
        txn = ex.input.transaction
        assert txn.channel in ("card_present", "atm")
        recent = [e for e in ex.input.history if txn.timestamp - e.timestamp <= 5 * 3600]
        assert any(e.country != txn.country and e.channel != "ecommerce" for e in recent)
