"""Translation between the wire contract and the engine: contract requests in, contract results out.

The engine takes its own dataclasses and returns its own predictions; it never sees a pydantic
model. Each task kind has one `KindModel` that owns a runner and knows both sides.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import itemgetter, sub
from pathlib import Path
from typing import Any, Literal, Protocol

from contracts import EventFields, FraudRequest, FraudResult, ReasonCode, TriageRequest, TriageResult, parse_request
from contracts.requests import Kind, Request, TransactionEvent
from engine.fraud_features import Event, EventColumns, FraudInput
from engine.triage_input import TriageInput, format_triage_text
from worker.config import Settings
from worker.errors import ConfigurationError

Result = TriageResult | FraudResult
Decision = Literal["approve", "review", "decline"]


class Prepared(Protocol):
    """One input made ready for a batch (tokenized or featurized) by a runner."""

    @property
    def n_tokens(self) -> int: ...


class Runner(Protocol):
    """What the engine's runners offer: prepare one item off the inference thread, run a batch."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def prepare(self, inp: Any) -> Any: ...

    def run(self, batch: list[Any]) -> list[Any]: ...

    def warmup(self) -> None: ...


class KindModel(ABC):
    """One task kind's model: contract request -> engine input -> prediction -> contract result."""

    kind: Kind

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @property
    def model_id(self) -> str:
        """`name@version`, the `model` field of every result this model computes."""
        return f"{self.runner.name}@{self.runner.version}"

    def prepare(self, request: Request) -> Prepared:
        """Validate and tokenize/featurize one request; raises engine.errors.InputError."""
        prepared: Prepared = self.runner.prepare(self.engine_input(request))
        return prepared

    def run(self, batch: Sequence[Prepared]) -> list[Any]:
        """One forward pass over a batch; one prediction per item, in order."""
        outputs = self.runner.run(list(batch))
        if len(outputs) != len(batch):
            raise RuntimeError(f"runner returned {len(outputs)} outputs for {len(batch)} inputs")
        return outputs

    def warmup(self) -> None:
        """The engine's warm-up, then one sample request through the whole contract path.

        A model whose outputs break the result contract fails here, at start, instead of
        failing every task once the worker reports ready.
        """
        self.runner.warmup()
        self.to_result(self.run([self.prepare(self.sample_request())])[0])

    @abstractmethod
    def sample_request(self) -> Request:
        """A valid request of this kind, for the warm-up."""

    @abstractmethod
    def engine_input(self, request: Request) -> Any:
        """The engine's input for one contract request."""

    @abstractmethod
    def to_result(self, output: Any) -> Result:
        """The contract result for one engine prediction."""


class TriageModel(KindModel):
    kind: Kind = "triage"

    def sample_request(self) -> Request:
        return parse_request("triage", {"tenant": "warmup", "note": "c/o sore throat x2 days, afebrile"})

    def engine_input(self, request: Request) -> str:
        assert isinstance(request, TriageRequest), "the runtime routes requests by kind"
        return format_triage_text(triage_input(request))

    def to_result(self, output: Any) -> TriageResult:
        # Label index 0 is ESI 1 (most urgent); the head was trained on levels in that order.
        return TriageResult(
            acuity=int(output.label_index) + 1,
            probabilities=[float(p) for p in output.probabilities],
            truncated=bool(output.truncated),
            chunks=int(output.chunks),
        )


class FraudModel(KindModel):
    kind: Kind = "fraud"

    def __init__(self, runner: Runner, review_threshold: float, decline_threshold: float) -> None:
        super().__init__(runner)
        if not 0.0 <= review_threshold <= decline_threshold <= 1.0:
            raise ConfigurationError(
                f"fraud thresholds need 0 <= review ({review_threshold}) <= decline ({decline_threshold}) <= 1"
            )
        self.review_threshold = review_threshold
        self.decline_threshold = decline_threshold

    def sample_request(self) -> Request:
        now = time.time()
        history = [_sample_event(20.0 + i, now - 86_400.0 * (10 - i)) for i in range(8)]
        return parse_request(
            "fraud", {"tenant": "warmup", "transaction": _sample_event(35.0, now - 60.0), "history": history}
        )

    def engine_input(self, request: Request) -> FraudInput:
        assert isinstance(request, FraudRequest), "the runtime routes requests by kind"
        return FraudInput(history=event_columns(request.history), transaction=event(request.transaction))

    def to_result(self, output: Any) -> FraudResult:
        score = float(output.score)
        return FraudResult(score=score, decision=self.decide(score), reasons=reason_codes(output.reasons))

    def decide(self, score: float) -> Decision:
        if score >= self.decline_threshold:
            return "decline"
        if score >= self.review_threshold:
            return "review"
        return "approve"


def reason_codes(engine_reasons: Sequence[str]) -> list[ReasonCode]:
    """Contract reason codes for the engine's, in the engine's order (strongest first).

    A reason the contract does not define is left out: it cannot be sent, and the score and
    decision stand without it.
    """
    known = {code.value for code in ReasonCode}
    return [ReasonCode(name) for name in engine_reasons if name in known]


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


def event(e: TransactionEvent) -> Event:
    """A contract event as the engine's: the RFC 3339 timestamp becomes epoch seconds."""
    return Event(
        amount=e.amount,
        currency=e.currency,
        mcc=e.mcc,
        channel=e.channel,
        country=e.country,
        timestamp=e.timestamp.timestamp(),
        merchant_id=e.merchant_id,
        device_id=e.device_id,
    )


def event_columns(history: Sequence[EventFields]) -> EventColumns:
    """A contract history as the engine's columns, read field by field: no object per event."""
    columns = {name: list(map(itemgetter(name), history)) for name in _EVENT_FIELDS}
    columns["timestamp"] = epoch_seconds(columns["timestamp"])
    return EventColumns(**columns)


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


def _sample_event(amount: float, epoch_s: float) -> dict[str, Any]:
    timestamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
    return {
        "amount": amount,
        "currency": "EUR",
        "mcc": "5411",
        "channel": "contactless",
        "country": "DE",
        "timestamp": timestamp,
    }


def fraud_thresholds(settings: Settings, model_thresholds: Mapping[str, float]) -> tuple[float, float]:
    """(review, decline): the operator's settings where given, else the model card's."""
    review = settings.fraud_review_threshold
    decline = settings.fraud_decline_threshold
    return (
        float(model_thresholds["review"]) if review is None else review,
        float(model_thresholds["decline"]) if decline is None else decline,
    )


def load_models(settings: Settings) -> dict[str, KindModel]:
    """Load the runner of every kind this worker serves, from `settings.models_dir`."""
    models: dict[str, KindModel] = {}
    for kind in settings.kinds:
        models[kind] = _load(kind, settings.models_dir / kind, settings)
    return models


def _load(kind: Kind, model_dir: Path, settings: Settings) -> KindModel:
    if kind == "triage":
        from engine.runners import load_triage

        return TriageModel(load_triage(model_dir, device=settings.device, precision=settings.precision))
    from engine.fraud_runner import load_fraud

    runner = load_fraud(model_dir, device=settings.device, precision=settings.precision)
    review, decline = fraud_thresholds(settings, runner.thresholds)
    return FraudModel(runner, review, decline)
