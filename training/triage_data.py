"""Seeded synthetic triage notes labelled by the Emergency Severity Index (ESI v4).

Each example is drawn as facts first (complaint family, age, visible vitals, history flags, resources the
visit needs); `esi_decision` turns the facts into an acuity by decision points A-D. The note is then
written from the same facts with its own random stream, so the wording never moves the label: one of
several phrasings of the chief complaint (standard, telegraphic shorthand, narrative, the patient's or a
relative's own words, non-native English), a note frame (triage line, shorthand, narrative sentences or
a long transfer summary), second complaints and distractor findings that need no resources, pertinent
negatives, paediatric phrasing (ages in days/weeks/months, history per parents, weight in kg, feeding
and wet diapers), vitals in many written formats (Fahrenheit too), abbreviations and misspellings.
Surface templates are split into a training and a held-out group (`generate(..., template_split=)`).
A small controlled label noise imitates nurse disagreement. All names and places are invented; there
is no PHI.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from engine.triage_input import TriageInput, format_triage_text

# Target share of ESI 1..5 (real departments: ~1-2%, 10-20%, 40-50%, 20-30%, 3-10%).
CLASS_MIX = (0.02, 0.15, 0.45, 0.28, 0.10)
# Share of examples whose ESI label is moved one level, imitating inter-nurse disagreement (~2-3%).
LABEL_NOISE = 0.025
# Share of notes rendered as a transfer summary (several hundred words; most exceed 512 tokens).
LONG_SHARE = 0.05
# Share of notes with one to three typos.
TYPO_SHARE = 0.25
NEONATE_DAYS = 28
FEVER_C = 38.0
_DAYS_PER_YEAR = 365.25

# ---------------------------------------------------------------------------------------------------
# ESI rules
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What a nurse knows at triage; vitals holds only the values visible in the note or fields."""

    age_years: float
    decision: str  # "A": life-saving intervention, "B": high-risk complaint, "C": decided by resources
    resources: int
    vitals: dict[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()


# Pediatric danger-zone bands (ESI v4 decision point D): upper age bound in years, HR limit, RR limit.
_DANGER_BANDS = ((0.25, 180, 50), (3.0, 160, 40), (8.0, 140, 30), (200.0, 100, 20))
# SpO2 below this is a danger-zone vital at any age (decision point D).
DANGER_SPO2 = 92


def danger_zone(age_years: float, vitals: dict[str, float]) -> bool:
    hr_limit, rr_limit = next((hr, rr) for upper, hr, rr in _DANGER_BANDS if age_years < upper)
    return (
        vitals.get("heart_rate", 0) > hr_limit
        or vitals.get("resp_rate", 0) > rr_limit
        or vitals.get("spo2", 100) < DANGER_SPO2
    )


def needs_lifesaving(f: Facts) -> bool:
    """Decision point A from vitals: hypoxia with respiratory distress, opioid-type hypoventilation, shock."""
    v = f.vitals
    if "respiratory" in f.flags and v.get("spo2", 100) < 90:
        return True
    if "overdose" in f.flags and v.get("resp_rate", 99) < 10:
        return True
    if f.age_years >= 8 and v.get("systolic_bp", 999) < 80:
        return True
    return v.get("heart_rate", 999) < 40 and v.get("systolic_bp", 999) < 90


def high_risk(f: Facts) -> bool:
    """Decision point B beyond the complaint itself: confusion, severe pain, febrile high-risk hosts."""
    fever = f.vitals.get("temperature_c", 0) >= FEVER_C
    return (
        "new_confusion" in f.flags
        or (f.vitals.get("pain", 0) >= 7 and "pain_not_credible" not in f.flags)
        or (fever and f.age_years * _DAYS_PER_YEAR <= NEONATE_DAYS)
        or (fever and "immunocompromised" in f.flags)
        or (fever and f.vitals.get("systolic_bp", 999) < 90)
        or ("head_strike" in f.flags and "anticoagulated" in f.flags)
    )


def esi_decision(f: Facts) -> tuple[int, str]:
    """(ESI level, decision point that set it)."""
    if f.decision == "A" or needs_lifesaving(f):
        return 1, "A"
    if f.decision == "B" or high_risk(f):
        return 2, "B"
    if f.resources >= 2:
        return (2, "D") if danger_zone(f.age_years, f.vitals) else (3, "C")
    return (4, "C") if f.resources == 1 else (5, "C")


def esi_level(f: Facts) -> int:
    return esi_decision(f)[0]


# ---------------------------------------------------------------------------------------------------
# Complaints
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Complaint:
    """A chief complaint family; `texts` are templates with {a|b} alternatives."""

    key: str
    decision: str
    resources: int
    levels: tuple[int, ...]  # target levels this complaint is drawn for
    texts: tuple[str, ...]
    ages: tuple[float, float] = (18, 85)
    sex: str | None = None
    extras: tuple[str, ...] = ()
    profiles: tuple[tuple[str, float], ...] = (("normal", 1.0),)
    pain: tuple[int, int] | None = None
    arrival: str = "walk"
    flags: tuple[str, ...] = ()
    positives: tuple[str, ...] = ()  # negation keys this complaint asserts, so never negated
    weight: float = 1.0


_DANGER = (("normal", 0.6), ("tachy", 0.15), ("tachypnea", 0.1), ("hypoxic", 0.05), ("febrile", 0.1))
_RESP = (("normal", 0.45), ("tachypnea", 0.2), ("hypoxic", 0.2), ("critical_resp", 0.05), ("febrile", 0.1))
_MILD = (("normal", 0.8), ("tachy", 0.1), ("febrile", 0.1))

COMPLAINTS: tuple[Complaint, ...] = (
    # --- decision point A -------------------------------------------------------------------------
    Complaint(
        "arrest",
        "A",
        5,
        (1,),
        (
            "{found down|collapsed} {at home|at work|at the gym|in a parking lot}, {CPR in "
            "progress|bystander CPR x{5|10|15} min"
            "|pulseless on EMS arrival}, {AED shocked x{1|2|3}|no shock advised|ROSC en route|no ROSC}",
            "cardiac arrest, {CPR ongoing|compressions in progress}, {intubated in field|BVM ventilation}",
        ),
        ages=(35, 90),
        profiles=(("arrest", 1.0),),
        arrival="ems",
        positives=("loc",),
    ),
    Complaint(
        "resp_distress",
        "A",
        5,
        (1,),
        (
            "severe {resp distress|respiratory distress|SOB}, {tripoding|accessory muscle use|unable to "
            "speak in full sentences}, "
            "{cyanotic|lips blue|gray and diaphoretic}",
            "{acute|sudden} {SOB|shortness of breath}, {one word answers|can't speak|gasping}, "
            "{retractions|tripoding}",
        ),
        ages=(2, 90),
        profiles=(("critical_resp", 1.0),),
        arrival="ems",
        flags=("respiratory",),
        positives=("sob",),
    ),
    Complaint(
        "unresponsive",
        "A",
        5,
        (1,),
        (
            "{unresponsive|found unresponsive}, {responds only to painful stimuli|no response to voice or "
            "sternal rub|GCS {5|6|7}}",
            "{pt|patient} {obtunded|unarousable}, {snoring respirations|gurgling airway}",
        ),
        ages=(18, 95),
        profiles=(("normal", 0.5), ("shock", 0.3), ("resp_depressed", 0.2)),
        arrival="ems",
        positives=("loc", "confusion"),
    ),
    Complaint(
        "anaphylaxis",
        "A",
        5,
        (1,),
        (
            "{ate peanuts|bee sting|took amoxicillin} {then|and now} {throat swelling|stridor|tongue "
            "swelling}, "
            "{diffuse hives|flushed}, {hypotensive|lightheaded}",
            "anaphylaxis, {stridor|audible stridor}, {EpiPen given x1|epi given by EMS} {without "
            "improvement|minimal relief}",
        ),
        ages=(3, 75),
        profiles=(("shock", 0.7), ("critical_resp", 0.3)),
        arrival="ems",
        flags=("respiratory",),
        positives=("sob",),
    ),
    Complaint(
        "hemorrhage",
        "A",
        5,
        (1,),
        (
            "{GSW|stab wound} to {abdomen|chest|thigh}, {uncontrolled bleeding|bleeding through dressings}, "
            "{pale|diaphoretic}",
            "large {hematemesis|volume hematemesis|BRBPR}, {pale and clammy|near syncope}, {hx varices|hx "
            "cirrhosis}",
        ),
        ages=(18, 80),
        profiles=(("shock", 1.0),),
        arrival="ems",
        positives=("hematemesis", "syncope"),
    ),
    Complaint(
        "status_epilepticus",
        "A",
        5,
        (1,),
        (
            "{seizing|actively seizing} x{10|15|20|30} min, {no return to baseline|continuous seizure "
            "activity}",
            "multiple seizures without return to baseline, {ativan given by EMS|versed x2 given}, still "
            "seizing",
        ),
        ages=(1, 80),
        profiles=(("normal", 0.6), ("tachy", 0.4)),
        arrival="ems",
        positives=("loc", "confusion"),
    ),
    Complaint(
        "brady",
        "A",
        5,
        (1,),
        (
            "{dizzy|near syncope|weak}, {bradycardic|brady|slow pulse} on monitor, {pale|diaphoretic}, "
            "{hx CHB|on metoprolol}",
        ),
        ages=(55, 95),
        profiles=(("brady", 1.0),),
        arrival="ems",
        positives=("syncope",),
    ),
    # --- decision point B ------------------------------------------------------------------------
    Complaint(
        "acs",
        "B",
        3,
        (2,),
        (
            "{substernal|crushing|pressure-like|central} {chest pain|CP|chest pressure} {x{1|2|3} hrs|since "
            "{0600|0830|1400}|"
            "started at rest}, {radiating to L arm|radiating to jaw|radiating to back}",
            "{c/o|complains of|pt states} {chest pain|CP|chest tightness} {with exertion|at rest}, "
            "{diaphoretic|nauseous|clammy}",
        ),
        ages=(40, 90),
        extras=(
            "diaphoretic",
            "nausea",
            "hx CAD s/p PCI",
            "took NTG x{1|2} w/o relief",
            "ASA 324 given by EMS",
        ),
        profiles=(("normal", 0.6), ("tachy", 0.3), ("hypertensive", 0.1)),
        pain=(3, 9),
        arrival="mixed",
        positives=("chest_pain",),
        weight=3.0,
    ),
    Complaint(
        "stroke",
        "B",
        3,
        (2,),
        (
            "{R|L} sided {weakness|facial droop|arm weakness}, {slurred speech|word finding difficulty}, "
            "LKW {0730|{30|45|90} min ago|1 hr ago|2 hrs ago}",
            "{sudden|acute} onset {slurred speech|aphasia} and {R|L} {arm|leg} numbness, {stroke alert|code "
            "stroke} called",
        ),
        ages=(45, 95),
        profiles=(("normal", 0.6), ("hypertensive", 0.4)),
        arrival="mixed",
        positives=("neuro",),
        weight=2.0,
    ),
    Complaint(
        "si_plan",
        "B",
        2,
        (2,),
        (
            "{SI|suicidal ideation} with plan to {overdose on pills|hang self|shoot self|jump off bridge}",
            "{endorses SI|pt states wants to die}, has plan {and means|to overdose}, {hx depression|recent "
            "breakup}",
            "{HI|homicidal ideation} with plan {toward neighbor|toward ex}, {agitated|pacing}",
        ),
        ages=(14, 75),
        arrival="mixed",
        positives=("si",),
        weight=1.5,
    ),
    Complaint(
        "ectopic",
        "B",
        3,
        (2,),
        (
            "{LMP {6|7|8} wks ago|+ home preg test}, {vaginal bleeding|spotting} and {RLQ|LLQ|lower abd} "
            "pain, {dizzy|lightheaded}",
        ),
        ages=(17, 42),
        sex="F",
        pain=(4, 9),
        arrival="walk",
        positives=("pregnancy",),
    ),
    Complaint(
        "torsion",
        "B",
        3,
        (2,),
        (
            "{sudden|acute} onset {L|R} testicular pain x{1|2|3} hrs, {swelling|high-riding testicle}, "
            "{vomiting x2|nausea}",
        ),
        ages=(10, 25),
        sex="M",
        pain=(6, 10),
        arrival="walk",
    ),
    Complaint(
        "dissection",
        "B",
        3,
        (2,),
        ("sudden {tearing|ripping} chest pain radiating to {back|between shoulder blades}, hx HTN",),
        ages=(45, 85),
        profiles=(("hypertensive", 0.7), ("tachy", 0.3)),
        pain=(7, 10),
        arrival="mixed",
        positives=("chest_pain",),
    ),
    Complaint(
        "dka",
        "B",
        3,
        (2,),
        (
            "{T1DM|type 1 diabetic}, {n/v|vomiting} x{1|2} d, {BG HI on meter|glucose 540|sugar >500}, "
            "{fruity breath|polyuria}",
        ),
        ages=(10, 40),
        profiles=(("tachy", 0.5), ("tachypnea", 0.5)),
        arrival="mixed",
    ),
    Complaint(
        "chem_eye",
        "B",
        2,
        (2,),
        (
            "splashed {bleach|drain cleaner|oven cleaner|battery acid} in {R|L|both} eye{|s}, "
            "{burning|can't open eye}",
        ),
        ages=(4, 70),
        pain=(5, 9),
        arrival="walk",
    ),
    Complaint(
        "trauma",
        "B",
        4,
        (2,),
        (
            "{MVC rollover|high speed MVC|MVC ~{50|60|70} mph}, {restrained driver|unrestrained passenger}, "
            "{+ airbag|ejected}",
            "fall from {12|15|20} ft {ladder|roof}",
            "pedestrian struck by car at {25|30|40} mph",
            "motorcycle crash, {helmeted|unhelmeted}",
        ),
        ages=(16, 80),
        profiles=(("normal", 0.6), ("tachy", 0.4)),
        pain=(3, 9),
        arrival="ems",
        weight=1.5,
    ),
    Complaint(
        "overdose",
        "B",
        3,
        (1, 2),
        (
            "{intentional|unknown} ingestion of {30 tabs of tylenol|bottle of sertraline|unknown pills} "
            "{1|2|3} hrs ago",
            "found with needle in arm, {pinpoint pupils|narcan x1 by EMS}, {somnolent|drowsy}",
        ),
        ages=(15, 70),
        profiles=(("normal", 0.7), ("resp_depressed", 0.3)),
        arrival="ems",
        flags=("overdose",),
        positives=("si",),
    ),
    Complaint(
        "sepsis",
        "B",
        3,
        (2,),
        ("{fever|fevers} and {rigors|chills}, {lethargic|weak}, {hx UTI|foley in place|from nursing home}",),
        ages=(55, 95),
        profiles=(("sepsis", 1.0),),
        arrival="mixed",
        positives=("fever",),
    ),
    Complaint(
        "preeclampsia",
        "B",
        3,
        (2,),
        (
            "{32|34|36} wks pregnant, {severe HA|headache}, {visual changes|seeing spots}, {swelling "
            "hands|RUQ pain}",
        ),
        ages=(18, 42),
        sex="F",
        profiles=(("hypertensive", 1.0),),
        positives=("pregnancy",),
    ),
    # --- decision points C/D: two or more resources ---------------------------------------------
    Complaint(
        "abd_pain",
        "C",
        2,
        (2, 3),
        (
            "{abd pain|abdominal pain|RLQ pain|epigastric pain|LLQ pain} x{1|2|3} d, {n/v|nausea|anorexia}",
            "{c/o|complains of} {generalized|lower|upper} abd pain {since yesterday|since {0800|2200}}",
        ),
        profiles=_DANGER,
        pain=(3, 9),
        weight=3.0,
        flags=("infection",),
    ),
    Complaint(
        "vomiting",
        "C",
        2,
        (2, 3),
        ("{vomiting|n/v/d} x{1|2|3} d, unable to keep fluids down, {weak|dizzy when standing}",),
        ages=(1, 90),
        profiles=_DANGER,
        flags=("infection",),
        weight=2.0,
    ),
    Complaint(
        "pneumonia",
        "C",
        2,
        (1, 2, 3),
        ("{cough|productive cough} x{3|4|5} d, {fever|subjective fevers}, {SOB|DOE|pleuritic pain}",),
        ages=(1, 95),
        profiles=_RESP,
        flags=("respiratory", "infection"),
        positives=("sob", "fever"),
        weight=2.0,
    ),
    Complaint(
        "asthma_mod",
        "C",
        2,
        (1, 2, 3),
        (
            "{asthma|COPD} exacerbation, {wheezing|tight chest}, used {inhaler x{4|5|6}|nebs at home} w/o "
            "relief",
        ),
        ages=(3, 85),
        profiles=_RESP,
        flags=("respiratory",),
        positives=("sob",),
        weight=1.5,
    ),
    Complaint(
        "chf",
        "C",
        2,
        (2, 3),
        ("{leg swelling|bilat LE edema} and {DOE|orthopnea}, {3|5|8} lb weight gain, hx CHF",),
        ages=(55, 95),
        profiles=_RESP,
        flags=("respiratory",),
        positives=("sob",),
    ),
    Complaint(
        "kidney_stone",
        "C",
        3,
        (2, 3),
        ("{R|L} flank pain radiating to groin, {hx kidney stones|hematuria}, {n/v|nausea}",),
        ages=(20, 70),
        profiles=_MILD,
        pain=(4, 10),
        weight=1.5,
    ),
    Complaint(
        "pyelo",
        "C",
        3,
        (2, 3),
        ("{dysuria|burning with urination} and {R|L} flank pain x{2|3} d, {fever|chills}",),
        ages=(16, 80),
        profiles=_DANGER,
        pain=(3, 8),
        flags=("infection",),
        positives=("fever",),
    ),
    Complaint(
        "cellulitis",
        "C",
        2,
        (2, 3),
        (
            "{redness|swelling} {L|R} {lower leg|forearm} {spreading|getting bigger} x{2|3} d, {warm to "
            "touch|streaking}",
        ),
        profiles=_MILD,
        pain=(2, 7),
        flags=("infection",),
    ),
    Complaint(
        "headache",
        "C",
        2,
        (2, 3),
        (
            "{HA|headache} x{1|2} d, {hx migraines|similar to prior migraines}, {photophobia|nausea}, "
            "gradual onset",
        ),
        ages=(14, 70),
        profiles=_MILD,
        pain=(4, 9),
        positives=(),
    ),
    Complaint(
        "syncope",
        "C",
        2,
        (2, 3),
        (
            "{syncopal episode|passed out|fainted} {while standing in line|at church|after blood draw}, "
            "back to baseline",
        ),
        ages=(14, 45),
        profiles=_MILD,
        positives=("syncope", "loc"),
    ),
    Complaint(
        "hip_fall",
        "C",
        2,
        (2, 3),
        ("{mechanical fall|tripped over rug|slipped on ice}, {R|L} hip pain, unable to bear weight",),
        ages=(60, 98),
        profiles=_MILD,
        pain=(3, 9),
        arrival="mixed",
    ),
    Complaint(
        "fall_head",
        "C",
        2,
        (2, 3),
        (
            "{mechanical fall|fell out of bed|tripped on stairs}, {hit head|struck head on "
            "{table|floor|counter}}, "
            "{small hematoma to forehead|abrasion to scalp}",
        ),
        ages=(60, 98),
        profiles=_MILD,
        arrival="mixed",
        flags=("head_strike",),
        positives=("head_strike",),
        weight=1.5,
    ),
    Complaint(
        "gi_bleed",
        "C",
        2,
        (2, 3),
        ("{BRBPR|dark stools|blood in stool} x{1|2} d, {hx hemorrhoids|hx diverticulosis}",),
        profiles=_DANGER,
        positives=(),
    ),
    Complaint(
        "vag_bleed",
        "C",
        2,
        (3,),
        (
            "heavy {vaginal bleeding|menses} x{4|5|6} d, soaking {4|5|6} pads/day, {not pregnant|neg home "
            "UPT}",
        ),
        ages=(18, 50),
        sex="F",
        profiles=_MILD,
        positives=("pregnancy",),
    ),
    Complaint(
        "peds_vomiting",
        "C",
        2,
        (2, 3),
        (
            "{vomiting|v/d} x{1|2} d, {decreased wet diapers|no wet diaper since AM}, {fussy|tired}, per "
            "{mom|dad|parent}",
        ),
        ages=(0.3, 6),
        profiles=_DANGER,
        flags=("infection",),
        arrival="walk",
    ),
    Complaint(
        "peds_fever",
        "C",
        2,
        (2, 3),
        (
            "fever {x{1|2|3} d|since last night}, {cough|pulling at ears|rash}, {fussy|decreased PO}, per "
            "{mom|parent}",
        ),
        ages=(0.3, 8),
        profiles=(("febrile", 0.6), ("tachy", 0.2), ("tachypnea", 0.2)),
        flags=("infection", "respiratory"),
        positives=("fever",),
        weight=1.5,
    ),
    Complaint(
        "neonate",
        "C",
        2,
        (2, 3),
        (
            "{fussy|poor feeding|sleepy}, {felt warm|fever at home|temp at home}, per {mom|parents}, born "
            "full term",
        ),
        ages=(3 / _DAYS_PER_YEAR, 27 / _DAYS_PER_YEAR),
        profiles=(("febrile", 0.7), ("normal", 0.3)),
        flags=("infection",),
        positives=("fever",),
    ),
    Complaint(
        "chemo_patient",
        "C",
        2,
        (2, 3),
        (
            "{fatigue|nausea|weakness} x{2|3} d, {currently on chemo|on chemo for {breast ca|lymphoma|AML}}, "
            "last {cycle|infusion} {5|7|10} d ago",
        ),
        profiles=(("febrile", 0.6), ("normal", 0.4)),
        flags=("immunocompromised", "infection"),
        positives=("cancer",),
    ),
    Complaint(
        "intox",
        "C",
        2,
        (3,),
        (
            "{EtOH intox|intoxicated}, {found sleeping on bench|friends worried}, {vomiting|ataxic}, "
            "arousable to voice",
        ),
        ages=(18, 65),
        profiles=_MILD,
        arrival="ems",
    ),
    Complaint(
        "hyperglycemia",
        "C",
        2,
        (3,),
        (
            "{high sugar|BG 380 at home|hyperglycemia}, {polyuria|thirsty}, {ran out of insulin|missed "
            "metformin}, hx DM2",
        ),
        ages=(30, 80),
        profiles=_MILD,
    ),
    Complaint(
        "seizure_single",
        "C",
        2,
        (3,),
        (
            "{witnessed seizure|seizure} x1 at home, {now back to baseline|A&Ox4 now}, hx epilepsy, {missed "
            "keppra|ran out of meds}",
        ),
        ages=(5, 70),
        profiles=_MILD,
        positives=("loc",),
    ),
    Complaint(
        "chest_pain_low",
        "C",
        2,
        (3,),
        (
            "{intermittent|on and off} {chest pain|CP} x{2|3} wks, {worse with movement|after URI}, {no "
            "exertional sx|nonexertional}",
        ),
        ages=(18, 35),
        profiles=_MILD,
        pain=(2, 5),
        positives=("chest_pain",),
        weight=0.6,
    ),
    # --- decision point C: one resource -----------------------------------------------------------
    Complaint(
        "ankle",
        "C",
        1,
        (4,),
        (
            "{R|L} ankle {injury|pain|sprain} after {rolling it|twisting it} {playing soccer|on "
            "stairs|stepping off curb}, "
            "{swelling|ecchymosis}, {ambulatory with limp|able to bear weight}",
        ),
        ages=(8, 70),
        profiles=_MILD,
        pain=(2, 8),
        weight=2.0,
    ),
    Complaint(
        "wrist",
        "C",
        1,
        (4,),
        (
            "{FOOSH|fell on outstretched hand}, {R|L} wrist pain and swelling",
            "{R|L} {finger|thumb|toe} injury, {jammed it|caught in door|stubbed}, {swollen|bruised}",
        ),
        ages=(4, 80),
        profiles=_MILD,
        pain=(2, 8),
        weight=2.0,
    ),
    Complaint(
        "laceration",
        "C",
        1,
        (4,),
        (
            "{lac|laceration} to {R|L} {hand|finger|forearm|chin} from {kitchen knife|broken glass|metal "
            "edge}, "
            "{bleeding controlled|bleeding controlled with pressure}, ~{2|3|4} cm",
        ),
        ages=(2, 80),
        pain=(2, 6),
        weight=2.0,
    ),
    Complaint(
        "uti",
        "C",
        1,
        (4,),
        ("{dysuria|burning with urination} and {frequency|urgency} x{1|2|3} d",),
        ages=(16, 70),
        sex="F",
        pain=(1, 5),
        weight=1.5,
    ),
    Complaint(
        "cough",
        "C",
        1,
        (4,),
        (
            "{cough|dry cough|productive cough} x{1|2} wks, {no improvement with OTC meds|keeping pt up at "
            "night}",
        ),
        ages=(8, 80),
    ),
    Complaint(
        "mild_asthma",
        "C",
        1,
        (4,),
        ("mild {wheezing|asthma flare}, {ran out of inhaler|used albuterol x1}, speaking full sentences",),
        ages=(5, 60),
        flags=("respiratory",),
        positives=("sob",),
    ),
    Complaint(
        "abscess",
        "C",
        1,
        (4,),
        ("{abscess|boil|painful bump} {L|R} {axilla|buttock|thigh} x{3|4|5} d, {draining|fluctuant}",),
        pain=(2, 7),
    ),
    Complaint(
        "foreign_body",
        "C",
        1,
        (4,),
        ("{bead|pea|small toy} in {R|L} {ear|nostril}, per {mom|dad}",),
        ages=(2, 9),
    ),
    Complaint(
        "back_pain",
        "C",
        1,
        (4,),
        (
            "{chronic|low} back pain {flare|worse} after {lifting boxes|yard work}, {hx same|similar to "
            "prior}, "
            "{requesting something for pain|wants pain shot}",
        ),
        ages=(20, 70),
        pain=(3, 8),
        weight=1.2,
    ),
    Complaint(
        "depression",
        "C",
        1,
        (4,),
        (
            "{depressed mood|feeling down|anxiety} x{2|3} wks, {wants to talk to someone|requesting psych "
            "eval}",
        ),
        ages=(16, 70),
        positives=(),
    ),
    Complaint(
        "urinary_retention",
        "C",
        1,
        (4,),
        ("unable to urinate since {this AM|last night}, {suprapubic fullness|hx BPH}",),
        ages=(55, 90),
        sex="M",
        pain=(3, 7),
    ),
    Complaint(
        "peds_arm",
        "C",
        1,
        (4,),
        (
            "fell off {monkey bars|trampoline|bike}, {R|L} {forearm|elbow} pain, {holding arm|won't use "
            "arm}, per {mom|dad}",
        ),
        ages=(3, 12),
        pain=(3, 8),
    ),
    Complaint(
        "chest_wall",
        "C",
        1,
        (4,),
        (
            "{chest wall pain|L chest soreness} after {weightlifting|moving furniture}, reproducible with "
            "palpation",
        ),
        ages=(18, 35),
        pain=(2, 6),
        positives=("chest_pain",),
        weight=0.5,
    ),
    Complaint(
        "sti",
        "C",
        1,
        (4,),
        ("{wants STD testing|penile discharge|vaginal discharge} x{3|5} d",),
        ages=(16, 45),
    ),
    # --- decision point C: no resources -----------------------------------------------------------
    Complaint(
        "refill",
        "C",
        0,
        (5,),
        (
            "{med refill|needs refill of} {lisinopril|metformin|inhaler|BP meds}, {ran out|PCP unavailable}",
            "requesting {rx refill|prescription refill}, out of meds x{1|2} d",
        ),
        ages=(25, 85),
        weight=2.0,
    ),
    Complaint(
        "suture_removal",
        "C",
        0,
        (5,),
        ("{suture removal|here for stitches out}, placed {7|10} d ago",),
        ages=(4, 80),
    ),
    Complaint(
        "uri",
        "C",
        0,
        (5,),
        ("{cold sx|congestion and runny nose|URI sx} x{2|3|4} d, {mild cough|sneezing}",),
        ages=(1, 70),
        weight=1.5,
    ),
    Complaint(
        "sore_throat",
        "C",
        0,
        (5,),
        ("{sore throat|ST} x{1|2} d, {painful swallowing|hoarse}",),
        ages=(4, 60),
        pain=(2, 6),
    ),
    Complaint(
        "rash",
        "C",
        0,
        (5,),
        ("{itchy rash|poison ivy|rash} on {arms|legs|trunk} x{2|3} d, {after hiking|new detergent}",),
        ages=(1, 80),
    ),
    Complaint(
        "insect_bite",
        "C",
        0,
        (5,),
        ("{insect bite|bug bite|tick bite} {R|L} {arm|leg}, {mild redness|itchy}",),
    ),
    Complaint(
        "dental",
        "C",
        0,
        (5,),
        ("{toothache|dental pain} x{2|3} d, {no dentist|can't see dentist until Monday}",),
        pain=(3, 8),
    ),
    Complaint(
        "pink_eye", "C", 0, (5,), ("{red eye|pink eye|eye crusting} x{1|2} d, {itchy|watery}",), ages=(1, 60)
    ),
    Complaint("ear_pain", "C", 0, (5,), ("{ear pain|earache} {R|L} x{1|2} d",), ages=(1, 60), pain=(2, 6)),
    Complaint(
        "work_note",
        "C",
        0,
        (5,),
        ("{needs work note|school note needed} after {cold|stomach bug} last week",),
        ages=(8, 60),
    ),
    Complaint(
        "minor_burn",
        "C",
        0,
        (5,),
        ("{small burn|minor burn} to {finger|hand} from {stove|curling iron}, {blister|red}",),
        pain=(1, 5),
    ),
)


# ---------------------------------------------------------------------------------------------------
# Paraphrase families
# ---------------------------------------------------------------------------------------------------

# Other ways of writing each family's chief complaint, beside its standard templates (`Complaint.texts`,
# style "std"): (style, template). "tele" is telegraphic nursing shorthand, "narr" a narrative, "quote"
# the patient's own words and "nonnative" a non-native speaker's words; with a "_kin" suffix a relative
# speaks, which fits patients of any age (the patient's own voice needs age >= VOICE_MIN_AGE). A variant
# never states a fact that the ESI rules read (vitals, pain scores, confusion, fever in a high-risk host):
# those come only from the facts. Tokens: $he $He $his $His $him $himself follow the patient's sex;
# $kin ("my husband") and $per ("per wife") name one relative, chosen together.
PARAPHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    # --- decision point A -------------------------------------------------------------------------
    "arrest": (
        ("tele", "cardiac arrest, {CPR in progress|CPR ongoing} on arrival, {VF|PEA|asystole} on monitor, "
         "{LUCAS device in place|mechanical CPR}"),
        ("tele", "witnessed arrest {at home|at dinner|while shoveling snow}, bystander CPR, AED x{1|2}, "
         "{+ROSC PTA|no ROSC}"),
        ("narr", "EMS reports pt was found down by {family|a coworker|$his neighbor} {in the bathroom|in the "
         "driveway|at the kitchen table}, pulseless, CPR started and continued en route"),
        ("quote_kin", '"$he just fell over and stopped breathing" $per, pulseless on EMS arrival, '
         "{CPR in progress|compressions ongoing}"),
        ("nonnative_kin", '"please help, $he is not breathing, no pulse" $per, CPR in progress'),
    ),
    "resp_distress": (
        ("tele", "severe SOB, {tripoding|tripod position}, {+retractions|accessory mm use}, {1-2 word "
         "dyspnea|speaking 1-2 words}, {cyanotic|dusky}"),
        ("narr", "pt {arrived|was brought in} gasping for air, {unable to complete a sentence|can only say a "
         "word or two}, {lips are blue|color is gray}, working hard to breathe"),
        ("quote", '"I can\'t... breathe" between gasps, {tripoding|sitting bolt upright}, {dusky|cyanotic}'),
        ("nonnative_kin", '"$kin $he cannot breathe good, $his lips is blue" $per, {severe retractions|'
         "gasping}"),
        ("tele", "acute resp distress, {+stridor|wheezes throughout}, {retracting|nasal flaring}, "
         "{gray|mottled}"),
    ),
    "unresponsive": (
        ("tele", "found down, unresp to verbal, {withdraws to pain only|+sternal rub response only}, "
         "{GCS 6|GCS 7|GCS 8}, {sonorous resps|snoring resps}"),
        ("narr", "$his {roommate|wife|son} found $him {on the floor|in bed} this morning and could not wake "
         "$him; pt {does not respond to voice|only moans to painful stimuli}"),
        ("quote_kin", '"$he won\'t wake up" $per, unresponsive to voice, {gurgling|snoring} respirations'),
        ("nonnative_kin", '"$kin $he sleep and not wake up, I shake and $he no answer" $per, '
         "{responds to pain only|GCS {5|6|7}}"),
    ),
    "anaphylaxis": (
        ("tele", "{PCN|shellfish|peanut|bee sting} allergic rxn, {stridor|throat tight w/ stridor}, "
         "{diffuse hives|urticaria}, {BP soft|hypotensive}, EpiPen x1 PTA"),
        ("narr", "pt ate {at a restaurant|shrimp at a party|a cookie with nuts} about {15|20|30} min ago and "
         "now has swelling of the {lips and tongue|throat}, {audible stridor|noisy breathing} and hives"),
        ("quote", '"my throat is closing" after {bee sting|eating shrimp|first dose of amoxicillin}, '
         "{stridor|drooling, voice muffled}, {diffuse hives|flushed}"),
        ("nonnative", '"I eat the nuts and now my throat it close, I can\'t swallow", {stridor|lips '
         "swelling}, hives"),
        ("quote_kin", '"$his face is swelling up" $per after {peanut butter|a bee sting}, stridor, hives'),
    ),
    "hemorrhage": (
        ("tele", "{GSW|SW|stab wound} {L|R} {chest|flank|groin}, {active bleeding|arterial bleeding}, "
         "{tourniquet applied PTA|pressure dsg soaked}"),
        ("narr", "pt {vomited a large amount of bright red blood|has been vomiting blood} at home {x3|several "
         "times}, {pale|pale and sweaty}, hx {cirrhosis|esophageal varices}"),
        ("quote", '"there was blood everywhere", {stabbed in the|cut on the} {thigh|arm}, {bleeding through '
         "dressing|soaked through towels}"),
        ("nonnative_kin", '"$he is throw up the blood, so much, all the floor" $per, {pale|clammy}, '
         "{hx varices|drinks a lot}"),
    ),
    "status_epilepticus": (
        ("tele", "sz activity x{10|20|30}+ min, {GTC|tonic-clonic}, {no return to baseline between sz|"
         "continuous}, {versed x2 PTA|ativan x2 by EMS}"),
        ("narr", "per EMS pt has had {3|4} seizures back to back without waking up in between, still having "
         "{rhythmic jerking|shaking of all extremities} on arrival"),
        ("quote_kin", '"$he keeps shaking and won\'t stop" $per, actively seizing x{15|20} min'),
        ("nonnative_kin", '"$he shaking very long time, not stop, not wake up" $per, actively seizing'),
    ),
    "brady": (
        ("tele", "{weak|dizzy|near syncope}, brady on monitor, {hx CHB|hx sick sinus|on metoprolol + "
         "diltiazem}, {pale|diaphoretic}"),
        ("narr", "pt reports feeling {weak|lightheaded} and almost fainted {at church|getting out of bed}, "
         "EMS found $his pulse very slow, {pale and sweaty|cool to touch}"),
        ("quote", '"I feel like I\'m going to pass out", bradycardic per EMS, {on beta blocker|hx heart '
         "block}"),
        ("nonnative_kin", '"$kin $he is very weak, the heart is slow, the machine say" $per, {pale|sweaty}'),
    ),
    # --- decision point B ------------------------------------------------------------------------
    "acs": (
        ("tele", "CP x{30|45|90} min, {pressure|heaviness|tightness}, goes to {L jaw|L arm|back|both arms}, "
         "{+diaphoresis|+SOB|+nausea}"),
        ("tele", "substernal CP onset {0615|0840|1320} at rest, {rad L arm|rad to jaw}, {diaphoretic|"
         "clammy}, {ASA PTA|ASA 324 by EMS}"),
        ("narr", "pt states $he was {shoveling snow|carrying groceries up the stairs|mowing the lawn|watching "
         "TV} when $he developed {pressure in $his chest|a heavy feeling in $his chest} that {spreads to $his "
         "left arm|goes into $his jaw}"),
        ("quote", '"feels like an elephant is sitting on my chest", started {an hour ago|this morning|at '
         "{0600|0900}}, {sweaty|nauseous}"),
        ("quote", '"it\'s the same pain I had before my stent", {chest tightness|chest pressure} x{1|2} hrs'),
        ("nonnative", '"I have the pain here in chest, it squeeze, go to my arm", started {1|2} hr ago, '
         "{sweating|nausea}"),
        ("nonnative_kin", '"$kin $he have pain in the chest since morning, $he is sweating" $per'),
    ),
    "stroke": (
        ("tele", "{R|L} sided weakness + {slurred speech|facial droop|aphasia}, LKW {0730|0915|1340}, "
         "{FSBS 112|BG 134}"),
        ("tele", "{L|R} facial droop, {L|R} arm drift, {dysarthria|slurred speech}, LKW {30|45|90} min ago, "
         "code stroke"),
        ("narr", "$his {wife|daughter|son} noticed $he was {dropping things with $his right hand|slurring "
         "$his words} {at breakfast|about an hour ago|after lunch}, one side of $his face is drooping"),
        ("quote_kin", '"$he was fine at {7|8} and then $his words came out wrong" $per, {R|L} arm weakness'),
        ("nonnative_kin", '"$kin $his face is falling on one side and $he cannot talk good" $per, started '
         "{1 hour|30 min} ago"),
    ),
    "si_plan": (
        ("tele", "SI w/ plan {to OD|to hang self|to use gun at home|to cut wrists}, {+means|has access to "
         "pills|has gun at home}, {voluntary|brought by family}"),
        ("narr", "pt states $he has been thinking about killing $himself {for weeks|since $his divorce|since "
         "losing $his job} and {has a plan to take all $his pills|planned to drive off a bridge}"),
        ("quote", '"I don\'t want to be here anymore, I was going to {take all my pills|jump}", {tearful|'
         "flat affect}"),
        ("quote", '"I\'m going to kill {him|her|my neighbor}", HI with plan, {has a knife|agitated, pacing}'),
        ("nonnative", '"I want to die, I have pills saved, tonight I take all", {tearful|quiet}'),
    ),
    "ectopic": (
        ("tele", "+UPT {@ home|home test}, LMP ~{6|7|8} wks, {L|R} lower abd pain + {spotting|VB}, "
         "{lightheaded|dizzy}"),
        ("narr", "pt {found out she was pregnant|had a positive home pregnancy test} {last week|a few days "
         "ago} and today started having {sharp|cramping} pain on the {right|left} side of her lower belly "
         "with {some bleeding|spotting}"),
        ("quote", '"I\'m pregnant and I\'m bleeding and it hurts on one side", LMP {6|7} wks ago'),
        ("nonnative", '"I am pregnant maybe {6|7} weeks, now blood and pain in the low belly", {dizzy|feels '
         "faint}"),
    ),
    "torsion": (
        ("tele", "sudden {L|R} testicle pain x{1|2|3} hrs, {+swelling|high riding}, {+N/V|vomited x1}"),
        ("narr", "pt woke up {from sleep|at 0400|this morning} with sudden pain in $his {left|right} testicle, "
         "{vomited once|nauseous}, {swollen|tender to touch}"),
        ("quote", '"it came on all at once, down there", {L|R} scrotal pain x{2|3} hrs'),
        ("nonnative_kin", '"$kin $he has pain in the private part, very sudden" $per, {L|R} testicle '
         "swollen"),
    ),
    "dissection": (
        ("tele", "sudden {tearing|ripping|sharp} CP rad to back, {worst pain of life|maximal at onset}, "
         "hx HTN {uncontrolled|noncompliant w/ meds}"),
        ("narr", "pt was {lifting weights|straining on the toilet|sitting at $his desk} when $he felt a "
         "sudden {tearing|ripping} pain in $his chest that went straight through to $his back"),
        ("quote", '"it felt like something ripped inside my chest and went to my back", sudden onset '
         "{1|2} hrs ago"),
        ("nonnative", '"pain like knife, from chest go to back, very sudden", hx HTN'),
    ),
    "dka": (
        ("tele", "T1DM, {BG >500|FSBS HI|BG 480s}, {n/v x{1|2} d|vomiting since yest}, {kussmaul resps|fruity "
         "odor}, {+polyuria/polydipsia|ran out of insulin}"),
        ("narr", "pt with type 1 diabetes has been {vomiting|throwing up} {since yesterday|for 2 days}, "
         "{very thirsty|peeing a lot}, {meter reads HI|sugar over 500 at home}"),
        ("quote", '"my sugar has been high all day and I can\'t stop throwing up", T1DM {on pump|on '
         "insulin}"),
        ("nonnative_kin", '"$he is diabetes type 1, sugar very high, the machine say HI, $he vomit all day" '
         "$per"),
    ),
    "chem_eye": (
        ("tele", "{bleach|drain cleaner|lye|concrete dust} splash {R|L} eye @ {work|home} ~{15|30|45} min "
         "ago, {irrigated at home|rinsed briefly}"),
        ("narr", "pt was {cleaning the bathroom|unclogging a drain|mixing concrete} when the chemical "
         "splashed into $his {right|left} eye, {cannot keep it open|eye is burning}"),
        ("quote", '"I got {bleach|oven cleaner|drain cleaner} in my eye and it\'s burning", {tearing|can\'t '
         "open eye}"),
        ("nonnative_kin", '"chemical go in $his eye, {the cleaning one|for the drain}" $per, {eye red and '
         "tearing|can't open eye}"),
    ),
    "trauma": (
        ("tele", "MVC {~{55|65} mph|head on|T-bone}, {restrained driver|unrestrained}, {+AB deployment|"
         "airbags deployed}, {prolonged extrication|self-extricated}"),
        ("tele", "fall ~{15|20} ft from {ladder|scaffolding|roof}, landed on {back|side}, {c-collar in place|"
         "backboarded by EMS}"),
        ("narr", "pt was the {driver|front seat passenger} in a {rollover|high speed collision} on the "
         "highway, {car totaled|windshield starred}, {needed extrication|was ejected}"),
        ("quote", '"I got hit by a car crossing the street", ped struck ~{30|35} mph, {c/o back pain|c/o L '
         "hip pain}"),
        ("nonnative", '"I fall from the roof, working, very high", ~{15|20} ft fall, {c-collar by EMS|on '
         "backboard}"),
    ),
    "overdose": (
        ("tele", "{intentional|?intentional} OD {~{20|30} tabs APAP|on {sertraline|seroquel|xanax}|unk pills}, "
         "ingested {1|2|3} hrs PTA"),
        ("tele", "heroin OD, {narcan 4mg IN by EMS|narcan x2}, {pinpoint pupils|miosis}, {drowsy|somnolent}"),
        ("narr", "pt's {roommate|friend|mother} found $him with {an empty pill bottle|empty bottles of $his "
         "meds} next to $him, states $he took them about {1|2} hours ago"),
        ("quote", '"I took the whole bottle", {tylenol|sleeping pills|my antidepressants}, ~{1|2} hr ago'),
        ("nonnative_kin", '"$he take many pills, all the bottle" $per, ~{1|2} hr ago, {sleepy|drowsy}'),
    ),
    "sepsis": (
        ("tele", "fever/rigors x{1|2} d, {generalized weakness|weak}, {+foley|from SNF|hx recurrent UTI}, "
         "{poor PO|decr PO}"),
        ("narr", "per {daughter|nursing home staff} pt has had {shaking chills|fevers} since {yesterday|last "
         "night} and has been weaker than usual, {hx UTIs|has a foley catheter}"),
        ("quote_kin", '"$he\'s been burning up and shaking" $per, {weak|not eating}, {hx UTI|has foley}'),
        ("nonnative_kin", '"$kin $he is very hot and shaking, not eating" $per, {from nursing home|hx UTI}'),
    ),
    "preeclampsia": (
        ("tele", "G{1|2}P{0|1} @ {32|34|36} wks, {severe HA|HA}, {+visual changes|scotomata|blurry vision}, "
         "{RUQ pain|+edema hands/face}"),
        ("narr", "pt is {32|34|36} weeks pregnant with a {pounding|bad} headache since {this morning|last "
         "night} and {seeing spots|blurry vision}, {face and hands swollen|pain under right ribs}"),
        ("quote", '"I\'m {33|35} weeks and I have the worst headache and I\'m seeing spots"'),
        ("nonnative", '"I am pregnant {7|8} months, head pain very strong, I see the lights"'),
    ),
    # --- decision points C/D: two or more resources ---------------------------------------------
    "abd_pain": (
        ("tele", "{RLQ|LLQ|epigastric|periumbilical|diffuse} abd pain x{1|2|3} d, {+n/v|+nausea|anorexia}, "
         "{last BM yest|last BM today}"),
        ("tele", "abd pain started {0400|2300|yest}, {migrated to RLQ|now LLQ}, {+N|+V x2}"),
        ("narr", "pt states pain started around $his belly button {yesterday|last night} and has moved to "
         "the {right lower|lower} side, {lost $his appetite|nauseated}"),
        ("quote", '"my stomach has been hurting since yesterday", {lower abd|epigastric} pain, {nausea|no '
         "appetite}"),
        ("nonnative", '"I have pain in the stomach since two days, I cannot eat"'),
        ("nonnative", '"the belly it hurt here, since yesterday, I vomit one time"'),
    ),
    "vomiting": (
        ("tele", "n/v/d x{1|2|3} d, {unable to tolerate PO|can't keep anything down}, {lightheaded w/ "
         "standing|orthostatic sx}"),
        ("tele", "v/d x{2|3} days, {+sick contacts|family w/ same}, {decreased PO|poor PO}"),
        ("narr", "pt has been {throwing up|vomiting} {since yesterday|for two days} and {cannot keep water "
         "down|vomits everything $he drinks}, {feels dizzy when $he stands|weak}"),
        ("quote", '"I can\'t keep anything down, not even water", vomiting x{1|2} d'),
        ("nonnative_kin", '"$he vomit everything since two days, no eat no drink" $per'),
    ),
    "pneumonia": (
        ("tele", "{productive cough|cough w/ {green|yellow} sputum} x{3|4|5} d, {+fevers|subj fever}, "
         "{SOB|DOE}"),
        ("narr", "pt reports a cough {bringing up yellow phlegm|with green sputum} for {several days|about a "
         "week}, with {fevers at home|chills and sweats}, short of breath with activity"),
        ("quote", '"I can\'t stop coughing and I get winded going up stairs", {fever|chills} x{3|4} d'),
        ("nonnative_kin", '"$he cough all the time and hot, hard to breathe" $per, x{3|4} d'),
    ),
    "asthma_mod": (
        ("tele", "{asthma|COPD} exac, {wheezing|chest tight}, {albuterol q1h at home|nebs x3 at home} w/o "
         "relief"),
        ("narr", "pt with hx of {asthma|COPD} has been {wheezing|more short of breath} since {yesterday|this "
         "morning} and has used $his {inhaler|nebulizer} several times without relief"),
        ("quote", '"my inhaler isn\'t working", wheezing since {last night|this AM}'),
        ("nonnative", '"my asthma is bad, the pump not help", wheezing'),
        ("nonnative_kin", '"$he breathing with whistle, the pump not help" $per'),
    ),
    "chf": (
        ("tele", "{bilat LE edema|incr leg swelling}, {+orthopnea|sleeping in recliner}, wt up {4|6|8} lb, "
         "hx CHF, {ran out of lasix|missed lasix x3 d}"),
        ("narr", "pt has been sleeping {propped up on {3|4} pillows|in $his recliner} because $he gets short "
         "of breath lying flat, legs {more swollen|swollen up to the knees}"),
        ("quote", '"I can\'t lie flat and my legs are swollen", hx CHF'),
        ("nonnative_kin", '"$kin $his legs very big and $he cannot sleep lying down" $per, hx heart failure'),
    ),
    "kidney_stone": (
        ("tele", "{R|L} flank pain rad to groin, {colicky|comes in waves}, {+hematuria|hx stones}, {+N|"
         "vomited x1}"),
        ("narr", "pt woke up with {sharp|crampy} pain in $his {right|left} side that {comes and goes in waves|"
         "moves down toward $his groin}, nauseated"),
        ("quote", '"I think it\'s another kidney stone", {R|L} flank pain since {this AM|0500}'),
        ("nonnative", '"pain in my side, going to the front, come and go", {blood in urine|nausea}'),
    ),
    "pyelo": (
        ("tele", "dysuria/frequency x{2|3} d, now {R|L} flank pain + {fever|chills}, {+CVA tenderness|"
         "CVAT}"),
        ("narr", "pt had {burning with urination|a UTI} {a few days ago|last week} and now has pain in $his "
         "{right|left} back with {chills|fevers}"),
        ("quote", '"I think my bladder infection went to my kidney", {chills|fever}, flank pain'),
        ("nonnative", '"burning when I pee, now pain in the back and I am cold, shaking"'),
    ),
    "cellulitis": (
        ("tele", "{L|R} {LE|forearm|shin} erythema/swelling x{2|3} d, {spreading|past marked margins}, "
         "{+warmth|+streaking}"),
        ("narr", "pt noticed a red, warm area on $his {left|right} {leg|arm} {a few days ago|2 days ago} that "
         "has been {getting bigger|spreading} {despite oral antibiotics|since then}"),
        ("quote", '"the red spot keeps getting bigger", {L|R} {calf|forearm}, warm to touch'),
        ("nonnative", '"my leg is red and hot and more big every day"'),
    ),
    "headache": (
        ("tele", "HA x{1|2} d, {hx migraine|typical of migraines}, {+photophobia|+nausea}, gradual onset, "
         "{took excedrin w/o relief|failed home meds}"),
        ("narr", "pt reports a headache that {started gradually yesterday|came on slowly over the morning} "
         "and feels like $his usual migraines, {light bothers $his eyes|nauseated}"),
        ("quote", '"it\'s my migraine, it won\'t go away", x{1|2} d'),
        ("nonnative", '"head hurt since yesterday, like my migraine", {light bother my eyes|nausea}'),
    ),
    "syncope": (
        ("tele", "syncopal ep {in line at store|@ church|after standing up quickly}, {brief|<1 min}, back to "
         "baseline, {prodrome of lightheadedness|felt warm before}"),
        ("narr", "pt was {standing in a long line|at a concert|having blood drawn} when $he felt "
         "{lightheaded|warm and sweaty} and passed out for a few seconds, back to normal now"),
        ("quote", '"I just blacked out", witnessed by {friend|coworker}, now feels fine'),
        ("nonnative", '"I was standing and then everything black, I fall", now {feels ok|back to normal}'),
    ),
    "hip_fall": (
        ("tele", "GLF, {R|L} hip pain, {unable to bear wt|can't bear weight}, {shortened/rotated {R|L} leg|"
         "leg ext rotated}"),
        ("narr", "pt {tripped over the dog|slipped in the bathroom|lost balance getting out of bed} and "
         "landed on $his {right|left} side, unable to stand since"),
        ("quote", '"I heard something crack when I fell", {R|L} hip pain, can\'t bear weight'),
        ("nonnative_kin", '"$kin $he fall down in the kitchen, cannot stand up, hip pain" $per'),
    ),
    "fall_head": (
        ("tele", "GLF {@ home|at NH}, + head strike {on table|on floor|on counter}, {small hematoma R forehead|"
         "abrasion occiput}, unwitnessed"),
        ("narr", "pt {lost $his balance|tripped} {getting up from the toilet|on the stairs} and hit $his head "
         "on the {nightstand|floor|door frame}, has a {goose egg|bump} on $his forehead"),
        ("quote", '"I bumped my head when I fell", {hematoma to forehead|small abrasion to scalp}'),
        ("nonnative_kin", '"$kin $he fall and hit the head on the floor" $per, {bump on forehead|small '
         "bruise on head}"),
    ),
    "gi_bleed": (
        ("tele", "{BRBPR|melena|black tarry stools} x{1|2} d, {hx diverticulosis|hx hemorrhoids|on NSAIDs}"),
        ("narr", "pt noticed {bright red blood in the toilet|black, tarry stools} {yesterday|this morning}, "
         "{hx of hemorrhoids|takes ibuprofen daily}"),
        ("quote", '"there was blood in the toilet when I went", {x2 today|since yesterday}'),
        ("nonnative", '"when I go to toilet, blood coming, since yesterday"'),
    ),
    "vag_bleed": (
        ("tele", "heavy VB x{4|5|6} d, {saturating|soaking} {4|5|6} pads/day, {+clots|passing clots}, "
         "{neg HPT|not pregnant per pt}"),
        ("narr", "pt reports her period has been much heavier than usual for {5|6} days, changing pads every "
         "{1|2} hours, {passing clots|some clots}, {had tubal ligation|not sexually active}"),
        ("quote", '"my period won\'t stop and I\'m going through a pad an hour"'),
        ("nonnative", '"my period very heavy, many days, big clots"'),
    ),
    "peds_vomiting": (
        ("tele", "v/d x{1|2} d, {decr UOP|1 wet diaper today|no wet diaper since AM}, {decreased PO|refusing "
         "bottle}, per {mom|dad}"),
        ("narr", "per {mom|parents}, child has been vomiting {since yesterday|for 2 days} {with several loose "
         "stools|and now has diarrhea}, {only one wet diaper today|fewer wet diapers than usual}"),
        ("quote_kin", '"$he can\'t keep anything down, even pedialyte" per {mom|dad}, {fewer wet diapers|'
         "dry diapers since AM}"),
        ("nonnative_kin", '"$kin $he vomit all the day, not drinking, diaper is dry" per mom'),
    ),
    "peds_fever": (
        ("tele", "fever {x{1|2|3} d|since last night} per {mom|parents}, {tylenol @ {0600|1400}|motrin at "
         "home}, {+cough|pulling ears|+rash}, {decr PO|fussy}"),
        ("narr", "per {mom|parents}, child has had fevers {for 2 days|since last night} at home, "
         "{tugging at ears|coughing|runny nose}, {drinking less than usual|fussy}"),
        ("quote_kin", '"$he\'s been burning up since last night" per {mom|dad}, {cough|ear pulling}'),
        ("nonnative_kin", '"$kin is very hot since two days, not eat good" per {mom|dad}'),
    ),
    "neonate": (
        ("tele", "{poor feeding|not feeding well|sleepier than usual}, {felt warm to mom|warm to touch}, "
         "term, {SVD|uncomplicated delivery}, per {mom|parents}"),
        ("narr", "per parents, baby has been {feeding less|sleepier than usual} {since this morning|today} "
         "and {felt warm to mom|seems warm}, born full term without complications"),
        ("quote_kin", '"$he just doesn\'t want to eat" per mom, {felt warm|fussy}, born full term'),
        ("nonnative_kin", '"my baby not drink the milk, sleep all the time" per {mom|parents}'),
    ),
    "chemo_patient": (
        ("tele", "{fatigue|weakness|nausea} x{2|3} d, {on chemo for {breast ca|lymphoma|AML|colon ca}|active "
         "chemo}, last {infusion|cycle} {5|7|10} d ago, {port in place|has port}"),
        ("narr", "pt is receiving chemotherapy for {lymphoma|breast cancer|leukemia}, last treatment {a week "
         "ago|5 days ago}, and has felt {weaker|more tired and nauseated} for {2|3} days"),
        ("quote", '"I just feel wiped out since my last chemo", {nausea|poor appetite}'),
        ("nonnative", '"since the chemo I am very tired and I don\'t eat"'),
    ),
    "intox": (
        ("tele", "EtOH intox, {found on bench|found sleeping in doorway}, {+vomiting|ataxic}, {arousable to "
         "voice|wakes to voice}, {smells of EtOH|ETOH on breath}"),
        ("narr", "friends brought pt in after {a night of drinking|drinking at a party}, {vomited x2|unsteady "
         "on $his feet}, wakes to voice and answers questions"),
        ("quote", '"I only had a few beers", {smells of EtOH|ataxic}, {vomited in triage|unsteady gait}'),
        ("nonnative_kin", '"$he drink too much, vodka, now $he sleep and vomit" per friend'),
    ),
    "hyperglycemia": (
        ("tele", "BG {380|420|350}s at home, {polyuria/polydipsia|+thirst}, {out of insulin x{2|3} d|not "
         "taking metformin}, hx DM2"),
        ("narr", "pt ran out of $his {insulin|diabetes medication} {a few days ago|last week} and $his sugar "
         "has been running in the {300s|400s}, {very thirsty|urinating a lot}"),
        ("quote", '"my sugar\'s been over 300 for days", {thirsty|peeing a lot}, hx DM2'),
        ("nonnative", '"my sugar is high, 400, I don\'t have more insulin"'),
    ),
    "seizure_single": (
        ("tele", "sz x1 @ {home|work}, {GTC ~{1|2} min|witnessed ~{2|3} min}, {post-ictal resolved|back to "
         "baseline}, hx {epilepsy|sz d/o}, {missed keppra|ran out of meds}"),
        ("narr", "$his {wife|mother|roommate} saw $him have a seizure {at home|at dinner} that lasted about "
         "{a minute|2 minutes}; $he is back to normal now, admits missing $his seizure meds"),
        ("quote", '"I had one of my seizures", back to baseline, {ran out of meds|missed doses}'),
        ("nonnative_kin", '"$he shake one time at home, now ok" $per, hx epilepsy'),
    ),
    "chest_pain_low": (
        ("tele", "intermittent CP x{2|3} wks, sharp, {worse w/ deep breath and palpation|reproducible}, "
         "{after URI|no exertional sx}"),
        ("narr", "pt reports {on and off|intermittent} chest discomfort for {two|three} weeks that is "
         "{worse when $he moves|sharp and brief}, not related to exertion"),
        ("quote", '"it\'s a sharp pinch in my chest that comes and goes", x{2|3} wks'),
        ("nonnative", '"sometimes pain in chest, small, since two weeks, when I move"'),
    ),
    # --- decision point C: one resource -----------------------------------------------------------
    "ankle": (
        ("tele", "{R|L} ankle inversion inj {playing bball|on stairs|stepping off curb}, {+swelling lat "
         "malleolus|swelling}, {ambulatory w/ limp|able to WB}"),
        ("narr", "pt rolled $his {right|left} ankle {playing soccer|coming down the stairs|stepping off a "
         "curb} {this morning|last night}, {swollen and bruised|swollen}, walking with a limp"),
        ("quote", '"I rolled my ankle and heard a pop", {swelling|bruising}, able to bear weight'),
        ("nonnative", '"I turn my foot on the stair, now is swollen"'),
    ),
    "wrist": (
        ("tele", "FOOSH {skateboarding|on ice|at soccer}, {R|L} wrist pain/swelling, no obvious deformity, "
         "{CMS intact|NV intact}"),
        ("narr", "pt {fell on $his outstretched hand|slipped and landed on $his hand} {skateboarding|on the "
         "ice} and now has pain and swelling in $his {right|left} wrist"),
        ("quote", '"I caught myself with my hand when I fell", {R|L} wrist swollen'),
        ("nonnative_kin", '"$he fall on the hand, now the wrist is swelling" $per'),
    ),
    "laceration": (
        ("tele", "~{2|3|4} cm lac {R|L} {hand|index finger|forearm} {from kitchen knife|on broken glass}, "
         "{bleeding controlled|hemostatic w/ pressure}, {tetanus UTD|last Td unknown}"),
        ("narr", "pt cut $his {left|right} {hand|thumb|forearm} {on a broken glass|while cutting vegetables|on "
         "sheet metal} about {an hour|30 min} ago, bleeding stopped with pressure"),
        ("quote", '"I sliced my finger cutting a bagel", {bleeding controlled|gaping ~2 cm}'),
        ("nonnative_kin", '"$he cut with the knife, is deep" $per, bleeding controlled, ~{2|3} cm'),
        ("tele", "fell and struck chin on {coffee table|tub edge}, ~{1|2} cm chin lac, bleeding controlled"),
    ),
    "uti": (
        ("tele", "dysuria + {frequency|urgency} x{1|2|3} d, {no flank pain|no back pain}, {hx UTIs|similar "
         "to prior UTI}"),
        ("narr", "pt reports burning when she urinates and going every few minutes for {2|3} days, feels "
         "like her previous UTIs"),
        ("quote", '"it burns when I pee", {frequency|urgency} x{1|2} d'),
        ("nonnative", '"when I make pee is burning, many times"'),
    ),
    "cough": (
        ("tele", "{dry|nonproductive|productive} cough x{1|2|3} wks, {no relief w/ OTC|keeping pt up at "
         "night}, {recent URI|post viral}"),
        ("narr", "pt has had a cough for {about two weeks|over a week} {that keeps $him up at night|that "
         "won't go away}, tried {cough syrup|OTC meds} without help"),
        ("quote", '"this cough just won\'t go away", x{2|3} wks'),
        ("nonnative", '"I cough since two weeks, the medicine from pharmacy not help"'),
    ),
    "mild_asthma": (
        ("tele", "mild wheeze, {out of albuterol|ran out of inhaler}, {speaking full sentences|no distress}"),
        ("narr", "pt with asthma ran out of $his inhaler {two days ago|last week} and has had some {mild "
         "wheezing|chest tightness}, talking in full sentences"),
        ("quote", '"I just need my inhaler refilled, I\'m a little wheezy"'),
        ("nonnative_kin", '"$he have asthma, the pump finish, little whistle breathing" $per'),
    ),
    "abscess": (
        ("tele", "{abscess|boil} {L|R} {axilla|buttock|thigh|groin} x{3|4|5} d, {fluctuant|draining pus}, "
         "{~{2|3} cm|surrounding erythema}"),
        ("narr", "pt noticed a {painful lump|boil} under $his {left|right} arm a few days ago that has "
         "gotten bigger and {started draining|is tender}"),
        ("quote", '"I have a boil that needs to be drained", {L|R} {axilla|thigh}'),
        ("nonnative", '"I have the bump with pus, since {4|5} days"'),
    ),
    "foreign_body": (
        ("tele", "FB {R|L} {ear|nare}: {bead|pea|piece of crayon|small rock}, per {mom|dad}"),
        ("narr", "per {mom|dad}, child put a {bead|small toy|pea} in $his {right|left} {ear|nostril} {this "
         "afternoon|at daycare}, playing normally"),
        ("quote_kin", '"$he stuck a bead up $his nose" per {mom|dad}'),
        ("nonnative_kin", '"$he put small thing in the ear, I cannot take out" per {mom|dad}'),
    ),
    "back_pain": (
        ("tele", "LBP {flare|exacerbation} after {lifting|yard work}, {hx same|chronic}, no bowel/bladder sx, "
         "ambulatory, requesting {pain meds|toradol}"),
        ("narr", "pt's back {went out|started hurting} while {lifting boxes|moving furniture|gardening}, "
         "similar to prior episodes, walking without difficulty"),
        ("quote", '"my back went out again", {ambulatory|walked in}, {hx same|chronic LBP}'),
        ("nonnative", '"my back hurt, I lift heavy thing at work"'),
    ),
    "depression": (
        ("tele", "{depressed|anxious} x{2|3} wks, {requesting psych eval|wants to talk to someone}, "
         "{poor sleep|not eating well}"),
        ("narr", "pt reports feeling {down|anxious} for a few weeks {since $his breakup|since losing $his "
         "job}, {not sleeping well|crying a lot}, would like to talk to someone"),
        ("quote", '"I\'ve just been feeling really low and I need help", requesting psych eval'),
        ("nonnative", '"I am sad all the time, I cannot sleep, I want to talk with doctor"'),
    ),
    "urinary_retention": (
        ("tele", "{unable to void|no UOP} since {this AM|last night|0300}, {suprapubic fullness|distended "
         "bladder}, hx BPH"),
        ("narr", "pt has not been able to urinate since {last night|early this morning} despite feeling the "
         "urge, lower belly feels full"),
        ("quote", '"I feel like I have to go but nothing comes out"'),
        ("nonnative", '"I cannot make pee since morning, belly full"'),
    ),
    "peds_arm": (
        ("tele", "fell off {monkey bars|trampoline|bike}, {R|L} {forearm|elbow} pain, {guarding|won't move "
         "arm}, {no obvious deformity|mild swelling}, per {mom|dad}"),
        ("narr", "per {mom|dad}, child fell {off the playground equipment|off $his bike} {at school|this "
         "afternoon} and has been holding $his {left|right} arm {against $his body|and refuses to use it}"),
        ("quote_kin", '"$he won\'t let anyone touch $his arm" per {mom|dad}, fell from {swing|monkey bars}'),
        ("nonnative_kin", '"$he fall from the bicycle, arm hurt, not move" per {mom|dad}'),
    ),
    "chest_wall": (
        ("tele", "L chest wall pain after {bench press|moving couch}, {reproducible w/ palpation|TTP over "
         "sternum}, worse w/ twisting"),
        ("narr", "pt strained $his chest {lifting weights|moving furniture} {yesterday|2 days ago}; sore to "
         "the touch and worse with twisting"),
        ("quote", '"I think I pulled something in my chest at the gym", reproducible'),
        ("nonnative", '"I lift heavy sofa, now chest muscle hurt when I touch"'),
    ),
    "sti": (
        ("tele", "{requesting STD screen|wants STI testing}, {partner dx w/ chlamydia|new partner}, "
         "{+discharge x{3|5} d|asymptomatic}"),
        ("narr", "pt would like to be tested for STDs because {a partner tested positive|$he has a new "
         "partner}, {some discharge|no symptoms}"),
        ("quote", '"my partner told me to get checked", {discharge x{3|5} d|no sx}'),
        ("nonnative", '"I want the test for sex disease, there is discharge"'),
    ),
    # --- decision point C: no resources -----------------------------------------------------------
    "refill": (
        ("tele", "needs refill {lisinopril|metformin|albuterol MDI|amlodipine}, {PCP out of office|out x{2|3} "
         "d}, no complaints"),
        ("narr", "pt ran out of $his {blood pressure|diabetes|thyroid} medication {two days ago|yesterday} and "
         "cannot get in with $his PCP until next week"),
        ("quote", '"I just need my prescription, my doctor\'s office is closed"'),
        ("nonnative", '"I need the medicine for the pressure, it finish"'),
    ),
    "suture_removal": (
        ("tele", "sutures out, placed {7|10|12} d ago {@ urgent care|here}, {wound well healed|no s/s "
         "infection}"),
        ("narr", "pt is here to have $his stitches taken out; they were placed {about a week|10 days} ago "
         "{at urgent care|here} and the wound looks clean"),
        ("quote", '"I\'m here to get my stitches out"'),
        ("nonnative_kin", '"$he need take out the stitches" $per, placed {7|10} d ago'),
    ),
    "uri": (
        ("tele", "{URI sx|nasal congestion/rhinorrhea} x{2|3|4} d, {mild cough|+sneezing}, {tolerating PO|"
         "eating/drinking ok}"),
        ("narr", "pt has had a {stuffy nose|runny nose} and {scratchy throat|mild cough} for {a few days|3 "
         "days}, still eating and drinking"),
        ("quote", '"I think I just have a cold", x{2|3} d'),
        ("nonnative_kin", '"$he have the cold, the nose running" $per'),
    ),
    "sore_throat": (
        ("tele", "ST x{1|2} d, {odynophagia|painful to swallow}, {tolerating secretions|handling "
         "secretions}, voice normal"),
        ("narr", "pt reports $his throat has been sore {since yesterday|for 2 days} and it hurts to swallow, "
         "{able to drink|eating ok}"),
        ("quote", '"my throat is scratchy and sore", x{1|2} d'),
        ("nonnative_kin", '"$his throat is hurt, cannot eat good" $per'),
    ),
    "rash": (
        ("tele", "pruritic rash {BUE|BLE|trunk} x{2|3} d, {after hiking|new soap|new detergent}, {no mucosal "
         "involvement|no lip/tongue swelling}"),
        ("narr", "pt developed an itchy rash on $his {arms|legs|stomach} {after working in the yard|a few days "
         "after using a new detergent}"),
        ("quote", '"I can\'t stop scratching", rash on {arms|legs} x{2|3} d'),
        ("nonnative_kin", '"$he have red spots that itch" $per, x{2|3} d'),
    ),
    "insect_bite": (
        ("tele", "{mosquito|bug|spider} bite {R|L} {forearm|calf}, {mild erythema|small red bump}, {itchy|no "
         "streaking}"),
        ("narr", "pt was bitten by {a bug|something} while {camping|gardening} and now has a small {red|"
         "itchy} bump on $his {right|left} {arm|leg}"),
        ("quote", '"something bit me last night", {itchy|small red area}'),
        ("nonnative", '"bug bite me in the arm, is itchy"'),
    ),
    "dental": (
        ("tele", "dental pain {lower L|upper R|lower R} molar x{2|3} d, no facial swelling, {no dentist|"
         "dentist closed}"),
        ("narr", "pt has had a toothache in $his {lower left|upper right} molar for {a few days|about a week} "
         "and can't get in to see a dentist until {Monday|next week}"),
        ("quote", '"my back tooth has been aching for days"'),
        ("nonnative", '"my tooth is pain since 3 days, no have dentist"'),
    ),
    "pink_eye": (
        ("tele", "{L|R|bilat} eye redness + {crusting|discharge} x{1|2} d, {vision at baseline|no vision "
         "change}, {itchy|no FB sensation}"),
        ("narr", "pt woke up with $his {left|right} eye {crusted shut|red and goopy}, {itchy|watery}, vision "
         "is normal"),
        ("quote_kin", '"$his eye was glued shut this morning" $per'),
        ("nonnative", '"my eye is red and have the yellow thing"'),
    ),
    "ear_pain": (
        ("tele", "{R|L} otalgia x{1|2} d, {+URI sx|after swimming}, {no drainage|tugging at ear}"),
        ("narr", "pt has had pain in $his {right|left} ear {since yesterday|for two days}, {after swimming|"
         "with a cold}"),
        ("quote_kin", '"$he keeps pulling at $his ear" $per'),
        ("nonnative", '"ear hurt inside since yesterday"'),
    ),
    "work_note": (
        ("tele", "{needs work note|requesting school note} after {cold|GI bug} last wk, {sx resolved|feels "
         "fine now}"),
        ("narr", "pt was out of {work|school} last week with a {cold|stomach bug}, feels fine now, needs a "
         "note to return"),
        ("quote", '"my boss needs a doctor\'s note", sx resolved'),
        ("nonnative", '"I need paper for my work, I was sick last week"'),
    ),
    "minor_burn": (
        ("tele", "{superficial|1st degree} burn {R|L} {hand|finger|forearm} from {stove|oven rack|curling "
         "iron|hot pan}, {small blister|erythema only}"),
        ("narr", "pt {touched a hot pan|grabbed the oven rack|burned $his finger on a curling iron} {this "
         "morning|earlier today}, small red area {with a blister|without blister}"),
        ("quote", '"I burned my finger on the stove"'),
        ("nonnative", '"I touch the hot pan, small burn on finger"'),
    ),
}


TemplateSplit = Literal["train", "test"]
# Every HELD_OUT_EVERY-th template of each pool (rotated per pool) is held out: the "test" template split
# draws only from those, the "train" split only from the rest, and no split argument draws from all.
HELD_OUT_EVERY = 3
# Variants in the patient's own voice need a patient at least this old; relatives speak for children.
VOICE_MIN_AGE = 12
_PATIENT_VOICE = ("quote", "nonnative")


@dataclass(frozen=True)
class Variant:
    """One surface template of a pool; `id` ("acs/3", "distractor/7") is recorded as a `template:` tag."""

    id: str
    style: str
    text: str
    group: str  # "train" or "test"
    when: str = "any"  # who it fits (see `_fits`)
    family: str = ""  # the complaint family it repeats, if any (a secondary complaint is never the primary)

    @property
    def patient_voice(self) -> bool:
        return self.style in _PATIENT_VOICE


def _groups(pool: str, n: int) -> list[str]:
    offset = zlib.crc32(pool.encode()) % HELD_OUT_EVERY
    return ["test" if (i + offset) % HELD_OUT_EVERY == 0 else "train" for i in range(n)]


def _pool(name: str, items: list[tuple[str, str, str, str]]) -> tuple[Variant, ...]:
    """(style, text, when, family) items as variants named `name/<index>`, split into train/test groups."""
    return tuple(
        Variant(f"{name}/{i}", style, text, group, when, family)
        for i, ((style, text, when, family), group) in enumerate(zip(items, _groups(name, len(items)), strict=True))
    )


VARIANTS: dict[str, tuple[Variant, ...]] = {
    c.key: _pool(
        c.key, [("std", t, "any", c.key) for t in c.texts] + [(s, t, "any", c.key) for s, t in PARAPHRASES[c.key]]
    )
    for c in COMPLAINTS
}

# Findings that never move the level: old injuries, chronic stable conditions, family history, normal
# findings, social history. (text, who it fits).
_DISTRACTOR_ITEMS = (
    ("old healed scar {L|R} knee", "teen"),
    ("hx {R|L} ACL repair {2012|2016|2019}", "teen"),
    ("old {L|R} wrist fx as a child, no issues since", "teen"),
    ("chronic {L|R} knee pain from old sports injury, unchanged", "adult"),
    ("remote hx of {appendectomy|tonsillectomy}", "adult"),
    ("tattoos to {both arms|upper back}, well healed", "adult"),
    ("hx HTN, well controlled on meds", "adult"),
    ("DM2 diet controlled, last A1c 6.{4|8}", "adult"),
    ("chronic low back pain, at baseline", "adult"),
    ("hx migraines, none in months", "adult"),
    ("hypothyroid on levothyroxine, stable", "adult"),
    ("wears glasses", "teen"),
    ("hard of hearing {L|R} ear", "adult"),
    ("uses CPAP at night for OSA", "adult"),
    ("seasonal allergies, takes {zyrtec|claritin}", "any2"),
    ("family hx of MI", "teen"),
    ("FHx: {father|mother} with MI at {58|62|70}", "teen"),
    ("family hx of DM2", "teen"),
    ("FHx HTN, DM", "teen"),
    ("{mother|father} had a stroke at {70|76}", "adult"),
    ("lungs clear", "lungs"),
    ("LS clear bilat", "lungs"),
    ("skin warm and dry", "exam"),
    ("PERRL", "exam"),
    ("cap refill <2 sec", "exam"),
    ("abd soft, nontender", "belly"),
    ("ambulatory w/ steady gait", "gait"),
    ("GCS 15", "alert"),
    ("AOx4", "alert"),
    ("speaking in full sentences", "lungs"),
    ("tetanus UTD", "teen"),
    ("last tetanus {2019|2021}", "adult"),
    ("NKDA", "any"),
    ("allergic to {PCN|sulfa|latex}", "any"),
    ("smokes {1/2|1} ppd", "sober"),
    ("vapes daily", "sober"),
    ("social EtOH", "sober"),
    ("lives with {spouse|daughter|roommate}", "adult"),
    ("works as a {teacher|mechanic|nurse|cashier|truck driver}", "adult"),
    ("seen at urgent care {2|3} wks ago for {sinus infection|ankle sprain}, resolved", "adult"),
    ("flu shot this season", "any"),
    ("UTD on vaccines", "child"),
    ("born full term, no NICU stay", "infant"),
    ("attends daycare", "child"),
)
DISTRACTORS: tuple[Variant, ...] = _pool("distractor", [("distractor", t, w, "") for t, w in _DISTRACTOR_ITEMS])

# Second complaints that need no resource and are not high risk, so they never move the level.
# (text, who it fits, complaint family it repeats).
_SECONDARY_ITEMS = (
    ("also has runny nose and congestion x{2|3} d", "any", "uri"),
    ("also requesting refill of {BP meds|lisinopril|inhaler}", "adult25", "refill"),
    ("also itchy rash on {arms|legs} x{1|2} wks", "any", "rash"),
    ("also has a few {mosquito bites|bug bites} on {L|R} arm, itchy", "any", "insect_bite"),
    ("also mentions {mild toothache|sensitive tooth} x{1|2} wks", "adult", "dental"),
    ("also needs work note", "adult", "work_note"),
    ("also {L|R} eye itchy and watery", "any", "pink_eye"),
    ("also c/o mild sore throat since yesterday", "any2", "sore_throat"),
    ("also asks about a {mole on back|wart on finger}", "adult", ""),
    ("also {stubbed toe|jammed finger} last week, improving", "teen", ""),
    ("also mild diaper rash per mom", "infant", "rash"),
    ("also wants BP checked, says it ran high at pharmacy last month", "adult", ""),
    ("also c/o {dry skin on hands|dandruff}", "teen", ""),
    ("also ear feels plugged since a cold last wk", "any2", "ear_pain"),
)
SECONDARIES: tuple[Variant, ...] = _pool("secondary", [("secondary", t, w, f) for t, w, f in _SECONDARY_ITEMS])

_SICK_PEDS = ("peds_vomiting", "peds_fever", "neonate")


def _fits(when: str, d: _Draft) -> bool:
    """Whether a distractor or secondary complaint fits this patient without contradicting the facts."""
    c = d.complaint
    calm = c.decision == "C" and "new_confusion" not in d.flags
    checks = {
        "any": True,
        "any2": d.age >= 2,
        "teen": d.age >= 12,
        "adult": d.age >= 18,
        "adult25": d.age >= 25,
        "child": d.age < 12,
        "infant": d.age < 2,
        "exam": calm,
        "lungs": calm and "respiratory" not in c.flags,
        "belly": calm and c.resources <= 1 and c.key not in ("urinary_retention", "abscess"),
        "gait": calm and c.resources <= 1 and d.age >= 2 and c.key not in ("ankle", "peds_arm"),
        "alert": calm and d.age >= 12 and c.key != "intox",
        "sober": d.age >= 18 and c.key != "intox",
    }
    return checks[when]


# ---------------------------------------------------------------------------------------------------
# Text pieces
# ---------------------------------------------------------------------------------------------------

# Negated high-risk phrases: (negation key, templates). Each is a pertinent negative a nurse writes;
# a negated phrase never changes the acuity.
NEGATIONS: tuple[tuple[str, str], ...] = (
    ("chest_pain", "{denies|no|neg for} {chest pain|CP}"),
    ("chest_pain", "{denies any chest pain|no chest pain or pressure|negative for chest pain}"),
    ("sob", "{denies|no} {SOB|shortness of breath|DOE}"),
    ("chest_pain", "denies CP/SOB"),
    ("loc", "{no LOC|denies LOC|did not lose consciousness|no loss of consciousness}"),
    ("head_strike", "{denies head strike|did not hit head|no head injury}"),
    ("anticoag", "{not on blood thinners|no anticoagulants|denies blood thinners|no anticoagulation}"),
    ("si", "{denies SI/HI|denies SI|no suicidal or homicidal ideation|denies thoughts of self harm}"),
    ("fever", "{no fever|denies fevers|afebrile at home|no fevers or chills}"),
    ("neuro", "{denies weakness or numbness|no facial droop or slurred speech|no focal deficits}"),
    ("confusion", "{no confusion|at baseline mental status per family|A&Ox4}"),
    ("syncope", "{no syncope|denies passing out|no near syncope}"),
    ("hematemesis", "{denies hematemesis|no blood in vomit}"),
    ("pregnancy", "{denies possibility of pregnancy|LMP 2 wks ago}"),
    ("cancer", "{no hx cancer|not on chemo}"),
)
# Ordinary, low-stakes negatives for texture.
_MINOR_NEGATIVES = (
    "no n/v",
    "denies diarrhea",
    "no rash",
    "denies dysuria",
    "no known sick contacts",
    "denies recent travel",
    "no numbness/tingling",
)
_HISTORY = (
    "HTN",
    "HLD",
    "DM2",
    "asthma",
    "COPD",
    "hypothyroid",
    "GERD",
    "depression",
    "anxiety",
    "CKD",
    "OSA",
    "obesity",
    "migraines",
    "CAD s/p PCI",
    "CHF",
    "BPH",
    "osteoarthritis",
)
_IMMUNO = (
    "on chemo for breast ca",
    "AML on chemo, last cycle 8 d ago",
    "kidney transplant on tacrolimus",
    "lymphoma on chemo",
)
_ANTICOAG = ("eliquis", "apixaban", "warfarin", "coumadin", "xarelto", "rivaroxaban")
_MEDS = (
    "lisinopril 20mg",
    "metformin 1000mg BID",
    "atorvastatin 40mg",
    "levothyroxine 75mcg",
    "amlodipine 5mg",
    "omeprazole 20mg",
    "sertraline 50mg",
    "albuterol PRN",
    "metoprolol 25mg BID",
    "furosemide 40mg",
    "gabapentin 300mg TID",
    "insulin glargine 20u qHS",
    "tamsulosin 0.4mg",
)
_COMFORT = (
    "resting comfortably",
    "NAD, texting on phone",
    "laughing with family",
    "eating chips in triage",
    "appears comfortable",
)
_DISTRESS = ("appears uncomfortable", "grimacing", "writhing in pain", "doubled over", "moaning")
_CONFUSION = (
    "new confusion per {daughter|family|NH staff}",
    "{family|wife} reports new confusion since {yesterday|this AM}",
    "{disoriented|not oriented to time}, new per family",
)
# Arrival phrases per note frame.
_ARRIVAL_TEXT = {
    "std": {
        "EMS": "{BIBA|per EMS|arrived via EMS|BIB ambulance}",
        "walk-in": "{ambulatory to triage|walked in|walk-in}",
        "private vehicle": "{brought by {family|spouse}|POV|dropped off by friend}",
        "wheelchair": "wc to triage",
    },
    "tele": {
        "EMS": "{BIBA|BIB EMS|via EMS}",
        "walk-in": "{amb to triage|ambulatory|walk-in}",
        "private vehicle": "{POV|BIB family|BIB {spouse|friend}}",
        "wheelchair": "{w/c|wc to triage}",
    },
    "narr": {
        "EMS": "{via EMS|by ambulance}",
        "walk-in": "{ambulatory to triage|ambulatory}",
        "private vehicle": "{by private vehicle|with family|with a friend}",
        "wheelchair": "in a wheelchair",
    },
}
# Complaints that police sometimes bring in; said only in the text, when no arrival field is sent.
_POLICE = ("intox", "si_plan", "overdose", "depression")
_POLICE_TEXT = {"std": "{BIB PD|brought in by police}", "tele": "BIB PD", "narr": "brought in by police"}
_ARRIVAL_WEIGHTS = {
    "ems": (0.75, 0.05, 0.1, 0.1),
    "walk": (0.05, 0.6, 0.3, 0.05),
    "mixed": (0.4, 0.3, 0.25, 0.05),
}
_ARRIVAL_MODES = ("EMS", "walk-in", "private vehicle", "wheelchair")
_OSH = (
    "Lakeside Community Hospital",
    "Pine Valley Medical Center",
    "Riverbend Regional",
    "St. Ansgar Clinic",
    "OSH",
)

_CHOICE = re.compile(r"\{([^{}]*)\}")


def expand(rng: random.Random, template: str) -> str:
    """Resolve {a|b|c} alternatives, innermost first."""
    while True:
        match = _CHOICE.search(template)
        if match is None:
            return template
        template = template[: match.start()] + rng.choice(match.group(1).split("|")) + template[match.end() :]


def _weighted(rng: random.Random, items: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in items], weights=[w for _, w in items])[0]


# ---------------------------------------------------------------------------------------------------
# Shorthand, longhand and misspellings
# ---------------------------------------------------------------------------------------------------

_BODY = (
    "side|sided|arm|leg|hand|wrist|ankle|eye|ear|hip|knee|flank|lower|upper|foot|shoulder|elbow|forearm|thumb|"
    "finger|testicle|chest|face|calf|thigh|axilla|buttock|molar|nare|nostril|shin|temple|back"
)
# Words and phrases a nurse shortens in a hurried note: (pattern, shorthand forms).
_SHORTHAND: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("shortness of breath", ("SOB",)),
    ("chest pain", ("CP",)),
    ("complains of", ("c/o",)),
    ("history of", ("hx", "h/o")),
    ("nausea and vomiting", ("n/v", "N/V")),
    ("vomiting and diarrhea", ("v/d", "V/D")),
    ("abdominal", ("abd",)),
    ("patient", ("pt",)),
    ("without", ("w/o",)),
    ("with", ("w/",)),
    ("headache", ("HA",)),
    ("bilateral", ("bilat", "B/L")),
    ("minutes", ("min", "mins")),
    ("hours", ("hrs", "h")),
    ("weeks", ("wks",)),
    ("yesterday", ("yest",)),
    ("this morning", ("this AM",)),
    ("status post", ("s/p",)),
    ("fracture", ("fx",)),
    ("symptoms", ("sx",)),
    ("prescription", ("rx",)),
    ("medications", ("meds",)),
    ("medication", ("med",)),
    ("approximately", ("~", "approx")),
    ("at home", ("@ home",)),
    ("positive", ("+",)),
    ("negative for", ("neg for",)),
    ("seizures?", ("sz",)),
    ("bowel movement", ("BM",)),
    ("diabetes", ("DM",)),
    ("hypertension", ("HTN",)),
    ("urinary tract infection", ("UTI",)),
    ("temperature", ("temp",)),
    ("evaluation", ("eval",)),
    ("weight", ("wt",)),
    ("and", ("&", "+")),
    ("left(?= (?:" + _BODY + r")\b)", ("L",)),
    ("right(?= (?:" + _BODY + r")\b)", ("R",)),
)
# Abbreviations a narrative note spells out: (pattern, longhand forms). High-risk abbreviations that the
# negation-heavy slice counts (LOC, DOE) stay abbreviated.
_LONGHAND: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SOB", ("shortness of breath",)),
    ("CP", ("chest pain",)),
    ("c/o", ("complains of",)),
    ("n/v/d", ("nausea, vomiting and diarrhea",)),
    ("n/v", ("nausea and vomiting",)),
    ("v/d", ("vomiting and diarrhea",)),
    ("abd", ("abdominal",)),
    ("w/o", ("without",)),
    ("w/", ("with",)),
    ("hx of", ("history of",)),
    ("hx", ("history of", "a history of")),
    ("h/o", ("history of",)),
    ("HA", ("headache",)),
    ("bilat", ("bilateral",)),
    ("sx", ("symptoms",)),
    ("BRBPR", ("bright red blood per rectum",)),
    ("pt", ("patient",)),
    ("yest", ("yesterday",)),
    ("s/p", ("status post",)),
    ("fx", ("fracture",)),
    ("LMP", ("last menstrual period",)),
    ("LKW", ("last known well",)),
    ("MVC", ("motor vehicle collision",)),
    ("GSW", ("gunshot wound",)),
    ("FOOSH", ("fall on outstretched hand",)),
    ("T1DM", ("type 1 diabetes",)),
    ("PTA", ("prior to arrival",)),
    ("L(?= (?:" + _BODY + r")\b)", ("left",)),
    ("R(?= (?:" + _BODY + r")\b)", ("right",)),
)
_DURATION_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6"}
_DURATION_LONG = re.compile(r"\bfor (?:about |over )?(\d+|one|two|three|four|five|six) (minutes|hours|days|weeks)\b")
_DURATION_SHORT = re.compile(r"\bx ?(\d+) ?(min|hrs?|d|days|wks?)\b")
_UNIT_SHORT = {"minutes": "min", "hours": "hrs", "days": "d", "weeks": "wks"}
_UNIT_LONG = {"min": "minutes", "hr": "hours", "hrs": "hours", "d": "days", "days": "days", "wk": "weeks"}
_UNIT_LONG["wks"] = "weeks"


def _rewriter(
    table: tuple[tuple[str, tuple[str, ...]], ...], flags: int
) -> tuple[re.Pattern[str], list[tuple[str, ...]]]:
    """One pattern with a group per entry (longer entries first where they overlap), and the forms."""
    pattern = re.compile("|".join(rf"(\b{p}(?!\w))" for p, _ in table), flags)
    return pattern, [forms for _, forms in table]


_SHORT_RE, _SHORT_FORMS = _rewriter(_SHORTHAND, re.IGNORECASE)
_LONG_RE, _LONG_FORMS = _rewriter(_LONGHAND, 0)


def _outside_quotes(text: str, fn: Callable[[str], str]) -> str:
    """Apply `fn` to the parts of `text` outside double quotes (a patient's own words stay verbatim)."""
    parts = text.split('"')
    return '"'.join(fn(p) if i % 2 == 0 else p for i, p in enumerate(parts))


def shorthand(rng: random.Random, text: str, p: float) -> str:
    """Abbreviate each shortenable phrase with probability p (durations become "x3 d")."""

    def short(s: str) -> str:
        def one(m: re.Match[str]) -> str:
            if rng.random() >= p:
                return m.group()
            return rng.choice(_SHORT_FORMS[(m.lastindex or 1) - 1])

        def duration(m: re.Match[str]) -> str:
            if rng.random() >= p:
                return m.group()
            n = _DURATION_WORDS.get(m.group(1), m.group(1))
            return f"x{n} {_UNIT_SHORT[m.group(2)]}"

        return _SHORT_RE.sub(one, _DURATION_LONG.sub(duration, s))

    return _outside_quotes(text, short)


def longhand(rng: random.Random, text: str, p: float) -> str:
    """Spell out each abbreviation with probability p ("x3 d" becomes "for 3 days")."""

    def long(s: str) -> str:
        def one(m: re.Match[str]) -> str:
            if rng.random() >= p:
                return m.group()
            return rng.choice(_LONG_FORMS[(m.lastindex or 1) - 1])

        def duration(m: re.Match[str]) -> str:
            if rng.random() >= p:
                return m.group()
            unit = _UNIT_LONG[m.group(2)]
            return f"for {m.group(1)} {unit[:-1] if m.group(1) == '1' else unit}"

        return _LONG_RE.sub(one, _DURATION_SHORT.sub(duration, s))

    return _outside_quotes(text, long)


# Realistic misspellings: doubled and dropped letters, swapped letters, phonetic spellings.
_MISSPELLINGS: dict[str, tuple[str, ...]] = {
    "nauseous": ("naseous", "nauseus", "nausious"),
    "nausea": ("nausia", "nasea", "nausa"),
    "nauseated": ("naseated", "nauseaded"),
    "vomiting": ("vomitting", "vommiting", "vomitng"),
    "vomited": ("vomitted", "vommited"),
    "vomit": ("vommit",),
    "seizure": ("siezure", "seizur", "sezure"),
    "seizures": ("siezures", "seizers"),
    "seizing": ("siezing",),
    "dizziness": ("dizzyness", "diziness"),
    "dizzy": ("dizy", "dizzey"),
    "pain": ("pian", "pane"),
    "diarrhea": ("diarrea", "diarhea", "diarreah"),
    "abdominal": ("abdominl", "abdomnal"),
    "breathing": ("breathng", "breething"),
    "breathe": ("breath", "breth"),
    "swelling": ("sweling", "swellng"),
    "swollen": ("swolen", "swolln"),
    "headache": ("headach", "hedache"),
    "weakness": ("weekness", "weaknes"),
    "weak": ("week",),
    "fever": ("fevr", "feaver"),
    "fevers": ("feavers", "fevors"),
    "stomach": ("stomache", "stomch"),
    "diabetic": ("diabetc", "diebetic"),
    "diabetes": ("diabetis", "diabeties"),
    "pneumonia": ("pnuemonia", "pneumona", "newmonia"),
    "asthma": ("asthama", "athsma"),
    "allergic": ("alergic", "allergick"),
    "bleeding": ("bleading", "bledding"),
    "laceration": ("lacertion", "lacaration"),
    "urination": ("urnination", "urinaton"),
    "ambulance": ("ambulence",),
    "ankle": ("ankel",),
    "throat": ("throught", "thoat"),
    "cough": ("cogh", "couhg"),
    "coughing": ("coughin", "cofing"),
    "diaphoretic": ("diaphoritic", "diaphretic"),
    "hemorrhoids": ("hemroids", "hemmorhoids"),
    "ibuprofen": ("ibuprophen", "ibuprofin"),
    "prescription": ("perscription", "prescripton"),
    "unconscious": ("unconcious",),
    "consciousness": ("conciousness", "consiousness"),
    "numbness": ("numbess", "numness"),
    "lightheaded": ("lightheded", "light headed"),
    "pressure": ("presure", "pressur"),
    "wheezing": ("wheesing", "wheezng"),
    "pregnant": ("pregant", "pregnat"),
    "suicidal": ("suicidle",),
    "anxiety": ("anxeity", "anxiaty"),
    "infection": ("infecton", "infektion"),
    "fatigue": ("fatique", "fatigeu"),
    "palpitations": ("palpatations", "palpitatons"),
    "tylenol": ("tylenal", "tyenol"),
    "sprain": ("sprane",),
    "tingling": ("tinglng",),
    "temperature": ("temprature", "temperture"),
    "diarrhoea": ("diarrea",),
    "stitches": ("stiches",),
    "rash": ("rahs",),
    "itchy": ("itchey",),
    "tooth": ("tooht",),
    "chills": ("chils",),
    "urine": ("urin",),
}
_MISSPELL_RE = re.compile(r"\b(" + "|".join(sorted(_MISSPELLINGS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_TYPO_WORD = re.compile(r"[a-z]{5,}")


def _typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def _misspell(rng: random.Random, word: str) -> str:
    wrong = rng.choice(_MISSPELLINGS[word.lower()])
    return wrong[0].upper() + wrong[1:] if word[0].isupper() else wrong


def _add_typos(rng: random.Random, text: str, count: int) -> tuple[str, bool]:
    """`count` typos: a known misspelling where the note has a word for one (half the time), else a
    swapped, dropped or doubled letter. Also says whether a known misspelling was used."""
    phonetic = False
    for _ in range(count):
        known = list(_MISSPELL_RE.finditer(text))
        if known and rng.random() < 0.5:
            m = rng.choice(known)
            text = text[: m.start()] + _misspell(rng, m.group()) + text[m.end() :]
            phonetic = True
            continue
        words = list(_TYPO_WORD.finditer(text))
        if words:
            m = rng.choice(words)
            text = text[: m.start()] + _typo(rng, m.group()) + text[m.end() :]
    return text, phonetic


def add_typos(rng: random.Random, text: str, count: int) -> str:
    return _add_typos(rng, text, count)[0]


# ---------------------------------------------------------------------------------------------------
# Vitals
# ---------------------------------------------------------------------------------------------------

# Normal HR and RR ranges per danger band (strictly under the band's danger limits).
_NORMAL_HR = ((110, 170), (90, 150), (70, 128), (60, 98))
_NORMAL_RR = ((30, 48), (24, 38), (18, 28), (12, 20))
# Share of temperatures written in the note that are given in Fahrenheit.
TEMP_F_SHARE = 0.4


def _band(age_years: float) -> int:
    return next(i for i, (upper, _, _) in enumerate(_DANGER_BANDS) if age_years < upper)


def _normal_vitals(rng: random.Random, age: float) -> dict[str, float]:
    band = _band(age)
    v: dict[str, float] = {
        "heart_rate": rng.randint(*_NORMAL_HR[band]),
        "resp_rate": rng.randint(*_NORMAL_RR[band]),
        "spo2": rng.randint(94, 100),
        "temperature_c": round(rng.uniform(36.3, 37.6), 1),
    }
    if age >= 3:
        v["systolic_bp"] = rng.randint(100, 150) if age >= 12 else rng.randint(92, 115)
        v["diastolic_bp"] = rng.randint(58, 92) if age >= 12 else rng.randint(50, 70)
    return v


def _apply_profile(rng: random.Random, v: dict[str, float], profile: str, age: float) -> dict[str, float]:
    _, hr_lim, rr_lim = _DANGER_BANDS[_band(age)]
    by_profile: dict[str, dict[str, float]] = {
        "normal": {},
        "tachy": {"heart_rate": hr_lim + rng.randint(1, 35)},
        "tachypnea": {"resp_rate": rr_lim + rng.randint(1, 12)},
        "hypoxic": {"spo2": rng.randint(88, 91)},
        "febrile": {"temperature_c": round(rng.uniform(38.0, 40.3), 1)},
        "sepsis": {
            "temperature_c": round(rng.uniform(38.1, 40.0), 1),
            "heart_rate": rng.randint(105, 135),
            "systolic_bp": rng.randint(80, 98),
        },
        "critical_resp": {
            "spo2": rng.randint(72, 89),
            "resp_rate": rr_lim + rng.randint(8, 22),
            "heart_rate": hr_lim + rng.randint(5, 35),
        },
        "shock": {"systolic_bp": rng.randint(55, 79), "heart_rate": max(hr_lim, 110) + rng.randint(5, 40)},
        "brady": {"heart_rate": rng.randint(26, 39), "systolic_bp": rng.randint(62, 86)},
        "resp_depressed": {"resp_rate": rng.randint(3, 9), "spo2": rng.randint(80, 93)},
        "hypertensive": {"systolic_bp": rng.randint(170, 225), "diastolic_bp": rng.randint(95, 125)},
        "arrest": {},
    }
    changes = by_profile[profile]
    v = {**v, **changes}
    if "systolic_bp" in v and "diastolic_bp" in v:
        v["diastolic_bp"] = min(v["diastolic_bp"], v["systolic_bp"] - 20)
    return v


def c_to_f(celsius: float) -> float:
    """Celsius to Fahrenheit at one decimal: 38.0 C is 100.4 F, and one-decimal Celsius values keep
    their order, so the fever threshold reads the same in either unit."""
    return round(celsius * 9 / 5 + 32, 1)


_HR_FORMATS = ("HR {}", "HR {}", "HR: {}", "P {}", "pulse {}", "HR {} bpm", "HR{}")
_RR_FORMATS = ("RR {}", "RR {}", "R {}", "resp {}", "RR: {}", "resp rate {}", "RR {}/min")
_SPO2_FORMATS = (
    "SpO2 {}%",
    "SpO2 {}% RA",
    "SpO2 {} on RA",
    "sat {}%",
    "sats {}% RA",
    "O2 sat {}%",
    "O2 sat {}% on RA",
    "SaO2 {}%",
    "pulse ox {}%",
    "{}% RA",
    "{}% on RA",
)
_BP_FORMATS = ("BP {}/{}", "BP {}/{}", "BP: {}/{}", "BP {}/{} mmHg")
_TEMP_C_FORMATS = ("T {}", "temp {}", "Temp {}", "T {}C", "T {} C")
_TEMP_F_FORMATS = ("T {}F", "temp {}F", "Temp {} F", "T {} F", "temp {} F")
_PAIN_FORMATS = ("pain {}/10", "rates pain {}/10", "pain score {}", "{}/10 pain", "pain {} out of 10")


def _vital_parts(rng: random.Random, v: dict[str, float], age: float) -> tuple[list[str], list[str]]:
    """Each visible vital as the note writes it, and tags for the formats used (temp_f, bp_palp, afebrile)."""
    parts: list[str] = []
    tags: list[str] = []
    if "heart_rate" in v:
        parts.append(rng.choice(_HR_FORMATS).format(int(v["heart_rate"])))
    if "systolic_bp" in v:
        sbp = int(v["systolic_bp"])
        if "diastolic_bp" not in v:
            parts.append(f"SBP {sbp}")
        elif sbp < 90 and rng.random() < 0.35:
            parts.append(f"BP {sbp}/palp")
            tags.append("bp_palp")
        else:
            parts.append(rng.choice(_BP_FORMATS).format(sbp, int(v["diastolic_bp"])))
    if "resp_rate" in v:
        parts.append(rng.choice(_RR_FORMATS).format(int(v["resp_rate"])))
    if "spo2" in v:
        parts.append(rng.choice(_SPO2_FORMATS).format(int(v["spo2"])))
    if "temperature_c" in v:
        t = v["temperature_c"]
        site = ""
        if age < 4 and rng.random() < 0.5:
            site = rng.choice((" rectal", " rectally", " (rectal)"))
        elif age >= 12 and rng.random() < 0.15:
            site = rng.choice((" oral", " tympanic", " temporal"))
        if t < 37.5 and rng.random() < 0.15:
            parts.append("afebrile")
            tags.append("afebrile")
        elif rng.random() < TEMP_F_SHARE:
            parts.append(rng.choice(_TEMP_F_FORMATS).format(f"{c_to_f(t):.1f}") + site)
            tags.append("temp_f")
        else:
            parts.append(rng.choice(_TEMP_C_FORMATS).format(f"{t:.1f}") + site)
    if rng.random() < 0.3:
        rng.shuffle(parts)
    if "pain" in v:
        parts.append(rng.choice(_PAIN_FORMATS).format(int(v["pain"])))
    return parts, tags


def _vitals_text(rng: random.Random, v: dict[str, float], age: float) -> tuple[str, list[str]]:
    parts, tags = _vital_parts(rng, v, age)
    return rng.choice((" ", " ", ", ")).join(parts), tags


# ---------------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TriageExample:
    """One labelled note: the serving input fields, the (possibly noisy) label, the rule label and the
    facts the rule label was computed from (what the note and the fields show)."""

    note: str
    age_years: float | None
    sex: str | None
    vitals: dict[str, float]
    arrival_mode: str | None
    acuity: int
    rule_acuity: int
    complaint: str
    tags: tuple[str, ...] = ()
    facts: Facts | None = None

    def to_input(self) -> TriageInput:
        return TriageInput(
            note=self.note,
            age_years=self.age_years,
            sex=self.sex,
            vitals=dict(self.vitals),
            arrival_mode=self.arrival_mode,
        )

    @property
    def text(self) -> str:
        return format_triage_text(self.to_input())


@dataclass
class _Draft:
    """The facts of one example while it is being drawn (no text: that is written afterwards)."""

    complaint: Complaint
    age: float
    sex: str
    vitals: dict[str, float]
    flags: list[str]
    history: list[str] = field(default_factory=list)
    anticoag: str = ""  # drug (and indication) when anticoagulated
    immuno: str = ""  # the immunocompromising condition
    demeanor: str = ""  # "distress", "mild_distress", "comfort" or ""


def _pick_age(rng: random.Random, c: Complaint) -> float:
    lo, hi = c.ages
    if hi <= 1:
        return rng.uniform(lo, hi)
    return round(rng.uniform(lo, hi), 2) if lo < 2 else float(rng.randint(int(lo), int(hi)))


def _draft(rng: random.Random, c: Complaint) -> _Draft:
    age = _pick_age(rng, c)
    sex = c.sex or rng.choice(("F", "M"))
    profile = _weighted(rng, c.profiles)
    vitals = {} if profile == "arrest" else _apply_profile(rng, _normal_vitals(rng, age), profile, age)
    if c.pain is not None and rng.random() < 0.85:
        vitals["pain"] = rng.randint(*c.pain)
    return _Draft(c, age, sex, vitals, list(c.flags))


def _add_modifiers(rng: random.Random, d: _Draft) -> None:
    """History and situational facts that can move a C complaint to ESI 2 (or not)."""
    c = d.complaint
    if d.age >= 60 and rng.random() < (0.5 if "head_strike" in c.flags else 0.12):
        d.flags.append("anticoagulated")
        d.anticoag = rng.choice(_ANTICOAG) + rng.choice((" for afib", " for DVT", ""))
    if d.age >= 65 and c.decision == "C" and rng.random() < 0.1:
        d.flags.append("new_confusion")
    if "infection" in c.flags and d.age >= 18 and "immunocompromised" not in d.flags and rng.random() < 0.1:
        d.flags.append("immunocompromised")
        d.immuno = rng.choice(_IMMUNO)
    if "immunocompromised" in c.flags:
        d.immuno = rng.choice(_IMMUNO)
    pain = d.vitals.get("pain", 0)
    if pain >= 7 and c.decision == "C":
        credible = rng.random() < (0.55 if c.resources >= 2 else 0.25)
        if not credible:
            d.flags.append("pain_not_credible")
        d.demeanor = "distress" if credible else "comfort"
    elif rng.random() < 0.15:
        d.demeanor = "comfort" if c.resources < 2 else "mild_distress"


def _history(rng: random.Random, d: _Draft) -> None:
    if d.age < 12:
        return
    k = rng.choice((0, 0, 1, 2, 3)) if d.age < 50 else rng.choice((0, 1, 2, 3, 4))
    d.history[:0] = rng.sample(_plausible_history(d), k=k)


def _plausible_history(d: _Draft) -> list[str]:
    """Past history that fits the patient: no BPH in women, no coronary disease in the young."""
    unlikely = {"BPH"} if d.sex == "F" else set()
    if d.age < 40:
        unlikely |= {"CAD s/p PCI", "CHF", "CKD", "BPH"}
    return [h for h in _HISTORY if h not in unlikely]


@dataclass(frozen=True)
class _Visibility:
    structured: dict[str, float]
    in_note: dict[str, float]
    age_structured: bool
    sex_structured: bool


def _visibility(rng: random.Random, vitals: dict[str, float]) -> _Visibility:
    """Which vitals the fields carry and which the note writes: only fields, only text, both, some
    fields, some in each (blood pressure stays together), or none."""
    mode = rng.choices(
        ("structured", "note", "both", "partial", "split", "none"), weights=(0.45, 0.2, 0.15, 0.1, 0.05, 0.05)
    )[0]
    structured: dict[str, float]
    in_note: dict[str, float]
    if mode == "none" or not vitals:
        structured, in_note = {}, {}
    elif mode == "partial":
        keys = [k for k in vitals if rng.random() < 0.6]
        structured, in_note = {k: vitals[k] for k in keys}, {}
    elif mode == "split":
        to_note = {k for k in vitals if rng.random() < 0.5}
        if "systolic_bp" in to_note or "diastolic_bp" in to_note:
            to_note |= {"systolic_bp", "diastolic_bp"}
        in_note = {k: v for k, v in vitals.items() if k in to_note}
        structured = {k: v for k, v in vitals.items() if k not in to_note}
    else:
        structured = dict(vitals) if mode in ("structured", "both") else {}
        in_note = dict(vitals) if mode in ("note", "both") else {}
    return _Visibility(structured, in_note, rng.random() < 0.88, rng.random() < 0.85)


def _arrival(rng: random.Random, c: Complaint) -> str:
    return rng.choices(_ARRIVAL_MODES, weights=_ARRIVAL_WEIGHTS[c.arrival])[0]


def _one(rng: random.Random, target: int, split: TemplateSplit | None) -> TriageExample:
    """Draw facts until the ESI rules, applied to what the note will show, give the target level; then
    write the note with its own random stream, so the facts and labels do not depend on the wording
    (the same seed gives the same facts in every template split)."""
    pool = [c for c in COMPLAINTS if target in c.levels]
    weights = [c.weight for c in pool]
    for _ in range(500):
        d = _draft(rng, rng.choices(pool, weights=weights)[0])
        _add_modifiers(rng, d)
        _history(rng, d)
        vis = _visibility(rng, d.vitals)
        facts = Facts(
            age_years=d.age,
            decision=d.complaint.decision,
            resources=d.complaint.resources,
            vitals={**vis.in_note, **vis.structured},
            flags=tuple(d.flags),
        )
        level, decision = esi_decision(facts)
        if level != target:
            continue
        arrival = _arrival(rng, d.complaint)
        arrival_sent = rng.random() < 0.7
        acuity = level
        if rng.random() < LABEL_NOISE:
            acuity = min(5, max(1, level + rng.choice((-1, 1))))
        writer = random.Random(rng.getrandbits(64))
        note, tags = _write(writer, d, vis, arrival, arrival_sent, split)
        tags = [f"rule_{decision}", *tags] + (["label_noise"] if acuity != level else [])
        tags += (["vitals_in_note"] if vis.in_note else []) + (["vitals_structured"] if vis.structured else [])
        return TriageExample(
            note=note,
            age_years=round(d.age, 4) if vis.age_structured else None,
            sex=d.sex if vis.sex_structured else None,
            vitals=vis.structured,
            arrival_mode=arrival if arrival_sent else None,
            acuity=acuity,
            rule_acuity=level,
            complaint=d.complaint.key,
            tags=tuple(tags),
            facts=facts,
        )
    raise RuntimeError(f"could not draw an ESI {target} example")


def generate(n: int, seed: int, template_split: TemplateSplit | None = None) -> list[TriageExample]:
    """n examples, identical for the same (n, seed, template_split); the class mix follows CLASS_MIX.

    `template_split` picks the surface templates (complaint phrasings, distractors, second complaints):
    "train" uses only the training group, "test" only the held-out group (never seen in training), and
    None all of them. The facts and labels for a given (n, seed) are the same in every split."""
    if template_split not in (None, "train", "test"):
        raise ValueError(f"template_split must be 'train', 'test' or None, not {template_split!r}")
    rng = random.Random(seed)
    counts = [round(n * share) for share in CLASS_MIX]
    counts[2] += n - sum(counts)
    targets = [level for level, k in enumerate(counts, start=1) for _ in range(k)]
    rng.shuffle(targets)
    return [_one(rng, t, template_split) for t in targets]


# ---------------------------------------------------------------------------------------------------
# Writing the note
# ---------------------------------------------------------------------------------------------------

# Note frames: the standard triage line, telegraphic shorthand, and narrative sentences.
_FRAMES = (("std", 0.45), ("tele", 0.3), ("narr", 0.25))
# Shares of notes with a second (resource-free) complaint, and with distractor findings.
MULTI_SHARE = 0.12
DISTRACTOR_SHARE = 0.3
# Share of eligible notes with 2-4 pertinent negatives (the negation-heavy cases).
NEGATION_HEAVY_SHARE = 0.25
_TOKEN = re.compile(r"\$(\w+)")


@dataclass
class _Note:
    """The pieces of one note while it is being written, and the tags they earn."""

    frame: str
    cc: str
    cc_style: str
    findings: list[str]
    extra: list[str]
    negatives: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    peds: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    kin: str = ""
    per: str = ""


def _relative(rng: random.Random, d: _Draft) -> tuple[str, str]:
    """A relative who speaks for the patient: ("my husband", "per wife")."""
    male = d.sex == "M"
    if d.age < 18:
        if d.age < 2:
            kin = rng.choice(("my baby", "my son" if male else "my daughter"))
        else:
            kin = rng.choice(("my son", "my boy") if male else ("my daughter", "my girl"))
        return kin, "per " + rng.choice(("mom", "dad", "parents", "mother"))
    if d.age < 60:
        pairs = (
            (("my husband", "wife"), ("my brother", "sister"), ("my partner", "partner"))
            if male
            else (("my wife", "husband"), ("my sister", "brother"), ("my partner", "partner"))
        )
    else:
        pairs = (
            (("my husband", "wife"), ("my father", "daughter"), ("my dad", "son"))
            if male
            else (("my wife", "husband"), ("my mother", "daughter"), ("my mom", "son"))
        )
    kin, role = rng.choice(pairs)
    return kin, "per " + role


def _fill(text: str, sex: str, kin: str, per: str) -> str:
    male = sex == "M"
    words = {
        "he": "he" if male else "she",
        "He": "He" if male else "She",
        "his": "his" if male else "her",
        "His": "His" if male else "Her",
        "him": "him" if male else "her",
        "himself": "himself" if male else "herself",
        "kin": kin,
        "per": per,
    }
    return _TOKEN.sub(lambda m: words[m.group(1)], text)


def _pick(
    rng: random.Random, pool: tuple[Variant, ...], split: TemplateSplit | None, ok: Callable[[Variant], bool]
) -> Variant | None:
    options = [v for v in pool if (split is None or v.group == split) and ok(v)]
    return rng.choice(options) if options else None


def _age_phrase(rng: random.Random, age: float, sex: str, compact: bool = False) -> str:
    days = age * _DAYS_PER_YEAR
    if days < 30:
        n = int(days)
        forms = [f"{n} day old", f"{n}d old", f"{n}-day-old", f"{n} days old"]
        if n >= 14:
            forms += [f"{n // 7} wk old", f"{n // 7} week old", f"{n // 7}-week-old"]
        amount = rng.choice(forms)
    elif age < 2:
        mo = int(age * 12)
        amount = rng.choice((f"{mo} mo", f"{mo} mo old", f"{mo}mo", f"{mo} m/o", f"{mo}-month-old", f"{mo}mo old"))
    else:
        y = int(age)
        if compact and age >= 18 and rng.random() < 0.6:
            return f"{y}{sex}"
        amount = rng.choice((f"{y}yo", f"{y} yo", f"{y} y/o", f"{y}y", f"{y} y.o.", f"{y}-year-old", f"{y} yr old"))
    young = "girl" if sex == "F" else "boy"
    word = {
        "F": ("F", "female", young if age < 14 else "woman"),
        "M": ("M", "male", young if age < 14 else "man"),
    }
    return f"{amount} {rng.choice(word[sex])}"


def _chief_complaint(rng: random.Random, text: str, style: str) -> str:
    if style not in ("std", "tele") or text.startswith(("c/o", "complains", "pt states", "per ")):
        return text
    return (
        rng.choice(
            ("", "", "c/o ", "pt c/o ", "pt states ", "complains of ", "presents with ", "CC: ", "here for ")
        )
        + text
    )


def _blocked_negations(d: _Draft) -> set[str]:
    blocked = set(d.complaint.positives)
    if "anticoagulated" in d.flags:
        blocked.add("anticoag")
    if "immunocompromised" in d.flags:
        blocked.add("cancer")
    if "new_confusion" in d.flags:
        blocked.add("confusion")
    if d.vitals.get("temperature_c", 0) >= 37.8:
        blocked.add("fever")
    if d.sex == "M" or d.age < 12 or d.age > 55:
        blocked.add("pregnancy")
    if d.age < 12:
        blocked.update(("si", "anticoag", "cancer", "confusion"))
    if d.age < 2:  # nothing an infant could deny or a parent could tell
        blocked.update(("chest_pain", "neuro", "syncope", "loc"))
    return blocked


def _negatives(rng: random.Random, d: _Draft, count: int, said: str) -> list[str]:
    blocked = _blocked_negations(d)
    keys = list(dict.fromkeys(key for key, _ in NEGATIONS if key not in blocked))
    chosen = [
        expand(rng, rng.choice([t for k, t in NEGATIONS if k == key]))
        for key in rng.sample(keys, k=min(count, len(keys)))
    ]
    if len([t for t in chosen if "SOB" in t]) > 1:
        chosen = [t for t in chosen if "SOB" not in t or "/" in t]
    minor = [t for t in _MINOR_NEGATIVES if t.split()[-1].split("/")[0] not in said.lower()]
    if d.age < 5:
        minor = [t for t in minor if t not in ("denies dysuria", "no numbness/tingling")]
    return chosen + rng.sample(minor, k=min(len(minor), rng.choice((0, 0, 1, 2))))


def _negation_count(rng: random.Random, d: _Draft, tags: list[str]) -> int:
    """Pertinent negatives; about a quarter of notes get many (the hard, negation-heavy cases)."""
    if d.complaint.decision == "A":
        return rng.choice((0, 0, 1))
    if rng.random() < NEGATION_HEAVY_SHARE:
        tags.append("hard_negation")
        return rng.randint(2, 4)
    return rng.choice((0, 0, 1, 1, 2))


def _weight_kg(rng: random.Random, age: float) -> float:
    base = 3.4 + 0.55 * age * 12 if age < 1 else 2 * age + 8
    return round(base * rng.uniform(0.85, 1.15), 1)


def _peds(rng: random.Random, d: _Draft, n: _Note) -> None:
    """What a paediatric note adds: who gave the history, the weight in kg, feeding and wet diapers."""
    c = d.complaint
    if "per " not in n.cc and rng.random() < 0.5:
        n.peds.append(
            expand(rng, "{hx per {mom|parents|dad}|per {mom|dad|parents}|history from {mom|grandmother}|{mom|dad} at "
                   "bedside}")
        )
    if rng.random() < 0.4:
        w = _weight_kg(rng, d.age)
        n.peds.append(rng.choice((f"wt {w} kg", f"weight {w}kg", f"{w} kg", f"wt {w}kg")))
    if c.resources <= 1 and c.key not in _SICK_PEDS and rng.random() < 0.35:
        if d.age < 2:
            n.peds.append(expand(rng, "{taking bottle well|breastfeeding well|feeding well per mom|normal PO intake}"))
            n.peds.append(expand(rng, "{normal wet diapers|{4|5|6} wet diapers today|wet diapers x{4|5} today}"))
        else:
            n.peds.append(expand(rng, "{eating and drinking ok|tolerating PO|normal appetite per {mom|dad}}"))
            if rng.random() < 0.5:
                n.peds.append(rng.choice(("playful in triage", "active and playful", "interactive, consolable")))
    if rng.random() < 0.4:
        n.history.append(rng.choice(("no PMH", "UTD on vaccines", "no sig PMH, UTD on shots")))
    if n.peds or re.search(r"\bper (mom|dad|parents|mother)\b", n.cc):
        n.tags.append("peds_phrasing")


def _content(rng: random.Random, d: _Draft, vis: _Visibility, split: TemplateSplit | None) -> _Note:
    """Everything the note says, before it is laid out in a frame."""
    c = d.complaint
    kin, per = _relative(rng, d)
    variant = _pick(rng, VARIANTS[c.key], split, lambda v: not v.patient_voice or d.age >= VOICE_MIN_AGE)
    if variant is None:
        raise RuntimeError(f"no {split} phrasing for {c.key} at age {d.age:.2f}")
    style = variant.style.split("_")[0]
    n = _Note(
        frame=_weighted(rng, _FRAMES),
        cc=_fill(expand(rng, variant.text), d.sex, kin, per),
        cc_style=style,
        findings=[expand(rng, e) for e in rng.sample(c.extras, k=rng.randint(0, min(2, len(c.extras))))],
        extra=[],
        tags=[f"template:{variant.id}", f"style_{style}"],
        kin=kin,
        per=per,
    )
    if "new_confusion" in d.flags:
        n.findings.append(expand(rng, rng.choice(_CONFUSION)))
    shown_pain = {**vis.in_note, **vis.structured}.get("pain", 0)
    demeanor = "mild_distress" if d.demeanor == "distress" and shown_pain < 7 else d.demeanor
    if demeanor:
        phrases = {"distress": _DISTRESS, "mild_distress": _DISTRESS[:2], "comfort": _COMFORT}[demeanor]
        n.findings.append(rng.choice(phrases))
    if c.decision != "A" and rng.random() < MULTI_SHARE:
        second = _pick(rng, SECONDARIES, split, lambda v: v.family != c.key and _fits(v.when, d))
        if second is not None:
            n.extra.append(expand(rng, second.text))
            n.tags += ["multi_complaint", f"template:{second.id}"]
    if rng.random() < DISTRACTOR_SHARE:
        fitting = [v for v in DISTRACTORS if (split is None or v.group == split) and _fits(v.when, d)]
        for v in rng.sample(fitting, k=min(len(fitting), rng.choice((1, 1, 2)))):
            n.extra.append(expand(rng, v.text))
            n.tags.append(f"template:{v.id}")
        n.tags.append("distractor")
    n.history = list(d.history)
    if d.anticoag:
        n.history.append(expand(rng, "{on|takes} ") + d.anticoag)
    if d.immuno and "immunocompromised" not in c.flags:  # a chemo complaint already names its cancer
        n.history.append(d.immuno)
    if d.age < 12:
        _peds(rng, d, n)
    said = " ".join([n.cc, *n.findings, *n.extra])
    n.negatives = _negatives(rng, d, _negation_count(rng, d, n.tags), said)
    return n


def _capital(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _join_and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _insert_vitals(rng: random.Random, body: list[str], vitals: list[str]) -> None:
    for v in vitals:
        body.insert(rng.randint(1, len(body)), v)


def _vital_groups(rng: random.Random, d: _Draft, vis: _Visibility, tags: list[str], prefix: bool) -> list[str]:
    """The note's vitals as one block or (a quarter of the time) two, placed apart."""
    if not vis.in_note:
        return []
    parts, format_tags = _vital_parts(rng, vis.in_note, d.age)
    tags += format_tags
    sep = rng.choice((" ", " ", ", "))
    cut = rng.randint(1, len(parts) - 1) if len(parts) > 1 and rng.random() < 0.25 else len(parts)
    groups = [sep.join(parts[:cut])] + ([sep.join(parts[cut:])] if cut < len(parts) else [])
    if prefix:
        groups[0] = rng.choice(("", "", "VS: ", "Vitals: ", "VS ")) + groups[0]
    return groups


def _head(
    rng: random.Random, d: _Draft, vis: _Visibility, arrival: str, arrival_sent: bool, n: _Note
) -> tuple[str, str]:
    """(arrival phrase, age phrase), either possibly empty."""
    arrival_text = ""
    if d.complaint.key in _POLICE and not arrival_sent and rng.random() < 0.4:
        arrival_text = expand(rng, _POLICE_TEXT[n.frame])
    elif rng.random() < 0.35 or arrival == "EMS" and rng.random() < 0.3:
        arrival_text = expand(rng, _ARRIVAL_TEXT[n.frame][arrival])
    show_age = not vis.age_structured or rng.random() < {"std": 0.3, "tele": 0.5, "narr": 0.7}[n.frame]
    age_text = _age_phrase(rng, d.age, d.sex, compact=n.frame == "tele") if show_age else ""
    return arrival_text, age_text


def _std_note(rng: random.Random, d: _Draft, n: _Note, head: tuple[str, str], vitals: list[str]) -> str:
    cc = shorthand(rng, n.cc, 0.15) if n.cc_style in ("std", "tele") else n.cc
    body = [_chief_complaint(rng, cc, n.cc_style), *n.findings, *n.extra, *n.negatives, *n.peds]
    if n.history and d.age < 12:
        body += n.history
    elif n.history:
        body.append(rng.choice(("hx ", "PMH: ", "PMH ", "h/o ")) + ", ".join(n.history))
    _insert_vitals(rng, body, vitals)
    start = " ".join(h for h in head if h)
    return start + (" " if start else "") + rng.choice((". ", ", ", "; ", ". ")).join(body)


def _tele_note(rng: random.Random, d: _Draft, n: _Note, head: tuple[str, str], vitals: list[str]) -> str:
    pieces = [_chief_complaint(rng, n.cc, n.cc_style), *n.findings, *n.extra, *n.negatives, *n.peds]
    body = [shorthand(rng, p, 0.7) for p in pieces]
    if n.history:
        body.append(rng.choice(("PMH ", "hx ", "PMH: ", "h/o ")) + rng.choice(("/", ", ")).join(n.history))
    _insert_vitals(rng, body, vitals)
    arrival_text, age_text = head
    start = " ".join(h for h in (age_text, arrival_text) if h)
    return start + (rng.choice((" ", ". ", ", ")) if start else "") + rng.choice((", ", "; ", ". ", " - ")).join(body)


def _narr_note(rng: random.Random, d: _Draft, n: _Note, head: tuple[str, str], vitals: list[str]) -> str:
    arrival_text, age_text = head
    subject = "Pt" if rng.random() < 0.5 else "$He"
    sentences: list[str] = []
    if age_text:
        told = any(p.startswith(("hx per", "per ", "history from", "mom ", "dad ")) for p in n.peds)
        if d.age < 12 and not arrival_text and not told and rng.random() < 0.5:
            arrival_text = expand(rng, "with {mom|parents|dad}")
        article = "an" if re.match(r"(8|11\D|18\D)", age_text) else "a"
        intro = rng.choice(
            (f"Pt is {article} {age_text} who presents", f"{age_text} presents")
            + (() if arrival_text else (f"Pt is {article} {age_text}",))
        )
        sentences.append(intro + (f" {arrival_text}" if arrival_text else ""))
    elif arrival_text:
        sentences.append(f"Pt arrived {arrival_text}")
    cc = longhand(rng, n.cc, 0.6)
    if n.cc_style in ("std", "tele"):
        cc = rng.choice(("Pt c/o ", "Pt complains of ", "Pt presents with ", "Pt reports ", "C/o ")) + cc
    sentences.append(cc)
    sentences += [longhand(rng, f, 0.6) for f in n.findings]
    for piece in n.extra:
        piece = longhand(rng, piece, 0.6)
        sentences.append(f"{subject} {piece}" if piece.startswith("also ") else piece)
    for neg in n.negatives:
        neg = longhand(rng, neg, 0.6)
        sentences.append(f"{subject} {neg}" if neg.startswith(("denies ", "did not ")) else neg)
    sentences += n.peds
    if n.history and d.age < 12:
        sentences += n.history
    elif n.history:
        lead = rng.choice(("PMH significant for ", "PMH: ", "$He has a history of ", "Hx of "))
        sentences.append(lead + _join_and(n.history))
    for i, v in enumerate(vitals):
        sentences.append((rng.choice(("Vitals: ", "VS: ", "Initial vitals ", "Triage vitals ")) if i == 0 else "") + v)
    return ". ".join(_capital(s.rstrip(". ")) for s in sentences) + "."


def _long_note(rng: random.Random, d: _Draft, n: _Note, vis: _Visibility) -> str:
    """A transfer summary: several hundred words of history, meds, ROS and outside-hospital course."""
    blocked = _blocked_negations(d)
    keys = dict.fromkeys(key for key, _ in NEGATIONS if key not in blocked)
    ros = [expand(rng, rng.choice([t for k, t in NEGATIONS if k == key])) for key in keys]
    sections = [
        f"TRANSFER SUMMARY from {rng.choice(_OSH)}. Reason for transfer: "
        + expand(
            rng,
            "{higher level of care|no {cardiology|neurosurgery|GI|peds} coverage|bed availability|family "
            "request}.",
        ),
        f"HPI: {_age_phrase(rng, d.age, d.sex)} "
        + ". ".join([_chief_complaint(rng, n.cc, n.cc_style), *n.findings, *n.extra])
        + ".",
        "PMH: " + ", ".join(n.history + rng.sample(_plausible_history(d), k=rng.randint(3, 6))) + ".",
        "PSH: "
        + ", ".join(
            rng.sample(
                (
                    "appendectomy 1998",
                    "cholecystectomy",
                    "R TKA 2015",
                    "C-section x2",
                    "hernia repair",
                    "tonsillectomy as child",
                    "L ORIF wrist",
                ),
                k=rng.randint(1, 4),
            )
        )
        + ".",
        "Home meds: " + ", ".join(rng.sample(_MEDS, k=rng.randint(5, 11))) + ".",
        "Allergies: " + rng.choice(("NKDA", "PCN (rash)", "sulfa (hives)", "codeine (nausea)")) + ".",
        "Social: "
        + expand(
            rng,
            "{former smoker {10|20|30} pk-yr|never smoker|current smoker 1 ppd}, "
            "{occasional EtOH|denies EtOH|social EtOH}, {denies drug use|no illicit drugs}, "
            "lives {with spouse|alone|with daughter|in assisted living}.",
        ),
        "ROS: " + "; ".join(ros + n.negatives) + ". All other systems reviewed and negative.",
        "Course at OSH: "
        + expand(
            rng,
            "labs notable for WBC {8.1|10.4|12.2}, Hgb {11.8|13.1|14.0}, Cr {0.9|1.1|1.4}, "
            "lytes WNL. {CXR without acute process|CT head without acute findings|"
            "US pending at time of transfer}. Given {1L NS|zofran 4mg IV|tylenol 1g PO}. "
            "Pt remained {hemodynamically stable|stable} during stay. Report called to charge RN, "
            "accepting physician aware. Family {updated at bedside|updated by phone}.",
        ),
    ]
    if vis.in_note:
        text, format_tags = _vitals_text(rng, vis.in_note, d.age)
        n.tags += format_tags
        sections.insert(2, "Vitals on arrival here: " + text + ".")
    filler = (
        "Pt was seen by the {hospitalist|ED physician|NP} who discussed the plan with the pt and "
        "{family|spouse}. "
        "{Outpatient records reviewed|Prior notes reviewed}, {last admission {2019|2021|2023} for "
        "{CHF|pneumonia|cellulitis}|"
        "no recent admissions}. {PT/OT not yet evaluated|ambulates with walker at baseline|independent in "
        "ADLs}. "
    )
    sections += [expand(rng, filler) for _ in range(rng.randint(4, 9))]
    last, format_tags = _vitals_text(rng, {**vis.in_note, **vis.structured}, d.age)
    n.tags += format_tags
    closing = "Assessment at transfer: " + _age_phrase(rng, d.age, d.sex) + " with " + n.cc + "."
    sections.append(closing + (f" Last vitals {last}." if last else ""))
    return " ".join(sections)


def _write(
    rng: random.Random, d: _Draft, vis: _Visibility, arrival: str, arrival_sent: bool, split: TemplateSplit | None
) -> tuple[str, list[str]]:
    """The note for these facts, and its tags (templates used, styles, slices)."""
    n = _content(rng, d, vis, split)
    if d.age >= 18 and rng.random() < LONG_SHARE:
        note = _long_note(rng, d, n, vis)
        n.tags.append("long")
    else:
        head = _head(rng, d, vis, arrival, arrival_sent, n)
        if head[0].startswith(("BIB PD", "brought in by police")):
            n.tags.append("police_text")
        if head[1] and d.age < 12 and re.search(r"\d ?(d|day|wk|week|mo|month|m/o)\b", head[1]):
            n.tags.append("peds_phrasing")
        vitals = _vital_groups(rng, d, vis, n.tags, prefix=n.frame != "narr")
        write = {"std": _std_note, "tele": _tele_note, "narr": _narr_note}[n.frame]
        note = _fill(write(rng, d, n, head, vitals), d.sex, n.kin, n.per)
        n.tags.append(f"frame_{n.frame}")
    if n.frame == "tele" and "long" not in n.tags or n.cc_style == "tele":
        n.tags.append("shorthand")
    if n.frame == "narr" and "long" not in n.tags or n.cc_style == "narr":
        n.tags.append("narrative")
    if rng.random() < TYPO_SHARE:
        note, phonetic = _add_typos(rng, note, rng.randint(1, 3))
        n.tags += ["typo"] + (["misspelling"] if phonetic else [])
    return note, list(dict.fromkeys(n.tags))


# ---------------------------------------------------------------------------------------------------
# Evaluation slice
# ---------------------------------------------------------------------------------------------------

_NEG_CUE = re.compile(
    r"\b(denies|denied|no|not|neg for|negative for|without|w/o)\b([^.;|]{0,60})", re.IGNORECASE
)
_HIGH_RISK_TERM = re.compile(
    r"\b(chest pain|cp|sob|shortness of breath|doe|loc|lose consciousness|head strike|hit head|blood "
    r"thinners|"
    r"anticoagulants|si|hi|suicidal|homicidal|fevers?|weakness|numbness|facial droop|slurred speech|focal "
    r"deficits|"
    r"confusion|syncope|passing out|hematemesis|blood in vomit|pregnancy|cancer|chemo)\b",
    re.IGNORECASE,
)
# Notes with at least this many negated high-risk terms form the negation-heavy slice.
NEGATION_HEAVY_MIN = 3


def negated_high_risk_terms(text: str) -> int:
    return sum(len(_HIGH_RISK_TERM.findall(m.group(2))) for m in _NEG_CUE.finditer(text))


def is_negation_heavy(example: TriageExample | str) -> bool:
    text = example if isinstance(example, str) else example.note
    return negated_high_risk_terms(text) >= NEGATION_HEAVY_MIN
