"""The shipped triage model: loads through the serving runner and gets unambiguous notes right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.triage_input import TriageInput
from engine.triage_runner import load_triage

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "triage"
NORMAL = {
    "heart_rate": 78,
    "systolic_bp": 128,
    "diastolic_bp": 76,
    "resp_rate": 16,
    "spo2": 98,
    "temperature_c": 36.8,
}


@pytest.fixture(scope="module")
def runner():
    torch.set_num_threads(1)
    return load_triage(MODEL_DIR, device="cpu", precision="auto")  # the gated default, as served


UNAMBIGUOUS = [
    (
        TriageInput(
            "found down at home, CPR in progress, pulseless on EMS arrival, AED shocked x2",
            age_years=64,
            sex="M",
            arrival_mode="EMS",
        ),
        1,
    ),
    (
        TriageInput(
            "L sided facial droop and slurred speech, LKW 45 min ago",
            age_years=77,
            sex="F",
            vitals={**NORMAL, "systolic_bp": 188, "diastolic_bp": 104},
            arrival_mode="EMS",
        ),
        2,
    ),
    (
        TriageInput(
            "crushing substernal chest pain x1 hr radiating to L arm, diaphoretic, hx CAD s/p PCI",
            age_years=63,
            sex="M",
            vitals={**NORMAL, "pain": 8},
            arrival_mode="EMS",
        ),
        2,
    ),
    (TriageInput("abd pain x2 d, n/v, anorexia", age_years=45, sex="F", vitals={**NORMAL, "pain": 5}), 3),
    (
        TriageInput(
            "R ankle injury after rolling it playing soccer, swelling, ambulatory with limp. denies CP/SOB",
            age_years=24,
            sex="M",
            vitals={**NORMAL, "pain": 4},
            arrival_mode="walk-in",
        ),
        4,
    ),
    (
        TriageInput(
            "med refill of lisinopril, ran out", age_years=58, sex="F", vitals=NORMAL, arrival_mode="walk-in"
        ),
        5,
    ),
    (TriageInput("suture removal, placed 10 d ago", age_years=31, sex="M", vitals=NORMAL), 5),
]


def test_manifest_names_the_backbone_and_a_gated_default():
    manifest = json.loads((MODEL_DIR / "inferq-model.json").read_text())
    assert manifest["name"] == "triage-minilm" and manifest["labels"] == ["1", "2", "3", "4", "5"]
    default = manifest["precision"]["default"]
    assert manifest["precision"]["gate"]["policies"][default]["passed"]
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 25 * 1024 * 1024


def test_unambiguous_notes_get_their_esi_level(runner):
    predictions = runner.predict([inp for inp, _ in UNAMBIGUOUS])
    assert [p.acuity for p in predictions] == [level for _, level in UNAMBIGUOUS]
    for p in predictions:
        assert p.chunks == 1 and sum(p.probabilities) == pytest.approx(1.0, abs=1e-5)


def test_long_note_is_chunked_not_cut(runner):
    history = " ".join(
        f"Prior notes reviewed, last admission {2010 + i % 10} for pneumonia, stable since."
        for i in range(60)
    )
    note = f"TRANSFER SUMMARY. HPI: substernal chest pain radiating to jaw, diaphoretic. {history}"
    (prediction,) = runner.predict([TriageInput(note, age_years=70, sex="F", vitals=NORMAL)])
    assert prediction.chunks > 1 and not prediction.truncated
    assert 1 <= prediction.acuity <= 5
