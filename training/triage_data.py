"""Seeded synthetic triage notes labelled by the Emergency Severity Index (ESI v4).

Each example is built from facts (complaint, age, visible vitals, history flags, resources the visit
needs); `esi_level` turns the facts into an acuity by decision points A-D, and the note is rendered
from the same facts with the surface noise of real notes: abbreviations, negations, typos, vitals
given only in the text or only as structured fields, and long transfer summaries. A small controlled
label noise imitates nurse disagreement. All names and places are invented; there is no PHI.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

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
            "{dizzy|near syncope|weak}, HR {28|32|34|36} on monitor, {pale|diaphoretic}, {hx CHB|on "
            "metoprolol}",
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
# Text pieces
# ---------------------------------------------------------------------------------------------------

# Negated high-risk phrases: (negation key, templates). Each is a pertinent negative a nurse writes;
# a negated phrase never changes the acuity.
NEGATIONS: tuple[tuple[str, str], ...] = (
    ("chest_pain", "{denies|no|neg for} {chest pain|CP}"),
    ("sob", "{denies|no} {SOB|shortness of breath|DOE}"),
    ("chest_pain", "denies CP/SOB"),
    ("loc", "{no LOC|denies LOC|did not lose consciousness}"),
    ("head_strike", "{denies head strike|did not hit head}"),
    ("anticoag", "{not on blood thinners|no anticoagulants|denies blood thinners}"),
    ("si", "{denies SI/HI|denies SI|no suicidal or homicidal ideation}"),
    ("fever", "{no fever|denies fevers|afebrile at home}"),
    ("neuro", "{denies weakness or numbness|no facial droop or slurred speech|no focal deficits}"),
    ("confusion", "{no confusion|at baseline mental status per family|A&Ox4}"),
    ("syncope", "{no syncope|denies passing out}"),
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
_ARRIVAL_TEXT = {
    "EMS": "{BIBA|per EMS|arrived via EMS|BIB ambulance}",
    "walk-in": "{ambulatory to triage|walked in|walk-in}",
    "private vehicle": "{brought by {family|spouse}|POV|dropped off by friend}",
    "wheelchair": "wc to triage",
}
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
# Vitals
# ---------------------------------------------------------------------------------------------------

# Normal HR and RR ranges per danger band (strictly under the band's danger limits).
_NORMAL_HR = ((110, 170), (90, 150), (70, 128), (60, 98))
_NORMAL_RR = ((30, 48), (24, 38), (18, 28), (12, 20))


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


_SPO2_LABELS = ("SpO2", "sat", "O2 sat", "SaO2")
_SPO2_SUFFIXES = ("", " RA", " on RA")


def _vitals_text(rng: random.Random, v: dict[str, float]) -> str:
    parts = []
    if "heart_rate" in v:
        parts.append(f"{rng.choice(('HR', 'P', 'pulse'))} {int(v['heart_rate'])}")
    if "systolic_bp" in v:
        parts.append(f"BP {int(v['systolic_bp'])}/{int(v.get('diastolic_bp', 60))}")
    if "resp_rate" in v:
        parts.append(f"{rng.choice(('RR', 'R', 'resp'))} {int(v['resp_rate'])}")
    if "spo2" in v:
        parts.append(f"{rng.choice(_SPO2_LABELS)} {int(v['spo2'])}%{rng.choice(_SPO2_SUFFIXES)}")
    if "temperature_c" in v:
        parts.append(f"{rng.choice(('T', 'temp', 'Temp'))} {v['temperature_c']:.1f}")
    if rng.random() < 0.3:
        rng.shuffle(parts)
    if "pain" in v:
        parts.append(rng.choice(("pain {}/10", "rates pain {}/10", "pain score {}")).format(int(v["pain"])))
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TriageExample:
    """One labelled note: the serving input fields, the (possibly noisy) label and the rule label."""

    note: str
    age_years: float | None
    sex: str | None
    vitals: dict[str, float]
    arrival_mode: str | None
    acuity: int
    rule_acuity: int
    complaint: str
    tags: tuple[str, ...] = ()

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
    """Mutable facts and note pieces while one example is being built."""

    complaint: Complaint
    age: float
    sex: str
    vitals: dict[str, float]
    flags: list[str]
    pieces: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


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
    d = _Draft(c, age, sex, vitals, list(c.flags))
    d.pieces.append(expand(rng, rng.choice(c.texts)))
    d.pieces += [expand(rng, e) for e in rng.sample(c.extras, k=rng.randint(0, min(2, len(c.extras))))]
    return d


def _add_modifiers(rng: random.Random, d: _Draft) -> None:
    """History and situational facts that can move a C complaint to ESI 2 (or not)."""
    c = d.complaint
    if d.age >= 60 and rng.random() < (0.5 if "head_strike" in c.flags else 0.12):
        d.flags.append("anticoagulated")
        d.history.append(
            expand(rng, "{on|takes} ") + rng.choice(_ANTICOAG) + rng.choice((" for afib", " for DVT", ""))
        )
    if d.age >= 65 and c.decision == "C" and rng.random() < 0.1:
        d.flags.append("new_confusion")
        d.pieces.append(expand(rng, rng.choice(_CONFUSION)))
    if "infection" in c.flags and d.age >= 18 and "immunocompromised" not in d.flags and rng.random() < 0.1:
        d.flags.append("immunocompromised")
        d.history.append(rng.choice(_IMMUNO))
    if "immunocompromised" in c.flags:
        d.history.append(rng.choice(_IMMUNO))
    pain = d.vitals.get("pain", 0)
    if pain >= 7 and c.decision == "C":
        credible = rng.random() < (0.55 if c.resources >= 2 else 0.25)
        if not credible:
            d.flags.append("pain_not_credible")
        d.pieces.append(rng.choice(_DISTRESS if credible else _COMFORT))
    elif rng.random() < 0.15:
        d.pieces.append(rng.choice(_COMFORT if c.resources < 2 else _DISTRESS[:2]))


def _history(rng: random.Random, d: _Draft) -> None:
    if d.age < 12:
        if rng.random() < 0.4:
            d.history.append(rng.choice(("no PMH", "UTD on vaccines", "no sig PMH, UTD on shots")))
        return
    k = rng.choice((0, 0, 1, 2, 3)) if d.age < 50 else rng.choice((0, 1, 2, 3, 4))
    d.history[:0] = rng.sample(_plausible_history(d), k=k)


def _plausible_history(d: _Draft) -> list[str]:
    """Past history that fits the patient: no BPH in women, no coronary disease in the young."""
    unlikely = {"BPH"} if d.sex == "F" else set()
    if d.age < 40:
        unlikely |= {"CAD s/p PCI", "CHF", "CKD", "BPH"}
    return [h for h in _HISTORY if h not in unlikely]


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
        blocked.update(("si", "anticoag", "cancer"))
    return blocked


def _negatives(rng: random.Random, d: _Draft, count: int) -> list[str]:
    blocked = _blocked_negations(d)
    pool = [t for key, t in NEGATIONS if key not in blocked]
    chosen = [expand(rng, t) for t in rng.sample(pool, k=min(count, len(pool)))]
    said = " ".join(d.pieces).lower()
    minor = [t for t in _MINOR_NEGATIVES if t.split()[-1].split("/")[0] not in said]
    return chosen + rng.sample(minor, k=min(len(minor), rng.choice((0, 0, 1, 2))))


def _negation_count(rng: random.Random, d: _Draft) -> int:
    """Pertinent negatives; about a quarter of notes get many (the hard, negation-heavy cases)."""
    if d.complaint.decision == "A":
        return rng.choice((0, 0, 1))
    if rng.random() < 0.25:
        d.tags.append("hard_negation")
        return rng.randint(2, 4)
    return rng.choice((0, 0, 1, 1, 2))


@dataclass(frozen=True)
class _Visibility:
    structured: dict[str, float]
    in_note: dict[str, float]
    age_structured: bool
    sex_structured: bool


def _visibility(rng: random.Random, vitals: dict[str, float]) -> _Visibility:
    mode = rng.choices(
        ("structured", "note", "both", "partial", "none"), weights=(0.5, 0.2, 0.15, 0.1, 0.05)
    )[0]
    structured: dict[str, float]
    in_note: dict[str, float]
    if mode == "none" or not vitals:
        structured, in_note = {}, {}
    elif mode == "partial":
        keys = [k for k in vitals if rng.random() < 0.6]
        structured, in_note = {k: vitals[k] for k in keys}, {}
    else:
        structured = dict(vitals) if mode in ("structured", "both") else {}
        in_note = dict(vitals) if mode in ("note", "both") else {}
    return _Visibility(structured, in_note, rng.random() < 0.88, rng.random() < 0.85)


def _age_phrase(rng: random.Random, age: float, sex: str) -> str:
    days = age * _DAYS_PER_YEAR
    if days < 30:
        amount = f"{int(days)}{rng.choice(('d', ' day', '-day'))} old"
    elif age < 2:
        amount = f"{int(age * 12)}{rng.choice(('mo', ' month', '-month'))} old"
    else:
        amount = f"{int(age)}{rng.choice(('yo', ' yo', ' y/o', 'y'))}"
    word = {
        "F": ("F", "female", "girl" if age < 14 else "woman"),
        "M": ("M", "male", "boy" if age < 14 else "man"),
    }
    return f"{amount} {rng.choice(word[sex])}"


def _chief_complaint(rng: random.Random, text: str) -> str:
    if text.startswith(("c/o", "complains", "pt states")):
        return text
    return (
        rng.choice(
            ("", "", "c/o ", "pt c/o ", "pt states ", "complains of ", "presents with ", "CC: ", "here for ")
        )
        + text
    )


_TYPO_WORD = re.compile(r"[a-z]{5,}")


def _typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def add_typos(rng: random.Random, text: str, count: int) -> str:
    matches = list(_TYPO_WORD.finditer(text))
    for m in sorted(rng.sample(matches, k=min(count, len(matches))), key=lambda m: -m.start()):
        text = text[: m.start()] + _typo(rng, m.group()) + text[m.end() :]
    return text


def _short_note(rng: random.Random, d: _Draft, vis: _Visibility, arrival: str, negatives: list[str]) -> str:
    head = []
    if rng.random() < 0.35 or arrival == "EMS" and rng.random() < 0.3:
        head.append(expand(rng, _ARRIVAL_TEXT[arrival]))
    if not vis.age_structured or rng.random() < 0.3:
        head.append(_age_phrase(rng, d.age, d.sex))
    body = [_chief_complaint(rng, d.pieces[0])] + d.pieces[1:] + negatives
    if d.history and d.age < 12:
        body += d.history
    elif d.history:
        body.append(rng.choice(("hx ", "PMH: ", "PMH ", "h/o ")) + ", ".join(d.history))
    if vis.in_note:
        body.insert(rng.randint(1, len(body)), _vitals_text(rng, vis.in_note))
    sep = rng.choice((". ", ", ", "; ", ". "))
    return " ".join(head) + (" " if head else "") + sep.join(body)


def _long_note(rng: random.Random, d: _Draft, vis: _Visibility, negatives: list[str]) -> str:
    """A transfer summary: several hundred words of history, meds, ROS and outside-hospital course."""
    blocked = _blocked_negations(d)
    ros = [expand(rng, t) for key, t in NEGATIONS if key not in blocked]
    sections = [
        f"TRANSFER SUMMARY from {rng.choice(_OSH)}. Reason for transfer: "
        + expand(
            rng,
            "{higher level of care|no {cardiology|neurosurgery|GI|peds} coverage|bed availability|family "
            "request}.",
        ),
        f"HPI: {_age_phrase(rng, d.age, d.sex)} "
        + ". ".join([_chief_complaint(rng, d.pieces[0])] + d.pieces[1:])
        + ".",
        "PMH: " + ", ".join(d.history + rng.sample(_plausible_history(d), k=rng.randint(3, 6))) + ".",
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
        "ROS: " + "; ".join(ros + negatives) + ". All other systems reviewed and negative.",
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
        sections.insert(2, "Vitals on arrival here: " + _vitals_text(rng, vis.in_note) + ".")
    filler = (
        "Pt was seen by the {hospitalist|ED physician|NP} who discussed the plan with the pt and "
        "{family|spouse}. "
        "{Outpatient records reviewed|Prior notes reviewed}, {last admission {2019|2021|2023} for "
        "{CHF|pneumonia|cellulitis}|"
        "no recent admissions}. {PT/OT not yet evaluated|ambulates with walker at baseline|independent in "
        "ADLs}. "
    )
    sections += [expand(rng, filler) for _ in range(rng.randint(4, 9))]
    sections.append(_assessment(rng, d, vis))
    return " ".join(sections)


def _assessment(rng: random.Random, d: _Draft, vis: _Visibility) -> str:
    """Transfer summaries close by restating the presenting problem and the last vitals."""
    last = _vitals_text(rng, {**vis.in_note, **vis.structured})
    text = "Assessment at transfer: " + _age_phrase(rng, d.age, d.sex) + " with " + d.pieces[0] + "."
    return text + (f" Last vitals {last}." if last else "")


def _arrival(rng: random.Random, c: Complaint) -> str:
    return rng.choices(_ARRIVAL_MODES, weights=_ARRIVAL_WEIGHTS[c.arrival])[0]


def _render(rng: random.Random, d: _Draft, vis: _Visibility, level: int, decision: str) -> TriageExample:
    arrival = _arrival(rng, d.complaint)
    negatives = _negatives(rng, d, _negation_count(rng, d))
    long = d.age >= 18 and rng.random() < LONG_SHARE
    note = _long_note(rng, d, vis, negatives) if long else _short_note(rng, d, vis, arrival, negatives)
    tags = [*d.tags, f"rule_{decision}"] + (["long"] if long else [])
    tags += (["vitals_in_note"] if vis.in_note else []) + (["vitals_structured"] if vis.structured else [])
    if rng.random() < TYPO_SHARE:
        note = add_typos(rng, note, rng.randint(1, 3))
        tags.append("typo")
    acuity = level
    if rng.random() < LABEL_NOISE:
        acuity = min(5, max(1, level + rng.choice((-1, 1))))
        tags += ["label_noise"] if acuity != level else []
    return TriageExample(
        note=note,
        age_years=round(d.age, 4) if vis.age_structured else None,
        sex=d.sex if vis.sex_structured else None,
        vitals=vis.structured,
        arrival_mode=arrival if rng.random() < 0.7 else None,
        acuity=acuity,
        rule_acuity=level,
        complaint=d.complaint.key,
        tags=tuple(tags),
    )


def _one(rng: random.Random, target: int) -> TriageExample:
    """Draw facts until the ESI rules, applied to what the note will show, give the target level."""
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
        if level == target:
            return _render(rng, d, vis, level, decision)
    raise RuntimeError(f"could not draw an ESI {target} example")


def generate(n: int, seed: int) -> list[TriageExample]:
    """n examples, identical for the same (n, seed); the class mix follows CLASS_MIX."""
    rng = random.Random(seed)
    counts = [round(n * share) for share in CLASS_MIX]
    counts[2] += n - sum(counts)
    targets = [level for level, k in enumerate(counts, start=1) for _ in range(k)]
    rng.shuffle(targets)
    return [_one(rng, t) for t in targets]


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
