"""Fraud featurisation, the sequence model, and the shipped checkpoint behind FraudRunner."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from engine.batching import BatchLimits, plan_batch, plan_passes
from engine.errors import InputError
from engine.fraud_features import CAT_VOCAB, MAX_HISTORY, N_NUMERIC, Event, FraudInput, featurize
from engine.fraud_model import FraudModelConfig, FraudTransformer, collate
from engine.fraud_runner import PASS_COST_EVENTS, FraudPrediction, load_fraud
from training.fraud_sim import FraudSimulator, SimConfig

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "fraud"
T0 = 1.75e9
HOUR = 3600.0


def _grocery_history(n: int, device: str = "phone-1") -> list[Event]:
    """A steady customer in Germany: groceries, restaurants, an online shop on their own phone."""
    out = []
    for i in range(n):
        t = T0 + i * 9 * HOUR
        if i % 5 == 4:
            out.append(Event(28.0 + i % 7, "EUR", "5999", "ecommerce", "DE", t, f"DE-5999-{i % 3:03d}", device))
        else:
            mcc = "5411" if i % 2 else "5812"
            out.append(Event(40.0 + i % 11, "EUR", mcc, "contactless", "DE", t, f"DE-{mcc}-{i % 4:03d}", None))
    return out


def _grocery(history: list[Event]) -> FraudInput:
    t = history[-1].timestamp + 20 * HOUR
    return FraudInput(history, Event(43.5, "EUR", "5411", "contactless", "DE", t, "DE-5411-001", None))


def _card_testing(history: list[Event]) -> FraudInput:
    t = history[-1].timestamp + 20 * HOUR
    burst = [
        Event(0.5 + 0.2 * k, "USD", "5999", "ecommerce", "US", t + 40.0 * k, f"US-5999-{k + 20:03d}", "bot-9")
        for k in range(8)
    ]
    txn = Event(1450.0, "USD", "5732", "ecommerce", "US", t + 600.0, "US-5732-044", "bot-9")
    return FraudInput(history + burst, txn)


@pytest.fixture(scope="module")
def runner():
    return load_fraud(MODEL_DIR, device="cpu")


def test_featurize_shapes_and_vocabulary_ranges():
    feats = featurize(_grocery(_grocery_history(50)))
    assert feats.cat.shape == (51, len(CAT_VOCAB)) and feats.cat.dtype == torch.int64
    assert feats.num.shape == (51, N_NUMERIC) and feats.num.dtype == torch.float32
    assert torch.isfinite(feats.num).all()
    for col, vocab in enumerate(CAT_VOCAB):
        assert int(feats.cat[:, col].min()) >= 1 and int(feats.cat[:, col].max()) < vocab


def test_full_history_featurizes_in_milliseconds():
    inp = FraudSimulator(SimConfig(seed=2, lengths=((MAX_HISTORY, MAX_HISTORY, 1.0),))).example(0).input
    featurize(inp)
    start = time.perf_counter()
    feats = featurize(inp)
    elapsed = time.perf_counter() - start
    assert feats.cat.shape[0] == MAX_HISTORY + 1
    # A few ms when the machine is idle; the bound leaves room for a busy CI runner.
    assert elapsed < 0.05


def test_too_long_history_is_refused():
    history = _grocery_history(MAX_HISTORY + 1)
    with pytest.raises(InputError):
        featurize(_grocery(history))


def test_reason_codes_name_the_pattern():
    assert "card_testing" in featurize(_card_testing(_grocery_history(60))).reasons
    history = _grocery_history(60)
    takeover = FraudInput(
        history, Event(900.0, "RON", "4829", "ecommerce", "RO", history[-1].timestamp + HOUR, "RO-4829-001", "new-9")
    )
    reasons = featurize(takeover).reasons
    assert {"new_device", "unusual_country", "unusual_category"} <= set(reasons)
    assert featurize(_grocery(history)).reasons == []


@pytest.mark.parametrize("attention", ["sparse", "dense"])
def test_left_padding_does_not_change_a_score(attention):
    torch.manual_seed(0)
    model = FraudTransformer(FraudModelConfig(attention=attention, n_global=8)).eval()
    short = featurize(_grocery(_grocery_history(30)))
    long = featurize(_card_testing(_grocery_history(200)))
    with torch.no_grad():
        alone = model(*collate([(short.cat, short.num)], 64))
        batched = model(*collate([(long.cat, long.num), (short.cat, short.num)], 64))
    assert batched.shape == (2,)
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=1e-5)


def test_shipped_checkpoint_loads_with_thresholds(runner):
    assert runner.name == "fraud-sparse-hybrid"  # sequence encoder fused with the card aggregates
    assert len(runner.version) == 12
    assert 0.0 < runner.thresholds["review"] <= runner.thresholds["decline"] < 1.0
    stored = json.loads((MODEL_DIR / "thresholds.json").read_text())
    assert runner.thresholds["review"] == stored["review"]


def test_card_testing_burst_scores_above_a_grocery_purchase(runner):
    history = _grocery_history(120)
    grocery, testing = runner.predict([_grocery(history), _card_testing(history)])
    assert isinstance(grocery, FraudPrediction)
    assert testing.score > grocery.score
    assert testing.score >= runner.thresholds["review"]
    assert "card_testing" in testing.reasons


def test_outputs_come_back_in_input_order_with_mixed_lengths():
    runner = load_fraud(MODEL_DIR, device="cpu", context_events=None)  # whole histories: long passes
    runner.token_budget = 4096  # forces several sub-batches
    sizes = [3000, 20, 700, 1, 64, 65, 1500]
    inputs = [
        _grocery(_grocery_history(n)) if i % 2 else _card_testing(_grocery_history(n)) for i, n in enumerate(sizes)
    ]
    prepared = [runner.prepare(inp) for inp in inputs]
    assert [p.n_tokens for p in prepared] == [n + 1 if i % 2 else n + 9 for i, n in enumerate(sizes)]
    batched = runner.run(prepared, plan_batch(prepared, runner.pass_limits, runner.pass_cost))
    one_by_one = [runner.run([p], [[(0, 0)]])[0] for p in prepared]
    assert [p.reasons for p in batched] == [p.reasons for p in one_by_one]
    for b, s in zip(batched, one_by_one, strict=True):
        assert b.score == pytest.approx(s.score, abs=1e-5)
    runner.warmup()


@pytest.mark.parametrize("attention", ["sparse", "dense"])
def test_score_equals_the_last_row_of_every_layer_run_in_full(attention):
    torch.manual_seed(0)
    model = FraudTransformer(FraudModelConfig(attention=attention, n_global=8)).eval()
    inputs = [featurize(_card_testing(_grocery_history(n))) for n in (200, 30, 70)]
    cat, num, mask = collate([(f.cat, f.num) for f in inputs], 64)
    with torch.no_grad():
        x = model.embed(cat, num) * mask.unsqueeze(-1)
        for layer in model.layers:
            x = layer(x, mask)
        want = model.head(model.ln_f(x[:, -1])).squeeze(-1)
        torch.testing.assert_close(model(cat, num, mask), want, atol=1e-5, rtol=0)


def test_sub_batches_keep_short_inputs_away_from_a_long_history():
    padded = [4096, 64, 64, 128, 64, 4096, 128]
    runs = plan_passes(padded, BatchLimits(16384, 64), PASS_COST_EVENTS)
    assert sorted(i for run in runs for i in run) == list(range(len(padded)))
    assert [sorted(padded[i] for i in run) for run in runs] == [[4096, 4096], [64, 64, 64, 128, 128]]
    capped = plan_passes(padded, BatchLimits(4096, 2), PASS_COST_EVENTS)
    assert all(len(run) <= 2 for run in capped)
    assert all(len(run) == 1 or max(padded[i] for i in run) * len(run) <= 4096 for run in capped)
    assert plan_passes([], BatchLimits(16384, 64), PASS_COST_EVENTS) == []


def test_the_model_attends_to_the_latest_context_events_of_a_featurised_history(runner):
    assert runner.context_events == 512
    inp = _card_testing(_grocery_history(1500))
    full = load_fraud(MODEL_DIR, device="cpu", context_events=None).prepare(inp)
    capped = runner.prepare(inp)
    assert full.n_tokens == 1509 and capped.n_tokens == 513
    # The kept rows are the whole history's features of the latest events, not features of a cut history.
    assert torch.equal(capped.features.num, full.features.num[-513:])
    assert torch.equal(capped.features.cat, full.features.cat[-513:])
    assert capped.features.reasons == full.features.reasons
    short = _grocery(_grocery_history(40))
    assert runner.prepare(short).n_tokens == 41
    [a, b] = runner.run([capped, runner.prepare(short)], [[(0, 0)], [(1, 0)]])
    assert a.score > 0.5 > b.score
    with pytest.raises(ValueError):
        load_fraud(MODEL_DIR, device="cpu", context_events=-1)
