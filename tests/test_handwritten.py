"""The hand-written triage evaluation set and the development fixture load, are well-formed, stay within the
intake bounds and stay apart."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from engine.triage_input import TriageInput
from training.handwritten import (
    ARRIVAL_MODES,
    DEFAULT_PATH,
    DEV_PATH,
    HandwrittenNote,
    load_dev_notes,
    load_handwritten,
)

# Bounds the intake contract accepts; (low, high, must be an integer).
VITAL_BOUNDS = {
    "heart_rate": (20, 300, True),
    "resp_rate": (2, 80, True),
    "spo2": (50, 100, False),
    "temperature_c": (20, 45, False),
    "systolic_bp": (40, 300, True),
    "diastolic_bp": (20, 200, True),
    "pain": (0, 10, True),
}
FIELDS = {"id", "note", "age", "sex", "vitals", "arrival_mode", "esi", "decision_point", "reason"}


@pytest.fixture(scope="module")
def notes() -> list[HandwrittenNote]:
    return load_handwritten()


@pytest.fixture(scope="module")
def raw_rows() -> list[dict[str, object]]:
    with DEFAULT_PATH.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_size_and_unique_ids(notes: list[HandwrittenNote]) -> None:
    assert len(notes) >= 150
    ids = [n.id for n in notes]
    assert len(set(ids)) == len(ids)


def test_every_level_is_represented(notes: list[HandwrittenNote]) -> None:
    counts = Counter(n.esi for n in notes)
    assert counts[1] >= 25 and counts[2] >= 45
    assert all(counts[level] > 0 for level in range(1, 6))


def test_rows_have_exactly_the_documented_fields(raw_rows: list[dict[str, object]]) -> None:
    for row in raw_rows:
        assert set(row) <= FIELDS and FIELDS - {"vitals"} <= set(row), row["id"]


@pytest.mark.parametrize("key", sorted(VITAL_BOUNDS))
def test_structured_vitals_within_bounds(raw_rows: list[dict[str, object]], key: str) -> None:
    low, high, integer = VITAL_BOUNDS[key]
    for row in raw_rows:
        vitals = row.get("vitals") or {}
        assert isinstance(vitals, dict)
        value = vitals.get(key)
        if value is None:
            continue
        assert low <= value <= high, (row["id"], key, value)
        assert not integer or isinstance(value, int), (row["id"], key, value)


def test_no_unknown_vital_keys_and_diastolic_below_systolic(notes: list[HandwrittenNote]) -> None:
    for n in notes:
        assert set(n.vitals) <= set(VITAL_BOUNDS), n.id
        if "systolic_bp" in n.vitals and "diastolic_bp" in n.vitals:
            assert n.vitals["diastolic_bp"] < n.vitals["systolic_bp"], n.id


def test_fields_in_bounds(notes: list[HandwrittenNote]) -> None:
    for n in notes:
        assert n.note.strip(), n.id
        assert n.age is None or 0 <= n.age <= 120, n.id
        assert n.sex in {"F", "M", None}, n.id
        assert n.arrival_mode is None or n.arrival_mode in ARRIVAL_MODES, n.id


def test_labels_and_reasons(notes: list[HandwrittenNote]) -> None:
    for n in notes:
        assert n.esi in {1, 2, 3, 4, 5}, n.id
        assert n.reason.strip(), n.id
        assert n.decision_point in {"A", "B", "C", "D"}, n.id


def test_decision_point_agrees_with_level(notes: list[HandwrittenNote]) -> None:
    allowed = {"A": {1}, "B": {2}, "D": {2}, "C": {3, 4, 5}}
    for n in notes:
        assert n.esi in allowed[n.decision_point], n.id


def test_to_input_works_for_all(notes: list[HandwrittenNote]) -> None:
    for n in notes:
        inp = n.to_input()
        assert isinstance(inp, TriageInput)
        assert inp.note == n.note
        assert inp.vitals == n.vitals
        assert all(isinstance(v, float) for v in inp.vitals.values())


def test_arrival_mode_mapping() -> None:
    note = HandwrittenNote(id="x", note="n", age=None, sex=None, arrival_mode="walk_in", esi=5, decision_point="C")
    assert note.to_input().arrival_mode == "walk-in"
    assert HandwrittenNote(id="y", note="n", age=None, sex=None, arrival_mode="ems").to_input().arrival_mode == "EMS"
    assert HandwrittenNote(id="z", note="n", age=None, sex=None).to_input().arrival_mode is None


def test_loads_from_an_explicit_path(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    row = {
        "id": "t-1",
        "note": "cold sx",
        "age": 0.038,
        "sex": None,
        "arrival_mode": "other",
        "esi": 5,
        "decision_point": "C",
        "reason": "no resources",
    }
    path.write_text(json.dumps(row) + "\n\n", encoding="utf-8")
    (loaded,) = load_handwritten(path)
    assert loaded.age == pytest.approx(0.038) and loaded.vitals == {}


# --- the development fixture (training/data/triage_dev_notes.jsonl) ---------------------------------------


@pytest.fixture(scope="module")
def dev_notes() -> list[HandwrittenNote]:
    return load_dev_notes()


def test_dev_fixture_is_its_own_file_with_dev_ids(dev_notes: list[HandwrittenNote]) -> None:
    assert DEV_PATH != DEFAULT_PATH
    assert len(dev_notes) >= 60
    ids = [n.id for n in dev_notes]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("dev-") for i in ids)


def test_dev_fixture_shares_no_note_or_id_with_the_evaluation_set(
    notes: list[HandwrittenNote], dev_notes: list[HandwrittenNote]
) -> None:
    assert not {n.id for n in notes} & {n.id for n in dev_notes}
    evaluation = {n.note.strip().lower() for n in notes}
    shared = [n.id for n in dev_notes if n.note.strip().lower() in evaluation]  # ids only: never print those notes
    assert not shared, f"development notes that copy an evaluation note: {shared}"


def test_dev_fixture_rows_are_well_formed(dev_notes: list[HandwrittenNote]) -> None:
    with DEV_PATH.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    allowed = {"A": {1}, "B": {2}, "D": {2}, "C": {3, 4, 5}}
    for row, n in zip(rows, dev_notes, strict=True):
        assert set(row) <= FIELDS and FIELDS - {"vitals"} <= set(row), n.id
        for key, value in n.vitals.items():
            low, high, _ = VITAL_BOUNDS[key]
            assert low <= value <= high, (n.id, key)
        assert n.note.strip() and n.reason.strip(), n.id
        assert n.age is None or 0 <= n.age <= 120, n.id
        assert n.sex in {"F", "M", None}, n.id
        assert n.arrival_mode is None or n.arrival_mode in ARRIVAL_MODES, n.id
        assert n.esi in allowed[n.decision_point], n.id
    assert all(any(n.esi == level for n in dev_notes) for level in range(1, 6))


def test_development_seeds_are_used_by_nothing_else() -> None:
    from training import evaluate_triage, triage_dev
    from training.train_triage import TrainConfig

    cfg = TrainConfig(out=Path("unused"))
    used = {cfg.seed, cfg.seed + 1, cfg.seed + 2, evaluate_triage.FRESH_SEED}
    assert used <= triage_dev.RESERVED_SEEDS
    assert not set(triage_dev.DEV_SEEDS) & triage_dev.RESERVED_SEEDS
