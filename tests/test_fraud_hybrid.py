"""The hybrid fraud model: sequence + merchant memory + card aggregates, its evidence, its result fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contracts import FraudResult, TaskResultMessage
from contracts.results import Timings
from engine.errors import PrecisionUnavailable
from engine.fraud_aggregates import AGGREGATE_FEATURES, N_AGGREGATES, card_aggregates
from engine.fraud_features import Event, FraudInput, featurize
from engine.fraud_model import FraudModelConfig, FraudTransformer, collate
from engine.fraud_runner import AggregateEvidence, EventEvidence, FraudPrediction, FraudRunner, load_fraud
from training.train_fraud import warm_start
from worker.adapters import FraudAdapter, fraud_evidence

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "fraud"
T0 = 1.75e9
HOUR = 3600.0
FUSED = {"merchant_memory": True, "n_aggregates": N_AGGREGATES, "n_global": 8}


def _history(n: int) -> list[Event]:
    return [
        Event(30.0 + i % 9, "EUR", "5411" if i % 2 else "5812", "contactless", "DE", T0 + i * 9 * HOUR,
              f"DE-5411-{i % 4:03d}", None)
        for i in range(n)
    ]


def _testing(n: int) -> FraudInput:
    history = _history(n)
    t = history[-1].timestamp + 20 * HOUR
    burst = [Event(0.5, "USD", "5999", "ecommerce", "US", t + 40.0 * k, f"US-5999-{k:03d}", "bot") for k in range(8)]
    return FraudInput(history + burst, Event(1450.0, "USD", "5732", "ecommerce", "US", t + 600.0, "US-5732-1", "bot"))


def _batch(inputs: list[FraudInput]) -> tuple[torch.Tensor, ...]:
    feats = [featurize(inp) for inp in inputs]
    cat, num, mask = collate([(f.cat, f.num) for f in feats], 64)
    agg = torch.from_numpy(np.stack([card_aggregates(inp.history, inp.transaction) for inp in inputs]))
    return cat, num, mask, agg


@pytest.mark.parametrize("overrides", [FUSED, {"use_sequence": False, "n_aggregates": N_AGGREGATES}])
def test_left_padding_does_not_change_a_hybrid_score(overrides: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = FraudTransformer(FraudModelConfig(**overrides)).eval()  # type: ignore[arg-type]
    short, long = _testing(20), _testing(150)
    with torch.no_grad():
        alone = model(*_batch([short]))
        batched = model(*_batch([long, short]))
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=1e-5)


def test_a_model_needs_the_parts_it_was_built_with() -> None:
    with pytest.raises(ValueError):
        FraudModelConfig(use_sequence=False)
    model = FraudTransformer(FraudModelConfig(**FUSED))  # type: ignore[arg-type]
    cat, num, mask, _ = _batch([_testing(10)])
    with pytest.raises(ValueError):
        model(cat, num, mask)


def test_explain_returns_the_forward_logits_and_attributions_per_event_and_aggregate() -> None:
    torch.manual_seed(0)
    model = FraudTransformer(FraudModelConfig(**FUSED)).eval()  # type: ignore[arg-type]
    inputs = _batch([_testing(100), _testing(30)])
    with torch.inference_mode():  # a caller's inference mode does not stop the attribution
        logits, events, aggregates = model.explain(*inputs)
        forward = model(*inputs)
    torch.testing.assert_close(logits, forward, atol=1e-6, rtol=0)
    assert events.shape == inputs[2].shape and aggregates is not None
    assert aggregates.shape == (2, N_AGGREGATES)
    assert torch.all(events[~inputs[2]] == 0)  # padding is never evidence
    assert torch.isfinite(events).all() and events.abs().sum() > 0


def test_the_warm_started_hybrid_scores_as_the_aggregates_model() -> None:
    torch.manual_seed(0)
    aggregates = FraudTransformer(FraudModelConfig(use_sequence=False, n_aggregates=N_AGGREGATES)).eval()
    aggregates.set_aggregate_scale(torch.rand(N_AGGREGATES), torch.rand(N_AGGREGATES) + 0.5)
    hybrid = FraudTransformer(FraudModelConfig(**FUSED)).eval()  # type: ignore[arg-type]
    hybrid.set_aggregate_scale(aggregates.agg_mean, aggregates.agg_std)
    warm_start(hybrid, aggregates)
    inputs = _batch([_testing(100), _testing(30)])
    with torch.no_grad():
        torch.testing.assert_close(hybrid(*inputs), aggregates(*inputs), atol=1e-5, rtol=1e-5)


def _runner(explain_top: int = 3, explain_from: float | None = 0.0) -> FraudRunner:
    torch.manual_seed(0)
    model = FraudTransformer(FraudModelConfig(**FUSED))  # type: ignore[arg-type]
    return FraudRunner(model, {"review": 0.5, "decline": 0.9}, "test", torch.device("cpu"),
                       context_events=64, explain_top=explain_top, explain_from=explain_from)


def test_evidence_only_for_flagged_scores_and_scores_unchanged() -> None:
    inputs = [_testing(n) for n in (40, 120, 300)]
    plain = [p.score for p in _runner(explain_top=0).predict(inputs)]
    cut = sorted(plain)[1]  # the two highest scores are flagged, the lowest is not
    flagged = _runner(explain_from=cut).predict(inputs)
    assert [p.score for p in flagged] == pytest.approx(plain, abs=1e-6)
    assert [bool(p.events or p.aggregates) for p in flagged] == [s >= cut for s in plain]
    everything = _runner().predict(inputs)
    for a, b in zip(flagged, everything, strict=True):
        if a.events or a.aggregates:  # the same evidence as when the whole batch is explained
            assert [e.index for e in a.events] == [e.index for e in b.events]
            assert [x.name for x in a.aggregates] == [x.name for x in b.aggregates]


def test_runner_evidence_points_at_history_events_and_named_aggregates() -> None:
    runner = _runner()
    inp = _testing(300)
    [with_evidence] = runner.predict([inp])
    [plain] = _runner(explain_top=0).predict([inp])
    assert with_evidence.score == pytest.approx(plain.score, abs=1e-6)
    assert plain.events == [] and plain.aggregates == []
    assert 0 < len(with_evidence.events) <= 3 and 0 < len(with_evidence.aggregates) <= 3
    history_ts = [e.timestamp for e in inp.history]
    for evidence in with_evidence.events:
        # Within the model's context (the latest 64 events), indexed in the whole history.
        assert len(inp.history) - 64 <= evidence.index < len(inp.history)
        assert evidence.timestamp == history_ts[evidence.index] and evidence.weight > 0
    weights = [a.weight for a in with_evidence.aggregates]
    assert weights == sorted(weights, reverse=True)
    assert all(a.name in AGGREGATE_FEATURES for a in with_evidence.aggregates)


def test_fraud_result_evidence_is_optional_and_absent_when_empty() -> None:
    adapter = FraudAdapter(_runner(), 0.5, 0.9)
    bare = adapter.result(FraudPrediction(0.95, ["velocity"]))
    assert "evidence_events" not in bare.model_dump() and bare.decision == "decline"
    prediction = FraudPrediction(0.6, ["card_testing"], [EventEvidence(4, T0, 0.8)],
                                 [AggregateEvidence("log_small_online_1h", 1.9, 2.2)])
    result = adapter.result(prediction)
    assert fraud_evidence(prediction).keys() == {"evidence_events", "evidence_aggregates"}
    message = TaskResultMessage.ok("t-1", result, model="fraud@x", timings=Timings.none(), finished_at=1)
    wire = json.loads(message.model_dump_json())
    assert wire["result"]["evidence_events"] == [{"index": 4, "timestamp": "2025-06-15T15:06:40Z", "weight": 0.8}]
    assert TaskResultMessage.model_validate_json(message.model_dump_json()) == message
    # A v1 result (no evidence) still parses.
    v1 = {"score": 0.1, "decision": "approve", "reasons": []}
    assert FraudResult.model_validate_json(json.dumps(v1)).evidence_events is None


def test_shipped_model_gives_evidence_and_refuses_ungated_precisions() -> None:
    runner = load_fraud(MODEL_DIR, device="cpu")
    [prediction] = runner.predict([_testing(200)])
    assert prediction.score >= runner.thresholds["review"]
    assert prediction.events and all(e.index < 208 for e in prediction.events)
    if runner.model.cfg.n_aggregates:
        assert prediction.aggregates
    with pytest.raises(PrecisionUnavailable):
        load_fraud(MODEL_DIR, device="cpu", precision="int8")
