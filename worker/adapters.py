"""Per-kind adapters: contract request -> engine input, engine prediction -> contract result.

The engine takes its own typed inputs (`TriageInput`, `FraudInput`) and returns its own predictions
(`TriagePrediction`, `FraudPrediction`); it never sees a pydantic model. Each adapter owns its kind's
runner, builds the engine input from a request, and has the batch former (`engine.batching`) plan
the forward passes the runner executes. The runtime sees one `KindAdapter` per kind.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import itemgetter, sub
from pathlib import Path
from typing import Any, Literal

from contracts import EventFields, FraudRequest, FraudResult, ReasonCode, TriageRequest, TriageResult, parse_request
from contracts.requests import Request, TransactionEvent
from contracts.results import EXPLAIN_FIELDS, EvidenceAggregate, EvidenceEvent, SafetyReason, VitalOutOfRange
from contracts.wire import Kind
from engine.batching import plan_batch
from engine.fraud_features import Event, EventColumns, FraudInput
from engine.fraud_runner import FraudPrediction, FraudRunner, PreparedFraud
from engine.triage_input import TriageInput
from engine.triage_runner import PreparedTriage, TriagePrediction, TriageRunner
from engine.triage_safety import SafetyAssessment
from worker.config import Settings
from worker.errors import ConfigurationError

Result = TriageResult | FraudResult
Prepared = PreparedTriage | PreparedFraud
Decision = Literal["approve", "review", "decline"]


class KindAdapter(ABC):
    """One task kind's model as the runtime sees it: prepare a request, compute a batch."""

    kind: Kind

    @property
    @abstractmethod
    def model_id(self) -> str:
        """`name@version`, the `model` field of every result this model computes."""

    @abstractmethod
    def prepare(self, request: Request) -> Prepared:
        """The engine's prepared input for one request; raises engine.errors.InputError."""

    @abstractmethod
    def compute(self, batch: Sequence[Prepared]) -> list[Result | ValueError]:
        """One forward pass plan over a batch; per item its result, or the ValueError of an output
        that broke the result contract. Raises when the model itself fails."""

    @abstractmethod
    def warmup(self) -> None:
        """The engine's warm-up, then one sample request through the whole contract path."""


def _results(outputs: Sequence[Any], to_result: Any) -> list[Any]:
    results: list[Any] = []
    for output in outputs:
        try:
            results.append(to_result(output))
        except ValueError as exc:
            results.append(exc)
    return results


# ---------------------------------------------------------------------------------------------
# Triage


# Contract arrival codes as the triage text spells them, the way intake notes (and the training
# notes) write them; an unknown spelling would be a word the model never saw in that position.
ARRIVAL_PHRASES: dict[str, str] = {
    "walk_in": "walk-in",
    "ems": "EMS",
    "transfer": "transfer",
    "police": "police",
    "other": "other",
}


def triage_input(request: TriageRequest) -> TriageInput:
    """The engine input of a triage request: the note, age, sex, vitals as numbers, arrival mode."""
    vitals: dict[str, float | None] = {}
    if request.vitals is not None:
        vitals = {k: float(v) for k, v in request.vitals.model_dump(exclude_none=True).items()}
    return TriageInput(
        note=request.note,
        age_years=request.age,
        sex=request.sex,
        vitals=vitals,
        arrival_mode=ARRIVAL_PHRASES[request.arrival_mode] if request.arrival_mode else None,
    )


# Default of `Settings.triage_review_below`, for callers without settings.
REVIEW_BELOW = 0.6


def safety_reasons(assessment: SafetyAssessment | None) -> list[SafetyReason]:
    """The safety-net rules that fired, with where in the note (character offsets) they matched."""
    if assessment is None:
        return []
    return [
        SafetyReason(rule=rule.rule_id, level=rule.level, decision_point=rule.decision_point,
                     start=rule.span[0] if rule.span else None, end=rule.span[1] if rule.span else None,
                     vital=rule.vital_key)
        for rule in assessment.fired
    ]


def vitals_out_of_range(assessment: SafetyAssessment | None) -> list[VitalOutOfRange]:
    if assessment is None:
        return []
    return [
        VitalOutOfRange(vital=flag.key, value=flag.value, threshold=flag.threshold, source=flag.source,
                        start=flag.span[0] if flag.span else None, end=flag.span[1] if flag.span else None)
        for flag in assessment.vitals_out_of_range
    ]


def triage_result(prediction: TriagePrediction, review_below: float = REVIEW_BELOW) -> TriageResult:
    """The contract result with its explanation (see `without_explanation` for requests without `explain`)."""
    # Label index 0 is ESI 1 (most urgent); the head was trained on levels in that order.
    model_index = prediction.model_label_index if prediction.model_label_index >= 0 else prediction.label_index
    return TriageResult(
        acuity=prediction.label_index + 1,
        probabilities=list(prediction.probabilities),
        truncated=prediction.truncated,
        chunks=prediction.chunks,
        needs_review=max(prediction.probabilities) < review_below or prediction.net_changed,
        model_acuity=model_index + 1,
        reasons=safety_reasons(prediction.safety),
        vitals_out_of_range=vitals_out_of_range(prediction.safety),
    )


def without_explanation(result: Result) -> Result:
    """A triage result as a request without `explain` gets it: the v1 fields only."""
    if isinstance(result, TriageResult):
        return result.model_copy(update=dict.fromkeys(EXPLAIN_FIELDS))
    return result


def _own_triage(item: Prepared) -> PreparedTriage:
    if not isinstance(item, PreparedTriage):
        raise TypeError(f"a triage batch holds {type(item).__name__}")
    return item


class TriageAdapter(KindAdapter):
    kind: Kind = "triage"

    def __init__(self, runner: TriageRunner, review_below: float = REVIEW_BELOW) -> None:
        self.runner = runner
        self.review_below = review_below

    @property
    def model_id(self) -> str:
        return f"{self.runner.name}@{self.runner.version}"

    def prepare(self, request: Request) -> PreparedTriage:
        if not isinstance(request, TriageRequest):
            raise TypeError("the runtime routes requests by kind")
        return self.runner.prepare(triage_input(request))

    def compute(self, batch: Sequence[Prepared]) -> list[Result | ValueError]:
        items = [_own_triage(item) for item in batch]
        predictions = self.runner.run(items, plan_batch(items, self.runner.pass_limits, self.runner.pass_cost))
        return _results(predictions, lambda prediction: triage_result(prediction, self.review_below))

    def warmup(self) -> None:
        self.runner.warmup()
        sample = parse_request("triage", {"tenant": "warmup", "note": "c/o sore throat x2 days, afebrile"})
        _raise_any(self.compute([self.prepare(sample)]))


def _raise_any(results: Sequence[Result | ValueError]) -> None:
    # A model whose outputs break the result contract fails at start, not on every task once ready.
    for result in results:
        if isinstance(result, ValueError):
            raise result


# ---------------------------------------------------------------------------------------------
# Fraud


def event(e: TransactionEvent) -> Event:
    """A contract event as the engine's: the RFC 3339 timestamp becomes epoch seconds."""
    return Event(
        amount=e.amount, currency=e.currency, mcc=e.mcc, channel=e.channel, country=e.country,
        timestamp=e.timestamp.timestamp(), merchant_id=e.merchant_id, device_id=e.device_id,
    )


_EVENT_FIELDS = tuple(EventFields.__annotations__)  # EventColumns' fields, in the same order
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_seconds(moments: list[datetime]) -> list[float]:
    """`.timestamp()` of each aware datetime, as a difference from the Unix epoch.

    The epoch is given the first moment's tzinfo where that is UTC: pydantic shares one tzinfo
    object among all the "Z" timestamps it parses, and aware datetimes with the very same tzinfo
    subtract without a utcoffset() call, three times faster. Other zones subtract correctly too.
    """
    epoch = _UNIX_EPOCH
    if moments and moments[0].utcoffset() == timedelta(0):
        epoch = _UNIX_EPOCH.replace(tzinfo=moments[0].tzinfo)
    return list(map(timedelta.total_seconds, map(sub, moments, repeat(epoch))))


def event_columns(history: Sequence[EventFields]) -> EventColumns:
    """A contract history as the engine's columns, read field by field: no object per event."""
    columns: dict[str, Any] = {name: list(map(itemgetter(name), history)) for name in _EVENT_FIELDS}
    columns["timestamp"] = epoch_seconds(columns["timestamp"])
    return EventColumns(**columns)


def fraud_input(request: FraudRequest) -> FraudInput:
    """The engine input of a fraud request: the history as columns, the transaction as an event."""
    return FraudInput(history=event_columns(request.history), transaction=event(request.transaction))


def reason_codes(engine_reasons: Sequence[str]) -> list[ReasonCode]:
    """Contract reason codes for the engine's, in the engine's order (strongest first).

    A reason the contract does not define is left out: it cannot be sent, and the score and
    decision stand without it.
    """
    known = {code.value for code in ReasonCode}
    return [ReasonCode(name) for name in engine_reasons if name in known]


def fraud_evidence(prediction: FraudPrediction) -> dict[str, Any]:
    """The optional evidence fields of a fraud result: absent when the model gave none."""
    out: dict[str, Any] = {}
    if prediction.events:
        out["evidence_events"] = [
            EvidenceEvent(index=e.index, timestamp=datetime.fromtimestamp(e.timestamp, UTC), weight=e.weight)
            for e in prediction.events
        ]
    if prediction.aggregates:
        out["evidence_aggregates"] = [
            EvidenceAggregate(name=a.name, value=a.value, weight=a.weight) for a in prediction.aggregates
        ]
    return out


def _own_fraud(item: Prepared) -> PreparedFraud:
    if not isinstance(item, PreparedFraud):
        raise TypeError(f"a fraud batch holds {type(item).__name__}")
    return item


def _sample_event(amount: float, epoch_s: float) -> dict[str, Any]:
    timestamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
    return {"amount": amount, "currency": "EUR", "mcc": "5411", "channel": "contactless", "country": "DE",
            "timestamp": timestamp}


class FraudAdapter(KindAdapter):
    kind: Kind = "fraud"

    def __init__(self, runner: FraudRunner, review_threshold: float, decline_threshold: float) -> None:
        if not 0.0 <= review_threshold <= decline_threshold <= 1.0:
            raise ConfigurationError(
                f"fraud thresholds need 0 <= review ({review_threshold}) <= decline ({decline_threshold}) <= 1"
            )
        self.runner = runner
        self.review_threshold = review_threshold
        self.decline_threshold = decline_threshold

    @property
    def model_id(self) -> str:
        return f"{self.runner.name}@{self.runner.version}"

    def prepare(self, request: Request) -> PreparedFraud:
        if not isinstance(request, FraudRequest):
            raise TypeError("the runtime routes requests by kind")
        return self.runner.prepare(fraud_input(request))

    def compute(self, batch: Sequence[Prepared]) -> list[Result | ValueError]:
        items = [_own_fraud(item) for item in batch]
        predictions = self.runner.run(items, plan_batch(items, self.runner.pass_limits, self.runner.pass_cost))
        return _results(predictions, self.result)

    def result(self, prediction: FraudPrediction) -> FraudResult:
        score = float(prediction.score)
        return FraudResult(score=score, decision=self.decide(score), reasons=reason_codes(prediction.reasons),
                           **fraud_evidence(prediction))

    def decide(self, score: float) -> Decision:
        if score >= self.decline_threshold:
            return "decline"
        if score >= self.review_threshold:
            return "review"
        return "approve"

    def warmup(self) -> None:
        self.runner.warmup()
        now = time.time()
        history = [_sample_event(20.0 + i, now - 86_400.0 * (10 - i)) for i in range(8)]
        sample = parse_request(
            "fraud", {"tenant": "warmup", "transaction": _sample_event(35.0, now - 60.0), "history": history}
        )
        _raise_any(self.compute([self.prepare(sample)]))


def fraud_thresholds(settings: Settings, model_thresholds: Mapping[str, float]) -> tuple[float, float]:
    """(review, decline): the operator's settings where given, else the model card's."""
    review = settings.fraud_review_threshold
    decline = settings.fraud_decline_threshold
    return (
        float(model_thresholds["review"]) if review is None else review,
        float(model_thresholds["decline"]) if decline is None else decline,
    )


def load_adapters(settings: Settings) -> dict[Kind, KindAdapter]:
    """Load the runner of every kind this worker serves, from `settings.models_dir`."""
    return {kind: _load(kind, settings.models_dir / kind, settings) for kind in settings.kinds}


def _load(kind: Kind, model_dir: Path, settings: Settings) -> KindAdapter:
    if kind == "triage":
        from engine.triage_runner import load_triage

        return TriageAdapter(load_triage(model_dir, device=settings.device, precision=settings.precision),
                             settings.triage_review_below)
    from engine.fraud_runner import load_fraud

    runner = load_fraud(model_dir, device=settings.device, precision=settings.precision)
    review, decline = fraud_thresholds(settings, runner.thresholds)
    runner.explain_from = review  # evidence for every result the worker flags for review or declines
    return FraudAdapter(runner, review, decline)
