"""v1 result messages: one per task, posted to its result stream as JSON."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contracts.errors import ContractError, ErrorCode
from contracts.wire import Kind

# Float rounding in a softmax and in JSON (17 significant digits) stays far below this.
PROBABILITY_SUM_TOLERANCE: Final = 1e-3
ACUITY_LEVELS: Final = 5

_CONFIG = ConfigDict(extra="forbid", strict=True, frozen=True)


class TaskStatus(StrEnum):
    """How a task ended: computed, refused as invalid, expired, refused for load, or failed."""

    OK = "ok"
    INVALID = "invalid"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"


class ReasonCode(StrEnum):
    """Why a fraud score is high, as an issuer shows it to an analyst or a customer."""

    NEW_DEVICE = "new_device"
    UNUSUAL_COUNTRY = "unusual_country"
    VELOCITY = "velocity"
    CARD_TESTING = "card_testing"
    UNUSUAL_CATEGORY = "unusual_category"
    AMOUNT_SPIKE = "amount_spike"
    IMPOSSIBLE_TRAVEL = "impossible_travel"


class SafetyReason(BaseModel):
    """A clinical safety-net rule that fired: it requires at least `level`, found at [start, end) of the note."""

    model_config = _CONFIG

    rule: str = Field(min_length=1, max_length=64, description="rule id, e.g. B-thunderclap")
    level: int = Field(ge=1, le=ACUITY_LEVELS, description="the least urgent level the rule allows")
    decision_point: Literal["A", "B", "D"] = Field(description="ESI decision point the rule belongs to")
    start: int | None = Field(None, ge=0, description="character offset of the matched span in the note")
    end: int | None = Field(None, ge=0, description="end (exclusive) of the matched span")
    vital: str | None = Field(None, description="for a vital-sign rule: the vital it read")


class VitalOutOfRange(BaseModel):
    """A vital sign in the danger zone for the patient's age."""

    model_config = _CONFIG

    vital: str
    value: float = Field(allow_inf_nan=False)
    threshold: float = Field(allow_inf_nan=False)
    source: Literal["structured", "note"]
    start: int | None = Field(None, ge=0, description="span in the note when read from its text")
    end: int | None = Field(None, ge=0)


# Present only when the request asked for them (`explain`); absent, not null, otherwise.
EXPLAIN_FIELDS: Final = ("needs_review", "model_acuity", "reasons", "vitals_out_of_range")


class TriageResult(BaseModel):
    """Emergency severity index (1 most urgent) with the model's probability per level.

    `acuity` is the model's level raised, never lowered, by the clinical safety net. With `explain`
    in the request the result also says why: `needs_review`, the model's own level, the safety-net
    rules that fired and the vitals out of range.
    """

    model_config = _CONFIG

    acuity: int = Field(ge=1, le=ACUITY_LEVELS)
    probabilities: list[float] = Field(min_length=ACUITY_LEVELS, max_length=ACUITY_LEVELS)
    truncated: bool = Field(description="true when part of the note was not read by the model")
    chunks: int = Field(ge=1, description="encoder windows the note was split into")
    needs_review: bool | None = Field(
        default=None,
        description="the top probability is below the review threshold, or the safety net changed the level",
    )
    model_acuity: int | None = Field(
        default=None, ge=1, le=ACUITY_LEVELS, description="the model's level before the net"
    )
    reasons: list[SafetyReason] | None = None
    vitals_out_of_range: list[VitalOutOfRange] | None = None

    @model_serializer(mode="wrap")
    def _without_absent_explanations(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in EXPLAIN_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @field_validator("probabilities")
    @classmethod
    def _distribution(cls, probabilities: list[float]) -> list[float]:
        if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probabilities):
            raise PydanticCustomError("out_of_range", "each probability must lie in [0, 1]")
        if abs(sum(probabilities) - 1.0) > PROBABILITY_SUM_TOLERANCE:
            raise PydanticCustomError("out_of_range", "probabilities must sum to 1")
        return probabilities


class EvidenceEvent(BaseModel):
    """A history event that pushed the fraud score up, by the model's gradient x input attribution."""

    model_config = _CONFIG

    index: int = Field(ge=0, description="position in the request's history, 0 the oldest")
    timestamp: datetime = Field(description="the event's timestamp")
    weight: float = Field(allow_inf_nan=False, description="attribution towards fraud, in logits")


class EvidenceAggregate(BaseModel):
    """A card aggregate (velocity, novelty, amount against the card's usual) that pushed the score up."""

    model_config = _CONFIG

    name: str = Field(min_length=1, max_length=64, description="aggregate name, e.g. log_count_1h")
    value: float = Field(allow_inf_nan=False, description="its value for this transaction")
    weight: float = Field(allow_inf_nan=False, description="attribution towards fraud, in logits")


# Optional (v1 consumers ignore them): absent, not null, when the model gives no evidence.
FRAUD_EVIDENCE_FIELDS: Final = ("evidence_events", "evidence_aggregates")


class FraudResult(BaseModel):
    """Fraud probability, the decision the configured thresholds give, and the reasons.

    Models that explain their score add, to results at or above the review threshold, the history
    events and card aggregates that drove it, strongest first.
    """

    model_config = _CONFIG

    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    decision: Literal["approve", "review", "decline"]
    reasons: list[Annotated[ReasonCode, Field(strict=False)]] = Field(default_factory=list)
    evidence_events: list[EvidenceEvent] | None = None
    evidence_aggregates: list[EvidenceAggregate] | None = None

    @model_serializer(mode="wrap")
    def _without_absent_evidence(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in FRAUD_EVIDENCE_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data


class ErrorInfo(BaseModel):
    """Why a task has no result: a code, a message naming the field, and the field's path."""

    model_config = _CONFIG

    code: ErrorCode = Field(strict=False)
    message: str
    field: str | None = None

    @classmethod
    def from_error(cls, error: ContractError) -> ErrorInfo:
        """The first problem of a refused request."""
        return cls(code=error.code, message=error.message, field=error.field)


class Timings(BaseModel):
    """Where a task's time went, in milliseconds; batch_size 0 when it never reached a batch."""

    model_config = _CONFIG

    queue_ms: float = Field(ge=0.0, allow_inf_nan=False)
    batch_size: int = Field(ge=0)
    compute_ms: float = Field(ge=0.0, allow_inf_nan=False)
    total_ms: float = Field(ge=0.0, allow_inf_nan=False)

    @classmethod
    def none(cls) -> Timings:
        """Timings of a task answered without queueing or computing (e.g. refused at once)."""
        return cls(queue_ms=0.0, batch_size=0, compute_ms=0.0, total_ms=0.0)


_RESULT_TYPES: Final = {"triage": TriageResult, "fraud": FraudResult}


class TaskResultMessage(BaseModel):
    """The one message every task produces: its result when status is ok, else its error."""

    model_config = _CONFIG

    # A task id becomes part of a Redis key; 200 characters fit any producer's id scheme.
    task_id: str = Field(min_length=1, max_length=200)
    kind: Kind
    status: TaskStatus = Field(strict=False)
    result: TriageResult | FraudResult | None = None
    error: ErrorInfo | None = None
    model: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*@[A-Za-z0-9][A-Za-z0-9._+-]*$")
    timings: Timings
    finished_at: int = Field(ge=0, description="epoch ms")

    @model_validator(mode="after")
    def _result_xor_error(self) -> TaskResultMessage:
        if self.status is TaskStatus.OK:
            if self.result is None or self.error is not None:
                raise PydanticCustomError(
                    "missing_field", "status ok needs a result and no error", {"at": "result"}
                )
            if not isinstance(self.result, _RESULT_TYPES[self.kind]):
                raise PydanticCustomError("wrong_type", "result does not match kind", {"at": "result"})
        elif self.error is None or self.result is not None:
            raise PydanticCustomError(
                "missing_field", "a status other than ok needs an error and no result", {"at": "error"}
            )
        return self

    @classmethod
    def ok(
        cls,
        task_id: str,
        result: TriageResult | FraudResult,
        *,
        model: str,
        timings: Timings,
        finished_at: int,
    ) -> TaskResultMessage:
        """A computed result."""
        kind: Kind = "triage" if isinstance(result, TriageResult) else "fraud"
        return cls(
            task_id=task_id, kind=kind, status=TaskStatus.OK, result=result,
            model=model, timings=timings, finished_at=finished_at,
        )

    @classmethod
    def failure(
        cls,
        task_id: str,
        kind: Kind,
        status: TaskStatus,
        error: ErrorInfo,
        *,
        timings: Timings,
        finished_at: int,
        model: str | None = None,
    ) -> TaskResultMessage:
        """Any outcome without a result; prefer the named constructors below."""
        return cls(
            task_id=task_id, kind=kind, status=status, error=error,
            model=model, timings=timings, finished_at=finished_at,
        )

    @classmethod
    def invalid(
        cls, task_id: str, kind: Kind, error: ContractError, *, timings: Timings, finished_at: int
    ) -> TaskResultMessage:
        """A request refused by the contract."""
        return cls.failure(
            task_id, kind, TaskStatus.INVALID, ErrorInfo.from_error(error),
            timings=timings, finished_at=finished_at,
        )

    @classmethod
    def expired(
        cls, task_id: str, kind: Kind, *, timings: Timings, finished_at: int
    ) -> TaskResultMessage:
        """A task whose deadline passed before it was computed."""
        error = ErrorInfo(code=ErrorCode.EXPIRED, message="deadline passed before the task was computed")
        return cls.failure(task_id, kind, TaskStatus.EXPIRED, error, timings=timings, finished_at=finished_at)

    @classmethod
    def rejected(
        cls, task_id: str, kind: Kind, message: str, *, timings: Timings, finished_at: int
    ) -> TaskResultMessage:
        """A task refused because its lane was over its limit."""
        error = ErrorInfo(code=ErrorCode.OVERLOADED, message=message)
        status = TaskStatus.REJECTED
        return cls.failure(task_id, kind, status, error, timings=timings, finished_at=finished_at)

    @classmethod
    def failed(
        cls,
        task_id: str,
        kind: Kind,
        code: ErrorCode,
        message: str,
        *,
        timings: Timings,
        finished_at: int,
        model: str | None = None,
    ) -> TaskResultMessage:
        """A task the service could not complete (model_error, internal_error, too_many_deliveries)."""
        error = ErrorInfo(code=code, message=message)
        return cls.failure(
            task_id, kind, TaskStatus.FAILED, error, timings=timings, finished_at=finished_at, model=model
        )
