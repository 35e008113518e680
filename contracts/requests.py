"""v1 request models (triage and fraud), their common fields, and `parse_request`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter, le
from typing import Annotated, Any, ClassVar, Final, Literal, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from contracts.errors import ContractError, ErrorCode, from_validation_error
from contracts.iso import COUNTRIES, CURRENCIES
from contracts.wire import REPLY_TO_PATTERN, Kind, Lane

SCHEMA_VERSION: Final = "1"

# A triage note of 20,000 characters is ~5k tokens of clinical English, 10+ encoder chunks of 512
# tokens: far beyond any real transfer summary (a few hundred words). Longer input is a paste
# error or abuse, and would hold a batch slot for seconds.
MAX_NOTE_CHARS: Final = 20_000
# The sequence model reads at most this many past events; DESIGN fixes it at 4,096.
MAX_HISTORY: Final = 4096
# Amounts are in major units of any currency; 1e12 still covers a seven-figure purchase in the
# weakest currencies (IRR, VND, LBP) while refusing overflow-sized numbers.
MAX_AMOUNT: Final = 1e12
# Clocks of producers drift and settlement feeds arrive late, but a day ahead is already an error.
MAX_FUTURE_S: Final = 24 * 3600
# Ten years of history, leap days included.
MAX_PAST_S: Final = 3653 * 24 * 3600
# Deadlines are epoch milliseconds between 2001-09-09 and 2100-01-01: anything else is seconds
# sent as milliseconds (or the reverse).
MIN_DEADLINE_MS: Final = 1_000_000_000_000
MAX_DEADLINE_MS: Final = 4_102_444_800_000
# A day: the longest a batch backfill may reasonably wait; longer is a unit error.
MAX_TIMEOUT_MS: Final = 86_400_000

_RFC3339: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)

_WINDOW_HINT: Final = "is over 24 h ahead of or 10 years behind now"

# Strict: no coercion of "12.5" to a number or 1 to "1"; frozen: a parsed request is a value.
_CONFIG = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class _Core:
    """Annotated marker: validate with a prebuilt pydantic-core schema, no Python call per value.

    A history holds up to 4,096 events; Python validators on each event's timestamp, currency and
    country cost about as much as the rest of the model, so per-event checks stay in pydantic-core.
    """

    schema: CoreSchema

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return self.schema


def _one_of(values: frozenset[str], code: str, message: str) -> _Core:
    return _Core(
        core_schema.custom_error_schema(
            core_schema.literal_schema(sorted(values)), custom_error_type=code, custom_error_message=message
        )
    )


# RFC 3339 text checked by pattern, then parsed as an aware datetime; Python callers may also
# pass an aware datetime. Everything else (unix numbers, dates, no offset) is one bad_timestamp.
_TIMESTAMP_FROM_TEXT = core_schema.chain_schema(
    [
        core_schema.str_schema(pattern=_RFC3339),
        core_schema.datetime_schema(strict=False, tz_constraint="aware"),
    ]
)
_TIMESTAMP = core_schema.json_or_python_schema(
    json_schema=_TIMESTAMP_FROM_TEXT,
    python_schema=core_schema.union_schema(
        [core_schema.datetime_schema(strict=True, tz_constraint="aware"), _TIMESTAMP_FROM_TEXT]
    ),
)

Timestamp = Annotated[
    datetime,
    _Core(
        core_schema.custom_error_schema(
            _TIMESTAMP,
            custom_error_type="bad_timestamp",
            custom_error_message="must be an RFC 3339 date-time with a time zone, e.g. 2026-03-01T12:00:00Z",
        )
    ),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Currency = Annotated[
    str,
    _one_of(CURRENCIES, "unknown_currency", "must be an upper-case ISO 4217 currency code"),
    WithJsonSchema({"type": "string", "enum": sorted(CURRENCIES)}),
]
Country = Annotated[
    str,
    _one_of(COUNTRIES, "unknown_country", "must be an upper-case ISO 3166-1 alpha-2 country code"),
    WithJsonSchema({"type": "string", "enum": sorted(COUNTRIES)}),
]
Channel = Literal["card_present", "ecommerce", "atm", "contactless", "recurring"]
BoundedId = Annotated[str, Field(min_length=1, max_length=128)]


class RequestBase(BaseModel):
    """Fields every v1 request carries: who sends it, by when, where the answer goes."""

    model_config = _CONFIG
    KIND: ClassVar[Kind]

    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    deadline: int | None = Field(None, ge=MIN_DEADLINE_MS, le=MAX_DEADLINE_MS, description="epoch ms")
    timeout_ms: int | None = Field(None, gt=0, le=MAX_TIMEOUT_MS, description="ms from enqueueing")
    reply_to: str | None = Field(None, pattern=REPLY_TO_PATTERN)
    schema_version: Literal["1"] = SCHEMA_VERSION
    lane: Lane | None = Field(None, description="default: realtime for fraud, batch for triage")

    @model_validator(mode="after")
    def _one_deadline(self) -> RequestBase:
        if self.deadline is not None and self.timeout_ms is not None:
            raise PydanticCustomError(
                "deadline_conflict", "give deadline or timeout_ms, not both", {"at": "timeout_ms"}
            )
        return self


class Vitals(BaseModel):
    """Triage vital signs; outside these bounds a value is almost always a unit or typing error."""

    model_config = _CONFIG

    heart_rate: int | None = Field(None, ge=20, le=300, description="beats per minute")
    resp_rate: int | None = Field(None, ge=2, le=80, description="breaths per minute")
    # Pulse oximeters are not calibrated below ~70%; under 50 a reading is an artefact.
    spo2: float | None = Field(None, ge=50, le=100, allow_inf_nan=False, description="percent")
    # 20-45 °C: severe accidental hypothermia (drowning, avalanche) is measured well below 30 °C
    # and is exactly the ESI 1 patient who must not be refused; above 45 °C, or a Fahrenheit
    # reading sent as Celsius, is not a living patient's temperature.
    temperature_c: float | None = Field(None, ge=20, le=45, allow_inf_nan=False)
    systolic_bp: int | None = Field(None, ge=40, le=300, description="mmHg")
    diastolic_bp: int | None = Field(None, ge=20, le=200, description="mmHg, below systolic")
    pain: int | None = Field(None, ge=0, le=10, description="0-10 numeric rating scale")

    @field_validator("diastolic_bp")
    @classmethod
    def _below_systolic(cls, diastolic: int | None, info: ValidationInfo) -> int | None:
        systolic = info.data.get("systolic_bp")
        if diastolic is not None and systolic is not None and diastolic >= systolic:
            raise PydanticCustomError("vital_out_of_range", "must be below systolic_bp")
        return diastolic


class TriageRequest(RequestBase):
    """A free-text triage note and optional structured findings, to be given an ESI level."""

    KIND: ClassVar[Kind] = "triage"

    # The pattern asks for one non-space character anywhere: a blank note is refused as empty.
    note: str = Field(min_length=1, max_length=MAX_NOTE_CHARS, pattern=r"\S")
    # Years, fractional below one so neonates are expressible: 14 days = 14 / 365.25 ≈ 0.038.
    age: float | None = Field(None, ge=0, le=120, allow_inf_nan=False, description="years")
    sex: Literal["F", "M", "X", "U"] | None = None
    vitals: Vitals | None = None
    arrival_mode: Literal["walk_in", "ems", "transfer", "police", "other"] | None = None
    # Opt-in: the result then also carries needs_review, model_acuity, reasons and vitals_out_of_range.
    # Off by default so that a v1 consumer that refuses unknown fields keeps working.
    explain: bool = Field(False, description="add why: needs_review, model_acuity, reasons, vitals_out_of_range")


class TransactionEvent(BaseModel):
    """One card transaction: the one to score, or a past one in the history.

    Its timestamp's window (10 years back, 24 h ahead) is checked by FraudRequest, which sees
    every event at once and so needs only the oldest and the newest.
    """

    model_config = _CONFIG

    amount: float = Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False, description="major units")
    currency: Currency
    mcc: str = Field(pattern=r"^[0-9]{4}$", description="merchant category code, 4 digits")
    channel: Channel
    country: Country
    timestamp: Timestamp
    merchant_id: BoundedId | None = None
    device_id: BoundedId | None = None


def _history_item_schema() -> CoreSchema:
    """TransactionEvent's own field schemas, validated into a dict instead of a model instance.

    A model instance costs about three times a dict to build and leaves three objects per event for
    the garbage collector to trace; a 4,096-event history is 12k of them. The fields, their
    constraints and so every error code, path and message are TransactionEvent's.
    """
    model = TransactionEvent.__pydantic_core_schema__
    assert model["type"] == "model" and model["schema"]["type"] == "model-fields", "a plain model"
    fields = {
        name: core_schema.typed_dict_field(field["schema"], required=field["schema"]["type"] != "default")
        for name, field in model["schema"]["fields"].items()
    }
    return core_schema.typed_dict_schema(fields, extra_behavior="forbid", strict=True, config=model["config"])


def _history_schema() -> CoreSchema:
    items = _history_item_schema()
    # A model refuses a non-object with its own words; say exactly what it said before.
    python_items = core_schema.chain_schema(
        [
            core_schema.custom_error_schema(
                core_schema.is_instance_schema(dict),
                custom_error_type="model_type",
                custom_error_context={"class_name": TransactionEvent.__name__},
            ),
            items,
        ]
    )
    return core_schema.json_or_python_schema(
        json_schema=core_schema.list_schema(items, max_length=MAX_HISTORY),
        python_schema=core_schema.no_info_before_validator_function(
            _events_as_dicts, core_schema.list_schema(python_items, max_length=MAX_HISTORY)
        ),
    )


def _events_as_dicts(history: Any) -> Any:
    """Python callers may pass TransactionEvent instances, as they could when items were models."""
    if not isinstance(history, list) or set(map(type, history)) <= {dict}:
        return history
    return [item.model_dump() if isinstance(item, TransactionEvent) else item for item in history]


class _HistoryItems:
    """Annotated marker: history items checked as TransactionEvents, kept as their field dicts."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return _history_schema()

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # Published as before: an array of TransactionEvent objects.
        return handler(core_schema.list_schema(TransactionEvent.__pydantic_core_schema__, max_length=MAX_HISTORY))


class EventFields(TypedDict):
    """A history event as FraudRequest holds it: TransactionEvent's fields, absent ids as None."""

    amount: float
    currency: str
    mcc: str
    channel: str
    country: str
    timestamp: datetime
    merchant_id: str | None
    device_id: str | None


class FraudRequest(RequestBase):
    """A transaction to score with the customer's past transactions, oldest first."""

    KIND: ClassVar[Kind] = "fraud"

    transaction: TransactionEvent
    # Items are validated exactly as `transaction` is but held as EventFields dicts: the worker
    # reads a history column by column, never as single event objects.
    history: Annotated[list[EventFields], _HistoryItems()] = Field(default_factory=list)

    @model_validator(mode="after")
    def _timestamps(self) -> FraudRequest:
        # One pass over parsed datetimes: far cheaper than a Python validator per event.
        now_s = time.time()
        if _outside_window(self.transaction.timestamp, now_s):
            raise PydanticCustomError("timestamp_out_of_range", _WINDOW_HINT, {"at": "transaction.timestamp"})
        times = list(map(itemgetter("timestamp"), self.history))
        index = _first_out_of_order(times)
        if index is not None:
            at = f"history.{index}.timestamp"
            raise PydanticCustomError("history_out_of_order", "is earlier than the event before", {"at": at})
        if times and times[-1] > self.transaction.timestamp:
            at = f"history.{len(times) - 1}.timestamp"
            raise PydanticCustomError("history_out_of_order", "is later than the transaction", {"at": at})
        # In order and no later than the transaction: the oldest event alone can leave the window.
        if times and _outside_window(times[0], now_s):
            raise PydanticCustomError("timestamp_out_of_range", _WINDOW_HINT, {"at": "history.0.timestamp"})
        return self


def _outside_window(moment: datetime, now_s: float) -> bool:
    offset = moment.timestamp() - now_s
    return offset > MAX_FUTURE_S or offset < -MAX_PAST_S


def _first_out_of_order(times: list[datetime]) -> int | None:
    # The comparisons run in C; only a history out of order is walked again to find where.
    if all(map(le, times, times[1:])):
        return None
    return next(index for index in range(1, len(times)) if times[index] < times[index - 1])


Request = TriageRequest | FraudRequest
_MODELS: Final[Mapping[str, type[TriageRequest] | type[FraudRequest]]] = {
    "triage": TriageRequest,
    "fraud": FraudRequest,
}


def parse_request(kind: str, data: Mapping[str, Any] | str | bytes) -> Request:
    """Validate one request of `kind` from a JSON document or a decoded object.

    Raises ContractError: `.code`/`.field`/`.message` describe the first problem, `.errors` all.
    """
    model = _MODELS.get(kind)
    if model is None:
        raise ContractError.single(ErrorCode.UNKNOWN_TASK, "kind", "must be one of triage, fraud")
    try:
        if isinstance(data, str | bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        # Not chained: pydantic's own error text quotes the input, which may hold PHI.
        raise from_validation_error(exc) from None


def effective_deadline_ms(request: Request, enqueued_ms: int) -> int | None:
    """Absolute deadline in epoch ms: `deadline`, else enqueue time + `timeout_ms`, else None."""
    if request.deadline is not None:
        return request.deadline
    if request.timeout_ms is not None:
        return enqueued_ms + request.timeout_ms
    return None
