"""Loaders for the hand-written triage notes: the evaluation set and the development fixture.

- `training/data/triage_handwritten.jsonl` (`load_handwritten`): evaluation only; never used for
  training, rule tuning or threshold choice (see `training/data/README.md`).
- `training/data/triage_dev_notes.jsonl` (`load_dev_notes`): development only; the safety net's rules
  are designed and checked on it (with the synthetic development sets of `training.triage_dev`). Its
  ids start with "dev-", and it is never mixed into the evaluation set.

Each line is one note written by hand with its ESI label, the decision point that set it and the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.triage_input import TriageInput

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "triage_handwritten.jsonl"
DEV_PATH = Path(__file__).resolve().parent / "data" / "triage_dev_notes.jsonl"

# Fixture arrival codes -> the spelling the intake systems (and the synthetic generator) use.
ARRIVAL_MODES = {
    "walk_in": "walk-in",
    "ems": "EMS",
    "transfer": "transfer",
    "police": "police",
    "other": "other",
}


@dataclass(frozen=True)
class HandwrittenNote:
    """One hand-written note, its ESI label, the decision point (A-D) that set it and why."""

    id: str
    note: str
    age: float | None
    sex: str | None
    vitals: dict[str, float] = field(default_factory=dict)
    arrival_mode: str | None = None
    esi: int = 0
    decision_point: str = ""
    reason: str = ""

    def to_input(self) -> TriageInput:
        arrival = None if self.arrival_mode is None else ARRIVAL_MODES[self.arrival_mode]
        return TriageInput(
            note=self.note,
            age_years=self.age,
            sex=self.sex,
            vitals=dict(self.vitals),
            arrival_mode=arrival,
        )


def _vitals(raw: dict[str, Any] | None) -> dict[str, float]:
    return {key: float(value) for key, value in (raw or {}).items() if value is not None}


def _from_row(row: dict[str, Any]) -> HandwrittenNote:
    age = row.get("age")
    return HandwrittenNote(
        id=str(row["id"]),
        note=str(row["note"]),
        age=None if age is None else float(age),
        sex=row.get("sex"),
        vitals=_vitals(row.get("vitals")),
        arrival_mode=row.get("arrival_mode"),
        esi=int(row["esi"]),
        decision_point=str(row["decision_point"]),
        reason=str(row["reason"]),
    )


def load_handwritten(path: Path | str | None = None) -> list[HandwrittenNote]:
    """Every note of the hand-written set, in file order."""
    source = Path(path) if path is not None else DEFAULT_PATH
    with source.open(encoding="utf-8") as fh:
        return [_from_row(json.loads(line)) for line in fh if line.strip()]


def load_dev_notes(path: Path | str | None = None) -> list[HandwrittenNote]:
    """Every note of the hand-written development fixture, in file order (development only)."""
    return load_handwritten(DEV_PATH if path is None else path)
