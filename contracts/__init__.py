"""The v1 wire contract of inferq: request and result models, error codes, JSON Schema export."""

from contracts.errors import ContractError, ErrorCode, Problem
from contracts.requests import (
    SCHEMA_VERSION,
    EventFields,
    FraudRequest,
    Request,
    TransactionEvent,
    TriageRequest,
    Vitals,
    effective_deadline_ms,
    parse_request,
)
from contracts.results import (
    ErrorInfo,
    FraudResult,
    ReasonCode,
    TaskResultMessage,
    TaskStatus,
    Timings,
    TriageResult,
)
from contracts.wire import KINDS, Kind, Lane

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "ContractError",
    "ErrorCode",
    "ErrorInfo",
    "EventFields",
    "FraudRequest",
    "FraudResult",
    "Kind",
    "Lane",
    "Problem",
    "ReasonCode",
    "Request",
    "TaskResultMessage",
    "TaskStatus",
    "Timings",
    "TransactionEvent",
    "TriageRequest",
    "TriageResult",
    "Vitals",
    "effective_deadline_ms",
    "parse_request",
]
