"""JSON Schema (draft 2020-12) export of the v1 wire contract, for producers in other languages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from contracts.errors import DESCRIPTIONS, ErrorCode
from contracts.requests import FraudRequest, TriageRequest
from contracts.results import TaskResultMessage

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX: Final = "urn:inferq:schema:v1:"
FILE_SUFFIX: Final = ".schema.json"

JsonSchema = dict[str, Any]

# Cross-field rules pydantic checks in Python, restated so schema validators enforce them too.
_ONE_DEADLINE: Final[JsonSchema] = {
    "not": {
        "properties": {"deadline": {"type": "integer"}, "timeout_ms": {"type": "integer"}},
        "required": ["deadline", "timeout_ms"],
    },
}
_RESULT_XOR_ERROR: Final[JsonSchema] = {
    "if": {"properties": {"status": {"const": "ok"}}, "required": ["status"]},
    "then": {
        "properties": {"result": {"type": "object"}, "error": {"type": "null"}},
        "required": ["result"],
    },
    "else": {
        "properties": {"result": {"type": "null"}, "error": {"type": "object"}},
        "required": ["error"],
    },
}


def _model_schema(name: str, title: str, model: type[BaseModel], rules: JsonSchema) -> JsonSchema:
    body = model.model_json_schema(mode="validation")
    body.pop("title", None)
    return {"$schema": DIALECT, "$id": ID_PREFIX + name, "title": title, **body, **rules}


def _error_code_schema() -> JsonSchema:
    return {
        "$schema": DIALECT,
        "$id": ID_PREFIX + "error-code",
        "title": "inferq error code (v1)",
        "type": "string",
        "oneOf": [{"const": code.value, "description": DESCRIPTIONS[code]} for code in ErrorCode],
    }


def json_schemas() -> dict[str, JsonSchema]:
    """Every published schema by file stem: both requests, the result message, the error codes."""
    return {
        "triage-request": _model_schema(
            "triage-request", "inferq triage request (v1)", TriageRequest, _ONE_DEADLINE
        ),
        "fraud-request": _model_schema(
            "fraud-request", "inferq fraud request (v1)", FraudRequest, _ONE_DEADLINE
        ),
        "result": _model_schema("result", "inferq task result (v1)", TaskResultMessage, _RESULT_XOR_ERROR),
        "error-code": _error_code_schema(),
    }


def write_schemas(directory: Path | str) -> list[Path]:
    """Write each schema as `<stem>.schema.json` under `directory` (created if absent)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, schema in json_schemas().items():
        path = target / f"{stem}{FILE_SUFFIX}"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
