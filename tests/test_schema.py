"""JSON Schema export: well-formed draft 2020-12 files that accept the examples and refuse bad input."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from contracts import ContractError, ErrorCode, FraudRequest, TaskResultMessage, TriageRequest, parse_request
from contracts.requests import MAX_HISTORY
from contracts.schema import DIALECT, json_schemas, write_schemas

EXAMPLES = Path(__file__).resolve().parent.parent / "contracts" / "examples"
SCHEMAS = json_schemas()
FORMATS = jsonschema.FormatChecker()
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


@FORMATS.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    # jsonschema only checks date-time with an optional package; this is the RFC 3339 grammar.
    if isinstance(value, str):
        if _RFC3339.fullmatch(value) is None:
            raise ValueError("not RFC 3339")
        datetime.fromisoformat(value.upper())
    return True


def _validator(stem: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(SCHEMAS[stem], format_checker=FORMATS)


def _example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return data


def test_written_files_match_the_schemas(tmp_path: Path) -> None:
    paths = write_schemas(tmp_path / "schemas")
    assert sorted(p.name for p in paths) == [
        "error-code.schema.json",
        "fraud-request.schema.json",
        "result.schema.json",
        "triage-request.schema.json",
    ]
    for path in paths:
        assert json.loads(path.read_text()) == SCHEMAS[path.name.removesuffix(".schema.json")]


@pytest.mark.parametrize("stem", sorted(SCHEMAS))
def test_schema_is_valid_draft_2020_12(stem: str) -> None:
    schema = SCHEMAS[stem]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DIALECT
    assert schema["$id"] == f"urn:inferq:schema:v1:{stem}"
    assert schema["title"].startswith("inferq ")


@pytest.mark.parametrize(
    ("stem", "model"), [("triage-request", TriageRequest), ("fraud-request", FraudRequest)]
)
def test_request_schema_names_every_field(stem: str, model: type[TriageRequest | FraudRequest]) -> None:
    schema = SCHEMAS[stem]
    assert set(schema["properties"]) == set(model.model_fields)
    assert schema["additionalProperties"] is False


def test_history_limit_is_published() -> None:
    assert SCHEMAS["fraud-request"]["properties"]["history"]["maxItems"] == MAX_HISTORY


@pytest.mark.parametrize(
    ("stem", "example"),
    [
        ("triage-request", "triage-request"),
        ("fraud-request", "fraud-request"),
        ("result", "triage-result"),
        ("result", "fraud-result"),
        ("result", "invalid-result"),
    ],
)
def test_examples_satisfy_the_schema(stem: str, example: str) -> None:
    _validator(stem).validate(_example(example))


def test_error_code_schema_lists_every_code() -> None:
    validator = _validator("error-code")
    for code in ErrorCode:
        validator.validate(code.value)
    assert not validator.is_valid("teapot")


REQUEST_BREAKS = [
    ("triage-request", {"triage": "ESI 2"}),
    ("triage-request", {"note": "   "}),
    ("triage-request", {"note": None}),
    ("triage-request", {"vitals": {"heart_rate": 400}}),
    ("triage-request", {"sex": "female"}),
    ("triage-request", {"deadline": 1_800_000_000_000}),  # the example also has timeout_ms
    ("triage-request", {"reply_to": "inferq:queue:batch"}),
    ("triage-request", {"schema_version": "2"}),
    ("fraud-request", {"tenant": ""}),
    ("fraud-request", {"transaction": {"amount": 5}}),
]
EVENT_BREAKS = [
    {"currency": "XYZ"},
    {"country": "XX"},
    {"mcc": "54a1"},
    {"amount": 0},
    {"amount": "12.50"},
    {"channel": "moto"},
    {"timestamp": "2026-10-14 02:47"},
    {"timestamp": "2026-10-14T02:47:13"},
    {"device_id": ""},
]


@pytest.mark.parametrize(("stem", "changes"), REQUEST_BREAKS)
def test_broken_requests_refused_by_schema_and_model(stem: str, changes: dict[str, Any]) -> None:
    broken = {**_example(stem), **changes}
    assert not _validator(stem).is_valid(broken)
    with pytest.raises(ContractError):
        parse_request(stem.removesuffix("-request"), broken)


@pytest.mark.parametrize("changes", EVENT_BREAKS)
def test_broken_events_refused_by_schema_and_model(changes: dict[str, Any]) -> None:
    broken = copy.deepcopy(_example("fraud-request"))
    broken["history"][2].update(changes)
    assert not _validator("fraud-request").is_valid(broken)
    with pytest.raises(ContractError):
        parse_request("fraud", broken)


RESULT_BREAKS = [
    {"status": "ok", "result": None},
    {"status": "failed"},  # a result without an error
    {"status": "failed", "result": None, "error": None},
    {"error": {"code": "teapot", "message": "no"}, "status": "failed", "result": None},
    {"model": "fraud-seq"},
    {"timings": {"queue_ms": 1.0}},
    {"result": {"score": 1.5, "decision": "decline", "reasons": []}},
    {"result": {"score": 0.5, "decision": "decline", "reasons": ["gut_feeling"]}},
]


@pytest.mark.parametrize("changes", RESULT_BREAKS)
def test_broken_results_refused_by_schema_and_model(changes: dict[str, Any]) -> None:
    broken = {**_example("fraud-result"), **changes}
    assert not _validator("result").is_valid(broken)
    with pytest.raises(ValidationError):
        TaskResultMessage.model_validate(broken)


def test_the_committed_schemas_match_the_contracts() -> None:
    # docs/schemas/ is what a team without Python uses; regenerate with `inferq schema docs/schemas`.
    committed = Path(__file__).resolve().parent.parent / "docs" / "schemas"
    for stem, schema in SCHEMAS.items():
        path = committed / f"{stem}.schema.json"
        assert path.is_file(), f"{path} is missing: run `inferq schema docs/schemas`"
        assert json.loads(path.read_text(encoding="utf-8")) == schema, (
            f"{path.name} drifted from the contracts: run `inferq schema docs/schemas`"
        )
    assert sorted(p.name for p in committed.glob("*.schema.json")) == sorted(f"{s}.schema.json" for s in SCHEMAS)
