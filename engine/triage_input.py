"""Triage input and the single text rendering the triage model sees.

Training and serving both call `format_triage_text`, so the structured fields reach the model in
exactly one layout: a short prefix of age/sex, arrival mode and vitals, then the free-text note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.errors import InputError

VITAL_KEYS = (
    "heart_rate",
    "resp_rate",
    "spo2",
    "temperature_c",
    "systolic_bp",
    "diastolic_bp",
    "pain",
)

# Rendering order of the vitals prefix, as a nurse reads them out; "BP" stands for systolic/diastolic.
_VITAL_ORDER = (
    ("heart_rate", "HR"),
    ("BP", "BP"),
    ("resp_rate", "RR"),
    ("spo2", "SpO2"),
    ("temperature_c", "T"),
    ("pain", "pain"),
)

_SEX_CODES = {
    "f": "F",
    "female": "F",
    "m": "M",
    "male": "M",
    "x": "X",
    "other": "X",
    "u": "U",
    "unknown": "U",
}

# Days per year for rendering infant ages; ESI neonatal rules are stated in days (1-28 d).
_DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class TriageInput:
    """One triage encounter: the nurse's note plus whatever structured fields the intake system has."""

    note: str
    age_years: float | None = None
    sex: str | None = None
    vitals: dict[str, float | None] = field(default_factory=dict)
    arrival_mode: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.vitals) - set(VITAL_KEYS)
        if unknown:
            raise InputError(f"unknown vital keys: {sorted(unknown)}")
        for key, value in self.vitals.items():
            if value is not None and not math.isfinite(value):
                raise InputError(f"vital {key} is not a finite number")
        if self.age_years is not None and not 0 <= self.age_years < 130:
            raise InputError("age_years must be in [0, 130)")


def format_age(age_years: float) -> str:
    """Ages as a nurse writes them: days under a month, months under two years, whole years after."""
    days = age_years * _DAYS_PER_YEAR + 1e-6  # why: 12/365.25*365.25 must render as 12d, not 11d
    if days < 30:
        return f"{max(int(days), 0)}d"
    if age_years < 2:
        return f"{int(age_years * 12 + 1e-6)}mo"
    return f"{int(age_years)}"


def _format_number(value: float) -> str:
    return f"{value:.1f}" if value != int(value) else f"{int(value)}"


def _blood_pressure(present: dict[str, float]) -> str | None:
    if "systolic_bp" not in present:
        return None
    systolic = _format_number(present["systolic_bp"])
    if "diastolic_bp" not in present:
        return systolic
    return f"{systolic}/{_format_number(present['diastolic_bp'])}"


def format_vitals(vitals: dict[str, float | None]) -> str:
    present = {k: v for k, v in vitals.items() if v is not None}
    rendered = {k: _format_number(v) for k, v in present.items()}
    bp = _blood_pressure(present)
    if bp is not None:
        rendered["BP"] = bp
    return " ".join(f"{label} {rendered[key]}" for key, label in _VITAL_ORDER if key in rendered)


def _demographics(inp: TriageInput) -> str:
    parts = []
    if inp.age_years is not None:
        parts.append(f"age {format_age(inp.age_years)}")
    if inp.sex:
        parts.append(_SEX_CODES.get(inp.sex.strip().lower(), inp.sex.strip()[:1].upper()))
    return " ".join(parts)


def format_triage_text(inp: TriageInput) -> str:
    """Render e.g. "age 67 F | EMS | HR 112 BP 94/60 RR 24 SpO2 91 T 38.6 pain 8 | <note>".

    Absent fields are left out (with their separator), so a note with no structured data is just the note.
    """
    segments = [_demographics(inp), (inp.arrival_mode or "").strip(), format_vitals(inp.vitals)]
    segments = [s for s in segments if s]
    segments.append(" ".join(inp.note.split()))
    return " | ".join(segments)


# Structured fields as numbers for a model's structured-feature input ("vitals-v1"): per field a
# scaled value and a present flag (1.0/0.0), in this order. A text-only input is all zeros.
# Centre and scale put a typical adult near 0 and a danger-zone value 1-3 units away; the model
# learns its own thresholds (a child's heart-rate limit differs from an adult's), nothing is flagged here.
STRUCTURED_FEATURES = "vitals-v1"
_STRUCTURED_SCALES = (
    ("heart_rate", 80.0, 40.0),
    ("resp_rate", 16.0, 10.0),
    ("spo2", 96.0, 5.0),
    ("temperature_c", 37.0, 1.5),
    ("systolic_bp", 120.0, 30.0),
    ("diastolic_bp", 75.0, 20.0),
    ("pain", 5.0, 5.0),
)
N_STRUCTURED = 2 * (1 + len(_STRUCTURED_SCALES))


def structured_features(inp: TriageInput | None) -> list[float]:
    """[log-age, age present, (vital, present) x 7]: the input's structured fields as numbers."""
    if inp is None:
        return [0.0] * N_STRUCTURED
    out = [0.0, 0.0] if inp.age_years is None else [math.log1p(inp.age_years) / 2.0 - 1.5, 1.0]
    for key, centre, scale in _STRUCTURED_SCALES:
        value = inp.vitals.get(key)
        out += [0.0, 0.0] if value is None else [(value - centre) / scale, 1.0]
    return out
