"""A triage result through the real worker path: the safety net raises, never lowers, and says why.

With `explain` the result carries needs_review, the model's own level, the rules that fired (with the
character offsets of what they matched in the note) and the vitals out of range; without it the result
has exactly the v1 fields, so a v1 consumer that refuses unknown fields keeps working.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from contracts import TaskStatus
from contracts.wire import Kind
from worker.adapters import KindAdapter, load_adapters
from worker.client import InferqClient
from worker.config import Settings
from worker.runtime import WorkerRuntime

pytestmark = [pytest.mark.integration]

MODELS = Path(__file__).resolve().parent.parent / "models"
V1_FIELDS = {"acuity", "probabilities", "truncated", "chunks"}
THUNDERCLAP = "sudden severe HA, 'worst headache of my life', started while lifting weights 1 hr ago"
ANKLE = "twisted L ankle stepping off curb, ambulatory, mild swelling, pain 3/10"


def _settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, models_dir=MODELS, device="cpu", precision="fp32", metrics_port=0,
                    log_level="WARNING", kinds=["triage"], lanes=["realtime", "batch"])


@pytest.fixture(scope="module")
def adapters(redis_url: str) -> dict[Kind, KindAdapter]:
    return load_adapters(_settings(redis_url))


@pytest.fixture
def results(redis_url: str, redis_client: redis.Redis, adapters: dict[Kind, KindAdapter]) -> Iterator[Any]:
    worker = WorkerRuntime(_settings(redis_url), name="explain-check", adapters=adapters)
    worker.start()

    def answer(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with InferqClient(redis_url, _settings(redis_url)) as client:
            ids = client.submit_many("triage", requests)
            got = client.wait(ids, timeout_s=120)
        out = []
        for task_id in ids:
            assert got[task_id].status == TaskStatus.OK
            out.append(json.loads(got[task_id].model_dump_json())["result"])
        return out

    try:
        yield answer
    finally:
        assert worker.stop(timeout_s=60)


def test_without_explain_the_result_has_exactly_the_v1_fields(results: Any) -> None:
    (result,) = results([{"tenant": "ed", "note": THUNDERCLAP, "age": 34}])
    assert set(result) == V1_FIELDS
    assert result["acuity"] <= 2  # the net applies whether or not the producer asked why


def test_a_thunderclap_headache_is_at_least_esi_2_and_says_where(results: Any) -> None:
    (result,) = results([{"tenant": "ed", "note": THUNDERCLAP, "age": 34, "explain": True}])
    assert result["acuity"] <= 2
    assert result["acuity"] <= result["model_acuity"]
    fired = {r["rule"]: r for r in result["reasons"]}
    assert any(rule.startswith("B-") for rule in fired)
    spans = [THUNDERCLAP[r["start"]:r["end"]].lower() for r in result["reasons"] if r["start"] is not None]
    assert any("worst headache" in span or "sudden" in span for span in spans)
    if result["acuity"] != result["model_acuity"]:
        assert result["needs_review"] is True  # the net changed the model's level


def test_danger_zone_vitals_from_fields_and_from_text_are_reported(results: Any) -> None:
    note = "c/o cough and fever x2 days, HR 128, sats 89% RA, mild work of breathing"
    (result,) = results([{"tenant": "ed", "note": note, "age": 71, "explain": True,
                          "vitals": {"resp_rate": 32, "temperature_c": 38.9}}])
    out = {(v["vital"], v["source"]) for v in result["vitals_out_of_range"]}
    assert ("resp_rate", "structured") in out
    assert ("spo2", "note") in out and ("heart_rate", "note") in out
    spo2 = next(v for v in result["vitals_out_of_range"] if v["vital"] == "spo2")
    assert "89" in note[spo2["start"]:spo2["end"]]
    assert result["acuity"] <= 2


def test_a_minor_complaint_is_left_alone(results: Any) -> None:
    (result,) = results([{"tenant": "ed", "note": ANKLE, "age": 25, "explain": True,
                          "vitals": {"heart_rate": 78, "resp_rate": 14, "spo2": 99}}])
    assert result["reasons"] == [] and result["vitals_out_of_range"] == []
    assert result["acuity"] == result["model_acuity"] >= 3


def test_negated_findings_do_not_fire(results: Any) -> None:
    note = ("laceration R index finger from kitchen knife, bleeding controlled, denies CP/SOB, no LOC, "
            "h/o seizures none today")
    (result,) = results([{"tenant": "ed", "note": note, "age": 40, "explain": True}])
    assert result["reasons"] == []
