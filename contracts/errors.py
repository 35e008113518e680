"""Error codes of the v1 wire contract and the error that carries them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError


class ErrorCode(StrEnum):
    """Machine-readable reason for a refused request or a task that did not complete."""

    INVALID_JSON = "invalid_json"
    INVALID_UNICODE = "invalid_unicode"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    NON_FINITE = "non_finite"
    INVALID_CHOICE = "invalid_choice"
    MALFORMED = "malformed"
    UNKNOWN_CURRENCY = "unknown_currency"
    UNKNOWN_COUNTRY = "unknown_country"
    MALFORMED_MCC = "malformed_mcc"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    EMPTY_NOTE = "empty_note"
    NOTE_TOO_LONG = "note_too_long"
    HISTORY_TOO_LONG = "history_too_long"
    HISTORY_OUT_OF_ORDER = "history_out_of_order"
    VITAL_OUT_OF_RANGE = "vital_out_of_range"
    BAD_REPLY_TO = "bad_reply_to"
    DEADLINE_CONFLICT = "deadline_conflict"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    UNKNOWN_TASK = "unknown_task"
    EXPIRED = "expired"
    OVERLOADED = "overloaded"
    MODEL_ERROR = "model_error"
    INTERNAL_ERROR = "internal_error"
    TOO_MANY_DELIVERIES = "too_many_deliveries"
    UNSIGNED = "unsigned"
    UNKNOWN_SIGNING_KEY = "unknown_signing_key"
    BAD_SIGNATURE = "bad_signature"
    STALE_SIGNATURE = "stale_signature"
    REPLAYED = "replayed"


DESCRIPTIONS: Mapping[ErrorCode, str] = {
    ErrorCode.INVALID_JSON: "The request is not valid JSON.",
    ErrorCode.INVALID_UNICODE: "The request holds bytes that are not UTF-8, or a lone surrogate (raw or escaped).",
    ErrorCode.UNKNOWN_FIELD: "The request has a field the contract does not define.",
    ErrorCode.MISSING_FIELD: "A required field is absent.",
    ErrorCode.WRONG_TYPE: "A field has the wrong JSON type (e.g. a string where a number belongs).",
    ErrorCode.OUT_OF_RANGE: "A number or length lies outside its allowed bounds.",
    ErrorCode.NON_FINITE: "A number is NaN or infinite.",
    ErrorCode.INVALID_CHOICE: "A field holds a value outside its fixed set of choices.",
    ErrorCode.MALFORMED: "A string does not have the required shape.",
    ErrorCode.UNKNOWN_CURRENCY: "The currency is not an ISO 4217 code a card can be charged in.",
    ErrorCode.UNKNOWN_COUNTRY: "The country is not an ISO 3166-1 alpha-2 code.",
    ErrorCode.MALFORMED_MCC: "The merchant category code is not exactly four ASCII digits.",
    ErrorCode.BAD_TIMESTAMP: "The timestamp is not RFC 3339 with a time zone.",
    ErrorCode.TIMESTAMP_OUT_OF_RANGE: "The timestamp is over 24 h ahead of or over 10 years behind now.",
    ErrorCode.EMPTY_NOTE: "The triage note is empty or only whitespace.",
    ErrorCode.NOTE_TOO_LONG: "The triage note exceeds 20,000 characters.",
    ErrorCode.HISTORY_TOO_LONG: "The transaction history has more than 4,096 events.",
    ErrorCode.HISTORY_OUT_OF_ORDER: "History is not oldest first, or an event is later than the transaction.",
    ErrorCode.VITAL_OUT_OF_RANGE: "A vital sign lies outside its physiological range.",
    ErrorCode.BAD_REPLY_TO: "reply_to is not a stream key under inferq:results:.",
    ErrorCode.DEADLINE_CONFLICT: "Both deadline and timeout_ms were given; send one.",
    ErrorCode.UNSUPPORTED_SCHEMA_VERSION: "The schema_version is not one this service speaks.",
    ErrorCode.UNKNOWN_TASK: "The task name or kind is not one this service runs.",
    ErrorCode.EXPIRED: "The deadline passed before the task was computed; it was not computed.",
    ErrorCode.OVERLOADED: "The lane was over its limit; the task was refused without queueing.",
    ErrorCode.MODEL_ERROR: "The model failed on this input.",
    ErrorCode.INTERNAL_ERROR: "The service failed for a reason unrelated to the input.",
    ErrorCode.TOO_MANY_DELIVERIES: "The task was delivered too often without a result; it was dead-lettered.",
    ErrorCode.UNSIGNED: "The entry carries no signature, and this service requires signed entries.",
    ErrorCode.UNKNOWN_SIGNING_KEY: "The entry is signed with a key id this service does not hold.",
    ErrorCode.BAD_SIGNATURE: "The entry's signature does not match its fields; it was altered or signed wrongly.",
    ErrorCode.STALE_SIGNATURE: "The entry was signed too long before (or after) it was queued.",
    ErrorCode.REPLAYED: "The entry repeats the signature of an entry already accepted.",
}

ROOT_FIELD = "request"
"""Field name used for problems with the request as a whole (not JSON, not an object)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: its code, dotted field path and message."""

    code: ErrorCode
    field: str
    message: str


class ContractError(Exception):
    """A request broke the v1 wire contract; carries the first problem and all of them."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.errors: tuple[Problem, ...] = tuple(problems)
        assert self.errors, "a ContractError needs at least one problem"
        first = self.errors[0]
        self.code: ErrorCode = first.code
        self.field: str = first.field
        self.message: str = first.message
        super().__init__(self.message)

    @classmethod
    def single(cls, code: ErrorCode, field: str, detail: str) -> ContractError:
        """One problem, with a message that starts with the field's name."""
        return cls([Problem(code, field, f"{field}: {detail}")])


# Pydantic error types grouped into the contract's generic codes.
_TYPE_CODES: Mapping[str, ErrorCode] = {
    "json_invalid": ErrorCode.INVALID_JSON,
    "extra_forbidden": ErrorCode.UNKNOWN_FIELD,
    "missing": ErrorCode.MISSING_FIELD,
    "finite_number": ErrorCode.NON_FINITE,
    "greater_than": ErrorCode.OUT_OF_RANGE,
    "greater_than_equal": ErrorCode.OUT_OF_RANGE,
    "less_than": ErrorCode.OUT_OF_RANGE,
    "less_than_equal": ErrorCode.OUT_OF_RANGE,
    "too_short": ErrorCode.OUT_OF_RANGE,
    "too_long": ErrorCode.OUT_OF_RANGE,
    "string_too_short": ErrorCode.OUT_OF_RANGE,
    "string_too_long": ErrorCode.OUT_OF_RANGE,
    "literal_error": ErrorCode.INVALID_CHOICE,
    "enum": ErrorCode.INVALID_CHOICE,
    "string_pattern_mismatch": ErrorCode.MALFORMED,
}

_RANGE_TYPES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")

# Codes that name a field's own problem, keyed by the field's name, then pydantic's error type.
_FIELD_CODES: Mapping[str, Mapping[str, ErrorCode]] = {
    "note": {
        "string_too_short": ErrorCode.EMPTY_NOTE,
        "string_pattern_mismatch": ErrorCode.EMPTY_NOTE,
        "string_too_long": ErrorCode.NOTE_TOO_LONG,
    },
    "history": {"too_long": ErrorCode.HISTORY_TOO_LONG},
    "mcc": {"string_pattern_mismatch": ErrorCode.MALFORMED_MCC},
    "reply_to": dict.fromkeys(
        ("string_pattern_mismatch", "string_too_short", "string_too_long"), ErrorCode.BAD_REPLY_TO
    ),
    "schema_version": {"literal_error": ErrorCode.UNSUPPORTED_SCHEMA_VERSION},
}

# Codes for every field below a parent, keyed by the top-level field's name.
_PARENT_CODES: Mapping[str, Mapping[str, ErrorCode]] = {
    "vitals": dict.fromkeys(_RANGE_TYPES, ErrorCode.VITAL_OUT_OF_RANGE),
}

# Clearer words than pydantic's for codes that stand for a pattern or a fixed value.
_MESSAGES: Mapping[ErrorCode, str] = {
    ErrorCode.EMPTY_NOTE: "must contain text, not only whitespace",
    ErrorCode.MALFORMED_MCC: "must be a string of exactly four digits 0-9",
    ErrorCode.BAD_REPLY_TO: "must be inferq:results:<name>, name of letters, digits, '.', '_', ':', '-'",
    ErrorCode.UNSUPPORTED_SCHEMA_VERSION: 'must be "1", the only version this service speaks',
}

_CODES_BY_VALUE: Mapping[str, ErrorCode] = {code.value: code for code in ErrorCode}


def _dotted(loc: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in loc) or ROOT_FIELD


def _code_for(error_type: str, loc: tuple[int | str, ...]) -> ErrorCode:
    custom = _CODES_BY_VALUE.get(error_type)
    if custom is not None:
        return custom
    names = [part for part in loc if isinstance(part, str)]
    own = _FIELD_CODES.get(names[-1], {}) if names else {}
    parent = _PARENT_CODES.get(names[0], {}) if names else {}
    return own.get(error_type) or parent.get(error_type) or _TYPE_CODES.get(error_type, ErrorCode.WRONG_TYPE)


def _problem(error: Mapping[str, Any]) -> Problem:
    loc: tuple[int | str, ...] = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    # Checks over a whole list (order of history) name the offending element through ctx.
    suffix = ctx.get("at")
    if isinstance(suffix, str):
        loc = (*loc, *suffix.split("."))
    field = _dotted(loc)
    code = _code_for(str(error["type"]), loc)
    return Problem(code, field, f"{field}: {_MESSAGES.get(code, error['msg'])}")


def from_validation_error(exc: ValidationError) -> ContractError:
    """Translate pydantic's errors, in their order, into one ContractError (inputs are not copied)."""
    return ContractError(_problem(error) for error in exc.errors(include_url=False, include_input=False))
