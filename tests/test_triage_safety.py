"""The triage safety net: every rule fires on its own phrases and keeps quiet on near misses, negation and
history are honoured, vitals and age are read from the note, and the net never lowers acuity."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import triage_safety
from engine.triage_input import VITAL_KEYS, TriageInput
from engine.triage_safety import (
    RULES,
    RULES_BY_ID,
    Phrase,
    SafetyAssessment,
    apply,
    assess,
    parse_note_age,
    parse_note_vitals,
    rules_table,
)

DAY = 1 / 365.25
Case = str | TriageInput


def _inp(note: str = "", age: float | None = None, **vitals: float) -> TriageInput:
    return TriageInput(note=note, age_years=age, vitals=dict(vitals))


def _as_input(case: Case) -> TriageInput:
    return case if isinstance(case, TriageInput) else TriageInput(note=case)


def _fired(case: Case) -> tuple[str, ...]:
    return assess(_as_input(case)).fired_ids


# --- per-rule examples: every rule in the table must have both lists -------------------------------------

FIRES: dict[str, list[Case]] = {
    "A-apnea": [
        "found apneic by EMS",
        "pt not breathing on arrival",
        "agonal respirations",
        "infant stopped breathing",
    ],
    "A-arrest": [
        "cardiac arrest at home, ROSC after 2 rounds",
        "pulseless, CPR in progress",
        "VF arrest, shocked by AED",
        "no pulse on EMS arrival",
    ],
    "A-airway": ["intubated in the field", "being bagged via BVM", "unable to protect his airway"],
    "A-unresponsive": [
        "found down unresponsive",
        "responds only to painful stimuli",
        "AVPU: P",
        "unresp in car",
        "does not respond to voice",
    ],
    "A-gcs-low": ["GCS 6", "GCS E1V1M4", "GCS of 3T"],
    "A-resp-severe": ["tripoding, speaking in 1-2 word sentences", "lips blue, gasping", "severe respiratory distress"],
    "A-hypoxia-distress": [_inp("labored breathing", spo2=86), "SOB, sats 85% RA", _inp("sats 88% RA", resp_rate=34)],
    "A-hypoxia-critical": ["sats 76% RA", _inp("cough", spo2=78)],
    "A-resp-rate-critical": ["RR 6", _inp("found in bed", resp_rate=4)],
    "A-overdose-hypoventilation": ["heroin OD, RR 8", "found with fentanyl patches, respirations shallow"],
    "A-shock": [_inp("weak", systolic_bp=84, heart_rate=128), "BP 82/50, mottled", "cold clammy, SBP 86"],
    "A-hypotension-severe": ["BP 70/palp", _inp("dizzy", systolic_bp=72)],
    "A-shock-named": ["in septic shock per EMS", "looks shocky"],
    "A-brady-hypotension": ["HR 38, BP 84/40", _inp("dizzy", heart_rate=42, systolic_bp=82)],
    "A-pacing": ["transcutaneous pacing initiated by EMS", "atropine given x2 for brady"],
    "A-seizure-active": [
        "actively seizing on arrival",
        "status epilepticus",
        "siezure lasting > 10 min",
        "sezure ongoing",
        "seizing in triage",
    ],
    "A-anaphylaxis": [
        "stung by bee, stridor",
        "peanut allergy exposure, hypotensive 78/40",
        "hives and throat closing",
        _inp("allergic reaction to shrimp", systolic_bp=82),
    ],
    "A-massive-bleeding": ["arterial bleeding from thigh, tourniquet applied", "uncontrolled bleeding from scalp lac"],
    "B-thunderclap": ["worst headache of life", "sudden onset severe HA", "thunderclap HA while lifting"],
    "B-meningitis": [
        "fever 39, stiff neck",
        "febrile with petechial rash",
        _inp("nuchal rigidity", temperature_c=38.4),
    ],
    "B-chest-pain-cardiac": [
        "CP radiating to jaw",
        "chest pain, hx CAD s/p stents",
        "chest pressure since 0600",
        "c/o chest pain, diaphoretic",
    ],
    "B-acs-ecg": ["EMS 12-lead shows STEMI", "ST elevation in II, III, aVF", "positive troponin at outside hospital"],
    "B-stroke": ["facial droop and slurred speech", "L sided weakness, LKW 0800", "aphasic since 1400", "code stroke"],
    "B-si-hi-plan": ["SI with plan to overdose", "suicidal, has a gun at home", "HI towards neighbor with intent"],
    "B-suicide-attempt": ["intentional overdose of tylenol", "tried to hang himself", "cut her wrists"],
    "B-overdose": ["friend found him with empty bottles of his meds next to him", "took a handful of her pills 2 h ago",
                   "OD on unknown pills", "swallowed a bottle of tylenol tabs"],
    "B-sepsis": ["code sepsis called by EMS", "urosepsis"],
    "B-sepsis-hypotension": [_inp("fever and chills", systolic_bp=86, heart_rate=96), "febrile 39.2, BP 84/50"],
    "B-neonate-fever": [
        "10 day old with temp 101.2F",
        _inp("fussy", age=14 * DAY, temperature_c=38.1),
        "3 wk old, mom reports fever",
        "newborn, T 38.0",
    ],
    "B-immunocompromised-fever": [
        "on chemo for breast ca, fever 38.4",
        "hx kidney transplant, febrile",
        _inp("neutropenic", temperature_c=38.3),
    ],
    "B-confusion": ["new confusion per family", "lethargic infant", "A&Ox2", "AMS", "more confused than baseline"],
    "B-gcs-altered": ["GCS 13", "GCS 14/15"],
    "B-seizure-recent": ["postictal on arrival", "first time seizure", "2 seizures today"],
    "B-ectopic": ["r/o ectopic", "concern for ectopic pregnancy"],
    "B-pregnancy-pain-bleeding": ["+UPT, LLQ pain and spotting", "8 weeks pregnant with vaginal bleeding"],
    "B-preeclampsia": ["32 wks pregnant, preeclampsia"],
    "B-pregnancy-severe-hypertension": [
        "34 wks pregnant, HA, BP 172/104",
        _inp("pregnant, headache", diastolic_bp=112),
    ],
    "B-torsion": ["sudden onset L testicular pain", "scrotal swelling and pain"],
    "B-aortic-dissection": ["tearing chest pain radiating to back", "tearing pain to back"],
    "B-aaa-pain": ["known AAA, now back pain", "hx AAA with new abd pain"],
    "B-dka": ["DKA, kussmaul resp", "fruity breath odor"],
    "B-hyperglycemia-symptomatic": ["BG 520, vomiting", "glucometer reads HI, abd pain"],
    "B-hypoglycemia": ["FSBS 42", "BG 2.1"],
    "B-chemical-eye": ["bleach splashed in eyes", "chemical splash to R eye"],
    "B-head-strike-anticoag": [
        "fell and hit head, on eliquis",
        "head strike, takes coumadin",
        "s/p fall, hit head, on blood thinners",
    ],
    "B-trauma-high-energy": [
        "rollover MVC, ejected",
        "pedestrian struck by car at 40 mph",
        "GSW to abdomen",
        "fell 20 ft from roof",
    ],
    "B-severe-pain-distress": ["pain 9/10 writhing on stretcher", _inp("crying in pain", pain=8)],
    "B-near-drowning": ["near drowning in pool", "pulled from the lake by bystanders"],
    "B-resp-distress": ["labored breathing with retractions", "stridor at rest"],
    "B-airway-threat": ["tongue swelling", "unable to swallow secretions, muffled voice"],
    "B-anaphylaxis": ["anaphylaxis to shellfish"],
    "B-gi-bleed": ["vomiting blood", "coffee ground emesis"],
    "B-burn-inhalation": ["house fire, singed nasal hairs", "30% TBSA burns"],
    "B-limb-threat": ["open fracture of tibia", "pulseless L foot"],
    "B-dangerous-rhythm": ["complete heart block on monitor", "v tach on EMS strip"],
    "B-hypothermia": ["T 34.2", _inp("found outside", temperature_c=33.0)],
    "A-airway-obstruction": [
        "choking on a grape, can't talk or cry",
        "4yo choked on hot dog, turning blue",
        "pt choking, unable to breathe",
    ],
    "A-hypoglycemia-altered": ["BG 32, confused and sweaty", _inp("FSBS 41, lethargic"), "sugar 45, unresp"],
    "A-hypotension-neonate": [_inp("not feeding", age=10 * DAY, systolic_bp=55), "12 day old, BP 54/30"],
    "A-hypotension-infant": [_inp("vomiting", age=0.5, systolic_bp=64)],
    "A-hypotension-toddler": [_inp("diarrhea", age=2.0, systolic_bp=68)],
    "A-hypotension-child": [_inp("fever", age=5.0, systolic_bp=72), "6 y/o BP 70/40"],
    "B-syncope-elderly": [
        "78F fainted at church, feels fine now",
        "passed out in the bathroom, 81 y/o",
        _inp("syncopal episode at home", age=70.0),
        _inp("LOC x2 today", age=76.0),
    ],
    "B-syncope-cardiac": [
        "passed out while running",
        "syncope with palpitations",
        "fainted, hx CAD s/p stents",
        "blacked out without warning, chest pain before",
        _inp("syncopal episode", age=30.0, heart_rate=42),
    ],
    "B-toxic-ingestion": [
        "drank antifreeze 1 hr ago",
        "3yo swallowed a button battery",
        "toddler got into grandma's pills",
        "18 mo drank some drain cleaner",
        "kid swallowed 2 magnets",
        "took 30 of his tylenol 500s",
        "took a bunch of his mom's oxys",
        "unknown how many pills swallowed",
    ],
    "B-sexual-assault": ["sexual assault 2 hrs ago", "states she was raped last night", "here for SANE exam"],
    "B-gi-bleed-unstable": [
        "black tarry stools, lightheaded when standing",
        _inp("blood in stool x2 d", heart_rate=118),
        "melena, BP 92/60",
        "BRBPR, passed out on toilet",
    ],
    "B-pe-suspected": [
        "pleuritic chest pain, R calf swollen",
        "SOB, just flew back from Australia",
        "SOB 2 weeks post-partum",
        "chest pain, dx with DVT last week",
        "SOB, r/o PE",
    ],
    "D-infant-hr": [_inp("fussy", age=0.1, heart_rate=190), "3 wk old HR 200"],
    "D-infant-rr": [_inp("fussy", age=0.1, resp_rate=60)],
    "D-toddler-hr": [_inp("fever", age=1.0, heart_rate=170), "6 mo with HR 170"],
    "D-toddler-rr": [_inp("cough", age=2.0, resp_rate=45)],
    "D-child-hr": [_inp("vomiting", age=5.0, heart_rate=150)],
    "D-child-rr": [_inp("cough", age=5.0, resp_rate=34), "3yo RR 45"],
    "D-adult-hr": ["HR 112", _inp("abd pain", heart_rate=130), _inp("abd pain", age=40.0, heart_rate=101)],
    "D-adult-rr": ["RR 28", _inp("cough", resp_rate=24)],
    "D-spo2": ["sats 91%", _inp("cough", spo2=90), _inp("cough", age=0.5, spo2=91)],
}

QUIET: dict[str, list[Case]] = {
    "A-apnea": ["hx obstructive sleep apnea on CPAP", "no breathing difficulty", "not breathing well since yesterday"],
    "A-arrest": [
        "pulseless L foot after fall",
        "DNR, no CPR",
        "no pulse ox reading available",
        "has an implanted defibrillator",
    ],
    "A-airway": ["never intubated for asthma", "hx intubation for asthma in 2019"],
    "A-unresponsive": [
        "not responding to tylenol",
        "responds to pain meds",
        "Glasgow coma scale 15",
        "no unresponsive episodes",
    ],
    "A-gcs-low": ["GCS 15", "GCS 9"],
    "A-resp-severe": ["no cyanosis", "no accessory muscle use", "acrocyanosis in newborn"],
    "A-hypoxia-distress": [
        "no trouble breathing, SpO2 86%",
        _inp("labored breathing", spo2=90),
        "neg for SOB, sats 88%",
    ],
    "A-hypoxia-critical": ["sats 80%", _inp("cough", spo2=0), "sats 76% (baseline)"],
    "A-resp-rate-critical": ["RR 8", "R 4 cm lac to forearm"],
    "A-overdose-hypoventilation": ["heroin OD, RR 14", "denies overdose, RR 9"],
    "A-shock": [_inp("weak", systolic_bp=84, heart_rate=88), _inp("weak", age=6.0, systolic_bp=84, heart_rate=130)],
    "A-hypotension-severe": ["BP 82/50", _inp("fever", age=2.0, systolic_bp=75)],
    "A-shock-named": ["hx of septic shock in 2019", "shocked by electric outlet, no burns"],
    "A-brady-hypotension": ["HR 45, BP 130/80", "HR 38 BP 96/60"],
    "A-pacing": ["no pacing needed", "pacemaker in place"],
    "A-seizure-active": ["h/o seizures, none today", "was seizing at home, now postictal", "no seizure activity"],
    "A-anaphylaxis": ["hives, no stridor, BP 130/80", "Allergies: PCN (anaphylaxis). c/o ankle pain"],
    "A-massive-bleeding": ["bleeding controlled with pressure", "hx massive GI hemorrhage in 2020"],
    "B-thunderclap": ["denies worst headache of life", "gradual onset HA, similar to prior migraines"],
    "B-meningitis": ["stiff neck after MVC, afebrile", "stiff neck, no fever"],
    "B-chest-pain-cardiac": [
        "denies chest pain",
        "chest pain reproducible on palpation",
        "family hx of MI, c/o chest pain",
        "MI ruled out, chest pain",
        "chest pain, blood pressure 130/80",
        "stabbing pain in chest",
    ],
    "B-acs-ecg": ["hx NSTEMI", "no ST elevation"],
    "B-stroke": [
        "hx of CVA w residual weakness (baseline)",
        "no facial droop, no slurred speech",
        "denies numbness, weakness, slurred speech, facial droop",
        "heat stroke",
        "L flank pain, +CVA tenderness",
    ],
    "B-si-hi-plan": ["denies SI/HI", "passive SI, denies plan", "SI joint pain, plan: PT", "SI/HI: denies"],
    "B-suicide-attempt": ["hx suicide attempt in 2015", "denies suicide attempt"],
    "B-overdose": ["denies overdose", "hx of overdose 2019, sober since", "takes his pills as prescribed",
                   "med list: morphine, xanax"],
    "B-sepsis": ["hx sepsis", "aseptic technique used"],
    "B-sepsis-hypotension": [_inp("fever", systolic_bp=120), "no fever, BP 86/50"],
    "B-neonate-fever": [
        "10 day old, T 37.9",
        _inp("fever", age=40 * DAY),
        "2 mo old, T 38.5",
        "3 wk old, no fever",
    ],
    "B-immunocompromised-fever": ["on chemo, no fever", "fever 38.5, no hx of cancer or chemo"],
    "B-confusion": ["A&Ox4", "baseline dementia, confused", "no confusion", "not confused", "no LOC or confusion"],
    "B-gcs-altered": ["GCS 15", "GCS 14 (baseline)"],
    "B-seizure-recent": ["h/o multiple seizures, none today", "no seizure activity"],
    "B-ectopic": ["hx ectopic pregnancy"],
    "B-pregnancy-pain-bleeding": ["UPT neg, LLQ pain", "denies pregnancy, pelvic pain"],
    "B-preeclampsia": ["hx preeclampsia with last pregnancy"],
    "B-pregnancy-severe-hypertension": ["34 wks pregnant, BP 150/95", "not pregnant, BP 182/100"],
    "B-torsion": ["denies testicular pain"],
    "B-aortic-dissection": ["eye pain with tearing", "hx aortic dissection repair"],
    "B-aaa-pain": ["hx AAA, c/o sore throat", "AAA screening negative, back pain"],
    "B-dka": ["hx DKA", "no ketones"],
    "B-hyperglycemia-symptomatic": ["BG 520, no vomiting", "BG 250, vomiting"],
    "B-hypoglycemia": ["FSBS 95", "BG 5.2"],
    "B-chemical-eye": ["eye pain from sand", "acid reflux"],
    "B-head-strike-anticoag": [
        "hit head, denies blood thinners",
        "on eliquis, no head strike",
        "hit head, no anticoagulants",
        "fell and struck chin on tub, on eliquis",
    ],
    "B-trauma-high-energy": [
        "low speed MVC, restrained, ambulatory at scene",
        "stabbing pain in chest",
        "EF 30%, ejection fraction low",
    ],
    "B-severe-pain-distress": [
        "pain 9/10, NAD, texting on phone",
        "pain 5/10, moaning",
        "R forearm pain 8/10, guarding, resting comfortably",
    ],
    "B-near-drowning": ["swim lesson, denies submersion"],
    "B-resp-distress": ["no resp distress", "no retractions, no stridor"],
    "B-airway-threat": ["teething, drooling", "no tongue swelling"],
    "B-anaphylaxis": ["Allergies: PCN (anaphylaxis)"],
    "B-gi-bleed": ["denies hematemesis", "no coffee ground emesis", "vomiting but no blood"],
    "B-burn-inhalation": ["5% TBSA burn to hand", "no soot in mouth"],
    "B-limb-threat": ["closed fracture, pulses intact", "no open fx"],
    "B-dangerous-rhythm": ["hx VT", "no ectopy on monitor"],
    "B-hypothermia": ["T 35.5", "temp 95.9F"],
    "A-airway-obstruction": [
        "choking sensation in throat with anxiety, talking in full sentences",
        "choked on water, coughing, now talking",
        "no choking, can't talk due to sore throat",
    ],
    "A-hypoglycemia-altered": ["BG 52, A&Ox4", "BG 120, confused", "FSBS 42, no confusion"],
    "A-hypotension-neonate": [_inp("not feeding", age=10 * DAY, systolic_bp=62), _inp("well", age=0.5, systolic_bp=58)],
    "A-hypotension-infant": [_inp("vomiting", age=0.5, systolic_bp=74), _inp("vomiting", age=2.0, systolic_bp=69)],
    "A-hypotension-toddler": [_inp("diarrhea", age=2.0, systolic_bp=80), _inp("well", age=5.0, systolic_bp=70)],
    "A-hypotension-child": [_inp("fever", age=5.0, systolic_bp=92), _inp("fever", systolic_bp=75)],
    "B-syncope-elderly": [
        "78F, no syncope, ankle pain",
        "80 y/o, hx syncope 2015, here for rash",
        "34F fainted at church",
        _inp("denies LOC, hit head", age=70.0),
        "82yo, fell, no LOC, denies passing out",
        "82 y/o, feels faint when standing",
    ],
    "B-syncope-cardiac": [
        "fainted after blood draw, back to baseline",
        "denies syncope, palpitations x1 wk",
        "passed out while standing in line, family hx of MI",
    ],
    "B-toxic-ingestion": [
        "swallowed a penny, no drooling",
        "took 2 extra tylenol yesterday",
        "bleach splashed in eye",
        "took 20 minutes to get here",
        "poison ivy rash on arms",
        "denies ingestion of antifreeze",
        "took the battery out of the smoke alarm",
    ],
    "B-sexual-assault": ["denies sexual assault", "hx of sexual abuse as a child", "rape seed oil"],
    "B-gi-bleed-unstable": [
        "BRBPR x1 d, hx hemorrhoids, on warfarin",
        _inp("blood in stool", heart_rate=88, systolic_bp=128),
        "melena, denies dizziness, no syncope",
        "dizzy x2 days, no blood in stool",
    ],
    "B-pe-suspected": [
        "chest wall pain after lifting, no leg swelling",
        "SOB, denies recent travel, no calf pain",
        "PE: lungs clear, SOB with cold",
        "R calf swollen after kick in soccer",
    ],
    "D-infant-hr": [_inp("fussy", age=0.1, heart_rate=175), _inp("fussy", age=0.5, heart_rate=190)],
    "D-infant-rr": [_inp("fussy", age=0.1, resp_rate=48)],
    "D-toddler-hr": [_inp("fever", age=1.0, heart_rate=150), _inp("fever", age=5.0, heart_rate=170)],
    "D-toddler-rr": [_inp("cough", age=2.0, resp_rate=38)],
    "D-child-hr": [_inp("vomiting", age=5.0, heart_rate=135)],
    "D-child-rr": [_inp("cough", age=5.0, resp_rate=28)],
    "D-adult-hr": ["HR 98", _inp("vomiting", age=5.0, heart_rate=120), "HR 88, denies palpitations"],
    "D-adult-rr": ["RR 18", _inp("cough", age=2.0, resp_rate=30)],
    "D-spo2": ["sats 92%", "baseline sats 88% on home O2"],
}


def test_every_rule_has_firing_and_quiet_examples() -> None:
    ids = set(RULES_BY_ID)
    assert ids == set(FIRES), f"rules without firing examples: {sorted(ids - set(FIRES))}"
    assert ids == set(QUIET), f"rules without quiet examples: {sorted(ids - set(QUIET))}"
    assert all(FIRES[i] and QUIET[i] for i in ids)


@pytest.mark.parametrize(("rule_id", "case"), [(rid, c) for r in RULES for rid in [r.id] for c in FIRES.get(rid, [])])
def test_rule_fires(rule_id: str, case: Case) -> None:
    assert rule_id in _fired(case)


@pytest.mark.parametrize(("rule_id", "case"), [(rid, c) for r in RULES for rid in [r.id] for c in QUIET.get(rid, [])])
def test_rule_keeps_quiet(rule_id: str, case: Case) -> None:
    assert rule_id not in _fired(case)


# --- the table --------------------------------------------------------------------------------------------


def test_table_levels_match_decision_points() -> None:
    counts = {p: sum(r.point == p for r in RULES) for p in "ABD"}
    assert all(counts.values())
    for rule in RULES:
        assert rule.level == (1 if rule.point == "A" else 2)
        assert rule.id.startswith(f"{rule.point}-")
        assert rule.source.startswith("ESI v4 handbook")


def test_rules_table_lists_every_rule() -> None:
    table = rules_table()
    assert all(f"| {r.id} |" in table for r in RULES)


# --- negation, history, scope -----------------------------------------------------------------------------

NEGATED_AND_AFFIRMED = [
    ("denies chest pain radiating to jaw", "chest pain radiating to jaw", "B-chest-pain-cardiac"),
    ("no LOC or confusion", "confusion since this morning", "B-confusion"),
    ("neg for SOB, sats 86% RA", "SOB, sats 86% RA", "A-hypoxia-distress"),
    ("h/o multiple seizures, none today", "multiple seizures today", "B-seizure-recent"),
    ("hx of CVA w residual weakness (baseline)", "new L sided weakness", "B-stroke"),
    ("family hx of MI, chest pain", "c/o chest pain, hx of MI", "B-chest-pain-cardiac"),
    ("MI ruled out, chest pain", "MI last year, chest pain", "B-chest-pain-cardiac"),
    ("denies SI/HI, no plan", "SI, has a plan", "B-si-hi-plan"),
    ("no trouble breathing, SpO2 86%", "trouble breathing, SpO2 86%", "A-hypoxia-distress"),
    ("Denies CP, SOB, N/V, abd pain, facial droop", "CP, facial droop", "B-stroke"),
    ("pt denies any slurred speech", "pt with slurred speech", "B-stroke"),
    ("no fever. stiff neck", "fever. stiff neck", "B-meningitis"),
    ("father had MI at 50, c/o chest pain", "had MI at 50, c/o chest pain", "B-chest-pain-cardiac"),
    ("SI: denies. HI: denies. plan to follow up", "SI with plan", "B-si-hi-plan"),
    ("lethargic at baseline per family", "lethargic today per family", "B-confusion"),
    ("without facial droop", "with facial droop", "B-stroke"),
    ("denis hematemesis", "hematemesis x2", "B-gi-bleed"),  # a misspelled cue still negates
    ("denesi facial droop", "facial droop", "B-stroke"),
    ("thunderclap HA resolved", "thunderclap HA", "B-thunderclap"),
    ("famly hx of MI, c/o chest pain", "hx of MI, c/o chest pain", "B-chest-pain-cardiac"),  # misspelled family cue
    ("denies SI, does not want to end it all, no plan", "wants to end it all, has a plan", "B-si-hi-plan"),
    ("hx of passing out 10 years ago, 80 y/o", "passed out today, 80 y/o", "B-syncope-elderly"),
]


@pytest.mark.parametrize(("negated", "affirmed", "rule_id"), NEGATED_AND_AFFIRMED)
def test_negation_and_history_cancel_a_finding(negated: str, affirmed: str, rule_id: str) -> None:
    assert rule_id not in _fired(negated)
    assert rule_id in _fired(affirmed)


@pytest.mark.parametrize(
    ("note", "rule_id"),
    [
        ("no LOC, worst headache of life", "B-thunderclap"),  # a new statement after the comma
        ("denies CP but now SOB, sats 86%", "A-hypoxia-distress"),  # "but" ends the negation
        ("h/o CVA, new L sided weakness", "B-stroke"),
        ("hx seizures, seizing in triage", "A-seizure-active"),
        ("no fever, tachypneic and retracting", "B-resp-distress"),
        ("denies chest pain. now c/o chest pressure", "B-chest-pain-cardiac"),
        ("hx HTN, DM, CAD, presents with chest pain", "B-chest-pain-cardiac"),  # cardiac history counts
        ("no known allergies, stung by bee with stridor", "A-anaphylaxis"),
        ("not sure if he hit his head, on warfarin", "B-head-strike-anticoag"),  # "not sure" is no negation
        ("no improvement, worst HA of life", "B-thunderclap"),
        ("pt not breathing, no pulse", "A-arrest"),  # a negative finding is still a finding
        ("not breathing well, no pulse, CPR in progress", "A-arrest"),  # a new negation opens its own scope
        ("hit head, denies recent travel, PMH: HTN, HLD, takes apixaban", "B-head-strike-anticoag"),  # next cue
        ("took tylenol w/o relief, doubled over, pain 9/10", "B-severe-pain-distress"),  # "w/o relief" is no negation
        ("back to baseline; VS pulse 116", "D-adult-hr"),  # a baseline cue stays in its clause
        ("sz activity x30+ min, no return to baseline between sz", "A-seizure-active"),
        ("LMP 8 wks ago, vaginal bleeding", "B-pregnancy-pain-bleeding"),
        ("one side of her face is drooping", "B-stroke"),
        ("R testicle swollen", "B-torsion"),
        ('"my asthma is bad, the pump not help", wheezing, sats 88%', "A-hypoxia-distress"),  # a quote is a clause
        ("vomited a large amount of bright red blood", "B-gi-bleed"),
        # an adjective history cue qualifies the words after it, not the next item of a list
        ("ate a cookie w/ peanuts, known peanut allergic, lips and tongue swelling fast", "A-anaphylaxis"),
        ("known afib, new facial droop", "B-stroke"),
    ],
)
def test_scope_ends_where_it_should(note: str, rule_id: str) -> None:
    assert rule_id in _fired(note)


def test_misspellings_and_shorthand() -> None:
    assert "A-seizure-active" in _fired("siezing on arrival")
    assert "B-seizure-recent" in _fired("first time sezure")
    assert "B-hyperglycemia-symptomatic" in _fired("BG 600, vomitting")
    assert "A-unresponsive" in _fired("unresp")
    assert "B-confusion" in _fired("ALOC")
    assert "B-si-hi-plan" in _fired("+SI w plan")
    assert "B-stroke" in _fired("LKW 2200")
    assert "B-si-hi-plan" in _fired("sucidal with plan to jump")
    assert "B-thunderclap" in _fired("worst headach of my life")
    assert "A-unresponsive" in _fired("unresponsve in triage chair")


@pytest.mark.parametrize(
    ("note", "rule_id"),
    [
        ("wife says he cant breathe, lips blueish", "A-resp-severe"),
        ("4yo turning blue per dad", "A-resp-severe"),
        ("mom says baby wont wake up", "A-unresponsive"),
        ("can't wake him up", "A-unresponsive"),
        ("hasn't woken up since the fall", "A-unresponsive"),
        ("friend says he is barely breathing", "A-apnea"),
        ("shaking all over and not stopping, still jerking", "A-seizure-active"),
        ("ate cookie w/ peanuts, tongue swelling", "A-anaphylaxis"),
        ("chest hurts like someone sitting on it", "B-chest-pain-cardiac"),
        ("face feels numb on one side", "B-stroke"),
        ("his face is falling on one side", "B-stroke"),
        ("heavy feeling in her chest that goes into her jaw", "B-chest-pain-cardiac"),
        ("77F chest tightness at rest, nauseous", "B-chest-pain-cardiac"),
        ("G2P1 @ 32 wks, headache, BP 172/104", "B-pregnancy-severe-hypertension"),
        ("33 wees pregnant, BP 165/100", "B-pregnancy-severe-hypertension"),
        ("3 seizures back to back without waking up in between", "A-seizure-active"),
        ("still having shakinng of all extremities on arrival", "A-seizure-active"),
        ("large hematemesis, near syncope", "A-massive-bleeding"),
        ("'I don't want to be here anymore, I was going to jump'", "B-si-hi-plan"),
        ("HA x1 d, appears uncomfortable, pain 9/10", "B-severe-pain-distress"),
        ("my words come out wrong", "B-stroke"),
        ("can't lift her R arm since 0900", "B-stroke"),
        ("grandpa not making any sense", "B-confusion"),
        ("just not herself, much more sleepy than usual", "B-confusion"),
        ("keeps falling asleep mid sentence", "B-confusion"),
        ("baby went limp", "B-confusion"),
        ("ribs sucking in with each breath", "B-resp-distress"),
        ("can only say a few words", "B-resp-distress"),
        ("wants to end it all, saving up her pills", "B-si-hi-plan"),
        ("'i dont want to be alive anymore', would jump off the bridge", "B-si-hi-plan"),
        ("fever 39, neck very stiff", "B-meningitis"),
        ("febrile, rash that doesnt go away when pressed", "B-meningitis"),
    ],
)
def test_lay_phrasing(note: str, rule_id: str) -> None:
    assert rule_id in _fired(note)


@pytest.mark.parametrize(
    ("note", "rule_id"),
    [
        ("i cant breathe through my nose since my cold", "A-hypoxia-distress"),
        ("walking with a limp", "B-confusion"),
        ("baby doesn't wake up at night to feed", "A-unresponsive"),
        ("didn't wake up until noon, hungover", "A-unresponsive"),
        ("twisted ankle, blue toes from nail polish", "A-resp-severe"),
        ("fingers turning blue in the cold", "A-resp-severe"),
        ("G2P1, LMP 2 wks ago, BP 170/100", "B-pregnancy-severe-hypertension"),
        ("infant seen @ 6 wks ago for cough, BP 170/100", "B-pregnancy-severe-hypertension"),
        ("chest pain reproducible on palpation, no nausea", "B-chest-pain-cardiac"),
        ("seizure at home, back to baseline, still shaky from low sugar", "A-seizure-active"),
        ("small streak of blood in emesis after retching", "A-massive-bleeding"),
        ("ankle pain 8/10, resting comfortably", "B-severe-pain-distress"),
        ("'my chest is congested', cough x4 days", "B-chest-pain-cardiac"),
        ("wasp sting, local swelling, no trouble breathing", "A-anaphylaxis"),
    ],
)
def test_lay_phrasing_near_misses(note: str, rule_id: str) -> None:
    assert rule_id not in _fired(note)


# --- evidence and spans -----------------------------------------------------------------------------------


def test_phrase_rule_reports_its_span_in_the_note() -> None:
    note = "67M c/o crushing chest pain since 0700, diaphoretic"
    fired = {f.rule_id: f for f in assess(TriageInput(note=note)).fired}
    cp = fired["B-chest-pain-cardiac"]
    assert cp.span is not None
    assert note[cp.span[0] : cp.span[1]] == "chest pain"
    assert cp.decision_point == "B" and cp.level == 2
    assert [e.text for e in cp.evidence] == ["chest pain", "crushing"]


def test_structured_vital_rule_has_no_span_but_key_and_value() -> None:
    fired = {f.rule_id: f for f in assess(_inp("abd pain", age=40.0, heart_rate=130)).fired}
    hr = fired["D-adult-hr"]
    assert hr.span is None
    assert (hr.vital_key, hr.vital_value) == ("heart_rate", 130)
    assert hr.evidence[0].vital_source == "structured"


def test_note_vital_rule_points_at_the_vital_in_the_note() -> None:
    note = "abd pain, HR 124, afebrile"
    a = assess(TriageInput(note=note))
    hr = {f.rule_id: f for f in a.fired}["D-adult-hr"]
    assert hr.span is not None and note[hr.span[0] : hr.span[1]] == "HR 124"
    assert (hr.vital_key, hr.vital_value) == ("heart_rate", 124)
    flags = [f for f in a.vitals_out_of_range if f.key == "heart_rate"]
    assert [(f.value, f.comparison, f.threshold, f.source, f.span) for f in flags] == [(124, ">", 100, "note", hr.span)]


def test_vitals_out_of_range_lists_values_past_a_threshold_even_without_a_fired_rule() -> None:
    a = assess(_inp("weak", age=40.0, systolic_bp=85, heart_rate=80))
    assert "A-shock" not in a.fired_ids
    assert any(f.key == "systolic_bp" and f.threshold == 90 and f.source == "structured" for f in a.vitals_out_of_range)


def test_implausible_structured_values_are_ignored_and_reported() -> None:
    a = assess(_inp("ankle pain", spo2=0.0, heart_rate=80))
    assert a.required_level is None
    assert a.ignored_vitals == ("spo2",)


def test_fahrenheit_in_the_celsius_field_is_converted() -> None:
    assert "B-neonate-fever" in assess(_inp("fussy", age=10 * DAY, temperature_c=101.0)).fired_ids


def test_structured_age_wins_over_the_note() -> None:
    a = assess(_inp("82yo with HR 170", age=1.0))
    assert a.age_source == "structured"
    assert "D-toddler-hr" in a.fired_ids and "D-adult-hr" not in a.fired_ids


def test_unknown_age_uses_adult_limits() -> None:
    a = assess(TriageInput(note="HR 130"))
    assert a.age_years is None and a.fired_ids == ("D-adult-hr",)


# --- vitals and age written in the note -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("note", "key", "value"),
    [
        ("HR 112", "heart_rate", 112),
        ("HR112", "heart_rate", 112),
        ("heart rate of 150 bpm", "heart_rate", 150),
        ("tachycardic to 140s", "heart_rate", 140),
        ("BP 130/80 P 88 R 18 T 98.6", "heart_rate", 88),
        ("BP 130/80 P 88 R 18 T 98.6", "resp_rate", 18),
        ("BP 132/65 mmHg R 24 SaO2 94%", "resp_rate", 24),
        ("T 36.4 C, R 38, HR 76", "resp_rate", 38),
        ("sats 86% RA", "spo2", 86),
        ("SpO2 91", "spo2", 91),
        ("satting 88% on 2L", "spo2", 88),
        ("O2 sat 79%", "spo2", 79),
        ("pulse ox 85%", "spo2", 85),
        ("86% on room air", "spo2", 86),
        ("RR 28", "resp_rate", 28),
        ("resp 8 and shallow", "resp_rate", 8),
        ("T 38.6", "temperature_c", 38.6),
        ("Tmax 39.4C", "temperature_c", 39.4),
        ("temp 101.2F", "temperature_c", 38.44),
        ("fever to 102 at home", "temperature_c", 38.89),
        ("100.4 °F", "temperature_c", 38.0),
        ("T 98.6", "temperature_c", 37.0),
        ("BP 70/palp", "systolic_bp", 70),
        ("BP 88/50", "systolic_bp", 88),
        ("BP 88/50", "diastolic_bp", 50),
        ("hypotensive to 80s", "systolic_bp", 80),
        ("SBP 78", "systolic_bp", 78),
        ("pain 8/10", "pain", 8),
        ("rates pain 10/10", "pain", 10),
        ("GCS 14", "gcs", 14),
        ("GCS E2V2M4", "gcs", 8),
        ("FSBS 42", "glucose", 42),
        ("BG 3.0", "glucose", 54),
        ("glucometer reads HI", "glucose", 600),
    ],
)
def test_note_vitals_are_read(note: str, key: str, value: float) -> None:
    values = [v.value for v in parse_note_vitals(note) if v.key == key]
    assert value in values or pytest.approx(value, abs=0.01) in values


@pytest.mark.parametrize(
    "note",
    ["R 4 cm lac", "T12 fx", "pain x 3 days", "pain 10 days", "3/10/2024", "40F c/o", "92F with fall", "14F foley"]
    + ["pulse 2+ bilat", "fever 3 days", "O2 2L NC"],
)
def test_text_that_is_not_a_vital_is_not_read_as_one(note: str) -> None:
    assert parse_note_vitals(note) == []


def test_fahrenheit_is_converted_to_celsius() -> None:
    (temp,) = parse_note_vitals("temp 101.2F")
    assert temp.key == "temperature_c" and temp.value == pytest.approx((101.2 - 32) * 5 / 9, abs=0.01)
    (unlabelled,) = parse_note_vitals("T 103")  # no unit: a value over 86 is Fahrenheit
    assert unlabelled.value == pytest.approx(39.44, abs=0.01)


def test_baseline_vitals_are_read_but_not_used() -> None:
    (spo2,) = parse_note_vitals("sats 88% (baseline)")
    assert spo2.history
    assert assess(TriageInput(note="COPD, sats 88% (baseline)")).required_level is None
    (hr,) = parse_note_vitals("HR 120 (baseline 80)")
    assert not hr.history


def test_ranges_keep_both_ends() -> None:
    assert [v.value for v in parse_note_vitals("satting 88-93%")] == [88, 93]


@pytest.mark.parametrize(
    ("note", "years"),
    [
        ("10 day old with fever", 10 * DAY),
        ("10do male", 10 * DAY),
        ("3 wk old", 21 * DAY),
        ("82yo M", 82),
        ("82 y/o F", 82),
        ("3yo", 3),
        ("6 mo with cough", 0.5),
        ("6 mo old", 0.5),
        ("4 m/o", 4 / 12),
        ("2-year-old", 2),
        ("15 y.o.", 15),
        ("67M c/o CP", 67),
        ("pt is a 45 yo", 45),
        ("Pt is a 5y male", 5),
        ("66 yr F, fell", 66),
        ("age 12d", 12 * DAY),
        ("age 4mo", 4 / 12),
        ("newborn w fever", 0),
    ],
)
def test_age_is_read_from_the_note(note: str, years: float) -> None:
    parsed = parse_note_age(note)
    assert parsed is not None and parsed[0] == pytest.approx(years)


@pytest.mark.parametrize(
    "note",
    ["cough x 6 mo", "symptoms for 2 months", "6 months pregnant", "3 weeks ago", "fever x 3 days", "smoker x 20 yrs"],
)
def test_durations_are_not_ages(note: str) -> None:
    assert parse_note_age(note) is None


# --- apply: the net only ever raises acuity ----------------------------------------------------------------


def test_apply_raises_to_the_required_level() -> None:
    a = assess(TriageInput(note="pt not breathing"))
    assert apply(4, a) == (1, True)
    assert apply(1, a) == (1, False)


def test_apply_keeps_a_more_acute_model_level() -> None:
    a = assess(TriageInput(note="HR 112"))
    assert a.required_level == 2
    assert apply(1, a) == (1, False)
    assert apply(2, a) == (2, False)
    assert apply(5, a) == (2, True)


def test_apply_without_fired_rules_changes_nothing() -> None:
    a = assess(TriageInput(note="sore throat x2 days, tolerating PO, VSS"))
    assert a.fired == () and a.required_level is None
    assert [apply(level, a) for level in range(1, 6)] == [(level, False) for level in range(1, 6)]


@pytest.mark.parametrize("level", [0, 6, -1])
def test_apply_refuses_levels_outside_esi(level: int) -> None:
    with pytest.raises(ValueError):
        apply(level, assess(TriageInput(note="")))


_FRAGMENTS = sorted(
    {c for cases in (*FIRES.values(), *QUIET.values()) for c in cases if isinstance(c, str)}
    | {"no", "denies", "h/o", "hx", "but", ",", ".", "|", "family hx of", "(baseline)", "ruled out", "now", "c/o"}
)
_notes = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map(" ".join),
)
_vitals = st.dictionaries(
    st.sampled_from(VITAL_KEYS), st.floats(min_value=-50, max_value=400, allow_nan=False, allow_infinity=False)
)
_ages = st.one_of(st.none(), st.floats(min_value=0, max_value=129.9, allow_nan=False))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(note=_notes, age=_ages, vitals=_vitals, level=st.integers(min_value=1, max_value=5))
def test_the_net_never_lowers_acuity(note: str, age: float | None, vitals: dict[str, float], level: int) -> None:
    a: SafetyAssessment = assess(TriageInput(note=note, age_years=age, vitals=dict(vitals)))
    final, changed = apply(level, a)
    assert final <= level
    assert changed == (final != level)
    assert a.required_level in (None, 1, 2)
    if a.required_level is not None:
        assert final == min(level, a.required_level)
    for fired in a.fired:
        if fired.span is not None:
            assert 0 <= fired.span[0] < fired.span[1] <= len(note)


# --- speed --------------------------------------------------------------------------------------------------


# --- the prefilter only skips patterns that cannot match ----------------------------------------------------


def _ungated(inp: TriageInput) -> SafetyAssessment:
    original = triage_safety._candidates
    triage_safety._candidates = lambda index, gate: None
    try:
        return assess(inp)
    finally:
        triage_safety._candidates = original


def test_every_phrase_of_the_table_has_a_gate_or_runs_always() -> None:
    phrases = [c for r in RULES for c in r.when if isinstance(c, Phrase)]
    assert phrases and sum(p.gate is not None for p in phrases) >= len(phrases) * 3 // 4


@pytest.mark.parametrize("case", [c for cases in (*FIRES.values(), *QUIET.values()) for c in cases])
def test_gated_and_ungated_assessments_agree(case: Case) -> None:
    inp = _as_input(case)
    assert assess(inp) == _ungated(inp)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(note=st.one_of(_notes, st.text(alphabet=st.characters(max_codepoint=127), max_size=200)))
def test_gated_and_ungated_agree_on_any_note(note: str) -> None:
    inp = TriageInput(note=note)
    assert assess(inp) == _ungated(inp)


def test_the_published_rules_table_matches_the_rules() -> None:
    from pathlib import Path

    from engine.triage_safety import rules_table

    page = (Path(__file__).resolve().parent.parent / "docs" / "triage-safety-rules.md").read_text(encoding="utf-8")
    assert page.split("\n---\n\n", 1)[1].strip() == rules_table().strip(), (
        "docs/triage-safety-rules.md drifted from engine/triage_safety.py: regenerate its table"
    )
