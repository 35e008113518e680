"""Clinical safety net for triage: rules that can only RAISE acuity after the model has spoken.

The model's ESI level is final unless a rule below finds a reason the patient cannot wait; then
`apply` returns min(model level, required level), never a higher number. The rules follow the ESI v4
decision points:

- A: needs an immediate life-saving intervention -> ESI 1;
- B: high-risk situation, new confusion/lethargy, severe pain with distress -> at least ESI 2;
- D: danger-zone vitals for the patient's age -> at least ESI 2 (the handbook applies D to patients
  headed for ESI 3; the net cannot count resources, so it raises any 3/4/5 to 2).

`RULES` is the one table a clinician reviews: each rule has an id, the level it sets at least, its
decision point, its conditions (all must hold; `AnyOf` is an "or") and the handbook section it comes
from. A condition is a `Phrase` (readable regex fragments, matched in the note with negation and history
handling), a `Vital` threshold (structured field or a vital written in the note), and a rule may be
limited to an `AgeBand`.

Negation and history use a clause scope, NegEx-style: a cue ("no", "denies", "neg for", "h/o", "hx",
"PMH", "family hx", ...) before a finding in the same clause puts it out of play, unless a clause break
(". ; | but however now c/o ...") or a comma starting a new statement ("no LOC, worst headache of
life") comes between them; a short cue after it ("MI ruled out", "SI/HI denied", "(baseline)", "none
today") does the same. Conditions that ARE history (cardiac history with chest pain, anticoagulants,
chemotherapy) are marked `history_ok` and only negation and family-history cues apply to them.
"s/p" is not a history cue: triage notes use it for today's events ("s/p fall, hit head").

The table is designed and checked on a development set only (synthetic seeds and hand-written notes kept
for that purpose, `training/triage_dev.py`), never on the evaluation sets.

Everything is compiled at import. `assess` indexes the note's words once and tries each pattern only at
the words its matches can start with (see "Prefilter"): about 0.1-0.3 ms for a typical note.
"""

from __future__ import annotations

import bisect
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from engine.triage_input import TriageInput

DecisionPoint = Literal["A", "B", "D"]
Comparison = Literal["<", "<=", ">", ">="]
VitalSource = Literal["structured", "note"]
Span = tuple[int, int]

_DAYS_PER_YEAR = 365.25
ESI_LEVELS = (1, 2, 3, 4, 5)

SOURCE_A = "ESI v4 handbook, ch. 3 (ESI level 1), decision point A"
SOURCE_B = "ESI v4 handbook, ch. 4 (ESI level 2), decision point B"
SOURCE_D = "ESI v4 handbook, ch. 6 (vital signs), decision point D"
SOURCE_PEDS_FEVER = "ESI v4 handbook, ch. 7 (pediatric triage: fever 1-28 days), decision points B/D"
SOURCE_PEDS_HYPOTENSION = (
    "ESI v4 handbook, ch. 3 (ESI level 1: hypotension with hypoperfusion), decision point A; "
    "age limits of PALS (SBP < 60 at 0-28 days, < 70 to 1 year, < 70 + 2 x age in years to 10 years)"
)

# ---------------------------------------------------------------------------------------------------
# Building blocks of the table
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Prefilter: a pattern runs only if the note has a word its match could start with
# ---------------------------------------------------------------------------------------------------
# Python's re tries every alternative at every word start, so a note costs (alternatives x words).
# At import each pattern's possible match starts are reduced to lowercase word prefixes of at most
# _GATE_CHARS characters ("fac", "slu", "cva", ...); `assess` tries a pattern only at the words of the
# note that start with one of them, and skips it when there are none. The prefixes are read from the
# compiled pattern, so the gate never drifts from the regex; a construct the reader does not know ends
# the prefix where it is (a shorter prefix still admits every true match), and a pattern that can start
# anywhere is not gated at all.

_GATE_CHARS = 3
_GATE_MAX = 4000
_Prefixes = set[tuple[str, bool]]  # (prefix, closed): closed prefixes cannot grow any more


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _seq_prefixes(items: list[tuple[object, object]], start: str) -> _Prefixes:
    """Prefixes of the text matched by `items`, continuing `start`."""
    if len(start) >= _GATE_CHARS or not items:
        return {(start, len(start) >= _GATE_CHARS)}
    (op, arg), rest = items[0], items[1:]
    name = str(op)
    out: _Prefixes = set()

    def extend(heads: Iterable[str], then: list[tuple[object, object]] | None) -> None:
        for head in heads:
            if head == "" or not _is_word_char(head):
                out.add((start, True))  # the word ends here
            elif then is None:
                out.add((start + head, True))
            else:
                out.update(_seq_prefixes(then, start + head))

    if name in ("ASSERT", "ASSERT_NOT", "AT"):  # zero-width
        return _seq_prefixes(rest, start)
    if name == "LITERAL":
        assert isinstance(arg, int)
        extend([chr(arg).lower()], rest)
    elif name == "IN":
        assert isinstance(arg, list)
        chars: list[str] = []
        for set_op, set_arg in arg:
            set_name = str(set_op)
            if set_name == "LITERAL":
                chars.append(chr(set_arg).lower())
            elif set_name == "RANGE" and set_arg[1] - set_arg[0] < 40:
                chars.extend(chr(c).lower() for c in range(set_arg[0], set_arg[1] + 1))
            elif set_name == "CATEGORY" and str(set_arg) == "CATEGORY_DIGIT":
                chars.extend("0123456789")
            else:
                return {(start, True)}
        extend(sorted(set(chars)), rest)
    elif name == "BRANCH":
        assert isinstance(arg, tuple)
        for alternative in arg[1]:
            out.update(_seq_prefixes([*alternative.data, *rest], start))
    elif name == "SUBPATTERN":
        assert isinstance(arg, tuple)
        out.update(_seq_prefixes([*arg[3].data, *rest], start))
    elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        assert isinstance(arg, tuple)
        low, high, body = arg
        if low == 0:
            out.update(_seq_prefixes(rest, start))
        once = [*body.data, *rest] if low == high == 1 else list(body.data)
        taken = _seq_prefixes(once, start)
        out.update(taken if low == high == 1 else {(p, True) for p, _ in taken})
    else:
        return {(start, True)}
    if len(out) > _GATE_MAX:
        return {(start, True)}
    return out


def _gate(regex: re.Pattern[str]) -> frozenset[str] | None:
    """The word prefixes every match of `regex` starts with; None when it cannot be gated."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(regex.pattern, regex.flags)
        prefixes = _seq_prefixes(list(parsed.data), "")
    except Exception:  # a private module of the standard library: without it, nothing is gated
        return None
    if any(p == "" for p, _ in prefixes) or len(prefixes) > _GATE_MAX:
        return None
    return frozenset(p for p, _ in prefixes)


_WORD = re.compile(r"\w+")


class _WordIndex:
    """Word-start positions of a note by lowercase prefix (1 to _GATE_CHARS characters)."""

    __slots__ = ("keys", "positions")

    def __init__(self, text: str) -> None:
        # Outside ASCII, re's case-insensitive matching and str.lower can disagree: such notes scan in full.
        self.positions: dict[str, list[int]] | None = None
        self.keys: frozenset[str] = frozenset()
        if text.isascii():  # then lower() keeps every offset
            positions: dict[str, list[int]] = {}
            add = positions.setdefault
            for m in _WORD.finditer(text.lower()):
                word, start = m.group(), m.start()
                add(word[:1], []).append(start)
                if len(word) > 1:
                    add(word[:2], []).append(start)
                    if len(word) > 2:
                        add(word[:3], []).append(start)
            self.positions = positions
            self.keys = frozenset(positions)


def _candidates(index: _WordIndex, gate: frozenset[str] | None) -> list[int] | None:
    """Where a gated pattern can start, in order; None: scan the whole note."""
    if gate is None or index.positions is None:
        return None
    hits = gate & index.keys
    if len(hits) <= 1:
        return index.positions[next(iter(hits))] if hits else []
    found: set[int] = set()
    for prefix in hits:
        found.update(index.positions[prefix])
    return sorted(found)


def _matches(
    regex: re.Pattern[str], gate: frozenset[str] | None, text: str, index: _WordIndex
) -> Iterator[re.Match[str]]:
    """regex.finditer(text), trying only the word starts the gate admits (same matches, same order)."""
    positions = _candidates(index, gate)
    if positions is None:
        yield from regex.finditer(text)
        return
    end = 0
    for pos in positions:
        if pos < end:  # inside the previous match, where finditer does not look either
            continue
        m = regex.match(text, pos)
        if m is not None:
            end = m.end()
            yield m


@dataclass(frozen=True)
class AgeBand:
    """Ages a rule applies to: min_years <= age < max_years; `unknown` says whether it applies without an age."""

    label: str
    min_years: float = 0.0
    max_years: float = 200.0
    unknown: bool = True

    def contains(self, age_years: float | None) -> bool:
        if age_years is None:
            return self.unknown
        return self.min_years <= age_years < self.max_years


ANY_AGE = AgeBand("any age")
NEONATE = AgeBand("0-28 days", 0.0, 29 / _DAYS_PER_YEAR, unknown=False)
INFANT = AgeBand("under 3 months", 0.0, 0.25, unknown=False)
TODDLER = AgeBand("3 months-3 years", 0.25, 3.0, unknown=False)
CHILD = AgeBand("3-8 years", 3.0, 8.0, unknown=False)
# Adult vital limits apply from 8 years; with no age at all the net assumes an adult (most ED patients).
ADULT = AgeBand("8 years and over, or age unknown", 8.0, 200.0, unknown=True)
# Hypotension limits (PALS): the band's youngest age sets the limit, so no child is called hypotensive early.
INFANT_1Y = AgeBand("29 days-1 year", 29 / _DAYS_PER_YEAR, 1.0, unknown=False)
TODDLER_1_3 = AgeBand("1-3 years", 1.0, 3.0, unknown=False)


@dataclass(frozen=True)
class Phrase:
    """A finding in the note: alternatives (small regexes, case-insensitive; `(?-i:...)` for exact-case
    abbreviations) matched as whole words. `history_ok`: the condition is history itself (a med, a
    diagnosis), so "hx"/"PMH" cues do not cancel it; negation and family history still do."""

    label: str
    terms: tuple[str, ...]
    history_ok: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False, hash=False)
    gate: frozenset[str] | None = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        body = "|".join(self.terms)
        regex = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)
        object.__setattr__(self, "regex", regex)
        object.__setattr__(self, "gate", _gate(regex))

    def describe(self) -> str:
        return f"note mentions {self.label}{' (history counts)' if self.history_ok else ''}"


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Vital:
    """A vital-sign threshold, from the structured field or from a value written in the note.

    Keys are TriageInput vital keys plus two read only from the note: "gcs" and "glucose" (mg/dL)."""

    key: str
    op: Comparison
    threshold: float

    def holds(self, value: float) -> bool:
        return _COMPARE[self.op](value, self.threshold)

    def describe(self) -> str:
        return f"{self.key} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class AnyOf:
    """At least one of the options holds."""

    options: tuple[Phrase | Vital, ...]

    def describe(self) -> str:
        return "(" + " OR ".join(o.describe() for o in self.options) + ")"


Condition = Phrase | Vital | AnyOf


@dataclass(frozen=True)
class Rule:
    """One safety rule: when every condition holds (and the age is in `ages`), ESI is at most `level`."""

    id: str
    level: int
    point: DecisionPoint
    when: tuple[Condition, ...]
    source: str
    ages: AgeBand = ANY_AGE
    summary: str = ""

    def describe(self) -> str:
        return " AND ".join(c.describe() for c in self.when)


# ---------------------------------------------------------------------------------------------------
# Findings (phrases). Shorthand and common misspellings are part of the terms.
# ---------------------------------------------------------------------------------------------------

_SEIZ = r"(?:s(?:ei|ie|ee|e|i)z(?:ure|uer|ur|re)s?|(?-i:sz|Sz|SZ)s?)"  # seizure, siezure, sezure, sz
_SEIZING = r"s(?:ei|ie|ee|e|i)ze?ing"  # seizing, siezing, seizeing
_POSS = r"(?:(?:the|his|her|their|my|pt'?s|a) )?"
_SIDE = r"(?:left|right|L|R|lt|rt)"
_LIMB = r"(?:arm|leg|face|upper extremity|lower extremity|UE|LE|side|body)"
_MED_WORDS = r"(?:meds?|medications?|control|management|relief|killers?|pills?|regimen|clinic|contract)"
_STIMULUS = r"(?:verbal|voice|name|pain\w*|stimul\w*|sternal|touch|commands?|noxious|questions)"

APNEA = Phrase(
    "apnea or agonal breathing",
    (
        r"(?<!sleep )(?<!obstructive )(?<!central )(?<!for )apno?e(?:a|ic)",
        r"(?:not|isn'?t|wasn'?t|stopped|stops|stop) breath?ing(?! (?:well|right|normally|hard|fast|heavy|heavily|"
        r"as well|properly|through|easily|comfortably))",
        r"no (?:spontaneous )?(?:respirations?|resp(?:iratory)? effort|breathing"
        r"(?! (?:difficult\w*|problems?|troubles?|issues?|changes?|complaints?)))",
        r"agonal(?: breath\w*| resp\w*| gasp\w*)?",
        r"resp(?:iratory)? arrest",
        r"barely breathing(?! (?:through|thru|out of|from|with|when|at night|on exertion))",
    ),
)
ARREST = Phrase(
    "cardiac arrest, pulseless, CPR",
    (
        r"(?:cardiac|cardiopulmonary|cardio-?respiratory) arrest",
        r"arrest(?:ed)? (?:in|at|on) (?:the )?(?:field|scene|route|home)",
        r"pulseless(?!\s+(?:extremit\w*|limb|foot|feet|leg|arm|hand|distal\w*|lower|upper|left|right|[LR]|pedal)\b)",
        r"no (?:palpable |central |carotid |femoral )?pulses?(?!\s+(?:(?:in|to|on|at|of) (?:the |his |her )?"
        r"(?:L|R|left|right|lt|rt|affected|injured|foot|feet|leg|arm|hand|extremit\w*|limb|wrist|ankle|toes?|fingers?)"
        r"|distal\w*|ox\w*)\b)",
        r"(?-i:CPR)",
        r"chest compressions?",
        r"(?-i:ROSC)",
        r"return of spontaneous circulation",
        r"code blue",
        r"asystol\w*",
        r"v-? ?fib\w*",
        r"(?-i:VF)",
        r"ventricular fibrillation",
        r"pulseless v-? ?tach\w*",
        r"(?-i:PEA)",
        r"pulseless electrical activity",
        r"defibrillat(?:ed|ion)",
        r"shocked (?:by|with) (?:an )?(?:AED|EMS|defib\w*)",
    ),
)
AIRWAY = Phrase(
    "airway or ventilation support (intubated, BVM, airway compromise)",
    (
        r"intubat\w*",
        r"(?-i:ETT|ET tube)",
        r"endotracheal tube",
        r"(?-i:BVM)",
        r"bag[- ]valve[- ]mask",
        r"bagg(?:ed|ing)",
        r"(?-i:LMA)",
        r"king airway",
        r"i-?gel",
        r"(?:surgical|failed|difficult) airway",
        r"airway (?:compromis\w*|obstruct\w*|not (?:patent|protected)|threatened)",
        r"(?:can'?t|cannot|unable to) (?:protect|maintain) (?:(?:his|her|their|own) )?airway",
        r"(?:impending )?(?:resp|respiratory) failure",
    ),
)
UNRESPONSIVE = Phrase(
    "unresponsive or responds only to pain",
    (
        r"unresp\w*",
        r"un-responsive",
        r"non-?responsive",
        r"not responsive",
        rf"(?:not responding|no response|does(?: not|n'?t) respond|did(?: not|n'?t) respond|not reacting)"
        rf"(?!\s+to\s+(?!{_STIMULUS}\b)\w)",
        rf"(?:only )?(?:responds?|responsive|reacts?|responding|withdraws|localizes|moans|grimaces|opens eyes) "
        rf"(?:only )?to (?:pain(?:ful)?|sternal rub|noxious)(?! {_MED_WORDS}\b)(?: stimul\w*)?(?: only)?",
        r"AVPU\s*(?:[:=]|of|is)?\s*(?-i:[PU])",
        r"obtunded",
        r"comatose",
        r"(?<!glasgow )coma(?! scale)",
        r"(?:un|non)-?arousable",
        r"un-?rousable",
        r"not arousable",
        r"(?:unable to|can'?t|cannot|could not|couldn'?t) (?:be )?(?:arouse|rouse|wake|awaken|aroused|roused|woken)d?"
        r"(?: (?:him|her|them|the baby|baby|pt|patient))?(?: up)?",
        # lay phrasing: "won't wake up", "hasn't woken up since"
        r"(?:won'?t|wont|will not|doesn'?t|does not|didn'?t|did not|isn'?t|is not|hasn'?t|has not|not) "
        r"(?:wake|waking|woken|awake|awaken\w*)(?! (?:up )?(?:at night|during the night|overnight|"
        r"for (?:feeds|feedings)|to (?:feed|eat|pee)|early|easily|on time|until|till|til|when|if)\b)(?: up)?",
    ),
)
RESP_SEVERE = Phrase(
    "severe respiratory distress (tripoding, accessory muscles, 1-2 word sentences, cyanosis)",
    (
        r"severe(?:ly)? (?:resp\w*|breathing) distress",
        r"tripod\w*",
        r"accessory (?:muscle|mm)\w*(?: use)?",
        r"(?:one|two|1|2|1-2|one to two|one-two|1 to 2|single)[- ]word (?:sentences|phrases|answers|responses|dyspnea)",
        r"speaking in (?:single|one|two|1|2|1-2) words?",
        r"(?:unable to|can'?t|cannot) (?:speak|talk) (?:due to|d/t|because of|from|with) (?:the )?"
        r"(?:SOB|dyspnea|shortness|breath\w*)",
        r"cyano\w*",
        r"dusky",
        r"blue(?:ish)? (?:lips|around the (?:lips|mouth))",
        r"(?:lips|face) (?:are |is |look |looks |turning |turned |going |gone )?(?:blue|bluish|blueish|purple|gr[ae]y)",
        r"(?<!fingers )(?<!toes )(?<!hands )(?<!feet )(?<!nails )(?<!tips )"
        r"(?:turning|turned|went|going|gone) (?:blue|purple|gr[ae]y)(?! (?:toes|fingers|nails|hands?|feet|foot))",
        r"gasp(?:ing|s)",
        r"grunting",
        r"head bobbing",
        r"silent chest",
        r"minimal air (?:movement|entry)",
    ),
)
RESP_DISTRESS = Phrase(
    "respiratory distress (labored breathing, retractions, stridor, short sentences)",
    (
        r"(?:resp|respiratory|breathing) distress",
        r"labou?red (?:breath\w*|resp\w*)",
        r"increased (?:work of breathing|WOB)",
        r"(?-i:WOB)",
        r"retract\w*",
        r"nasal flaring",
        r"(?:unable to|can'?t|cannot) (?:speak|complete|finish|talk) (?:in )?(?:full|complete|whole) sentences",
        r"(?:short|broken|partial) (?:sentences|phrases)",
        r"(?:can|able to) (?:only|barely) (?:say|speak|talk)(?: in)? (?:a )?(?:few|couple|one|two|1|2|3|single) words?",
        r"(?:can'?t|cannot|unable to) (?:finish|complete|get through|get out) (?:a |his |her |my |their )?sentences?",
        r"(?:ribs|skin|chest|belly|tummy|stomach) (?:is )?(?:sucking|pulling|sinking|caving) in",
        r"sucking in (?:at|between|under|below) (?:the |his |her |their )?ribs",
        r"using (?:his |her |their |my )?(?:neck|stomach|belly|tummy|chest) muscles to breathe?",
        r"stridor\w*",
        r"(?:poor|diminished|decreased) air (?:movement|entry)",
        r"hypox(?:ic|ia|emi\w*)",
    ),
)
DYSPNEA = Phrase(
    "breathing difficulty (SOB, dyspnea, labored, wheezing, tachypnea)",
    (
        r"(?:resp|respiratory|breathing) distress",
        r"labou?red (?:breath\w*|resp\w*)",
        r"(?-i:WOB|SOB|DIB|SOA|DOE)",
        r"work of breathing",
        r"short(?:ness)? of breath",
        r"breathless\w*",
        r"dyspn\w*",
        r"(?:difficulty|trouble|problems?|(?:a )?(?:hard|rough|tough) time) breath?ing",
        r"struggling to breathe?",
        r"(?:can'?t|cannot|unable to) (?:breathe?|catch (?:\w+ )?breath)",
        r"air hunger",
        r"wheez\w*",
        r"tachypn\w*",
        r"retract\w*",
        r"accessory (?:muscle|mm)\w*",
        r"tripod\w*",
        r"gasping",
    ),
)
SHOCK_NAMED = Phrase(
    "shock named as such",
    (
        r"(?:septic|hypovolemic|hemorrhagic|haemorrhagic|cardiogenic|anaphylactic|distributive|obstructive|neurogenic)"
        r" shock",
        r"in shock",
        r"shocky",
    ),
)
POOR_PERFUSION = Phrase(
    "poor perfusion (mottled, cold clammy, thready pulse)",
    (
        r"mottl\w*",
        r"cold(?:,| and)? clammy",
        r"cool(?:,| and)? clammy",
        r"thready(?: pulses?)?",
        r"poor(?:ly)? perfus\w*",
        r"hypoperfus\w*",
        r"(?:delayed|prolonged|sluggish) cap(?:illary)? refill",
        r"cap(?:illary)? refill (?:>|greater than|over) ?[3-9]",
    ),
)
HYPOTENSION_WORDS = Phrase("hypotension in words", (r"hypotens\w*", r"(?:low|dropping) (?:BP|blood pressure)"))
ALLERGIC = Phrase(
    "allergic reaction / anaphylaxis trigger",
    (
        r"anaph\w*",
        r"allergic (?:reaction|rxn)",
        r"(?:bee|wasp|hornet|insect|jellyfish) stings?",
        r"stung by",
        r"(?:peanut|nut|shellfish|food|latex) (?:allergy|exposure|ingestion|reaction)",
        r"ate (?:a |some )?(?:peanuts?|shellfish|nuts|shrimp)",
        r"(?:peanut|tree nut|nut|shellfish|fish|shrimp|egg|milk|sesame|latex|food|bee|wasp|insect|penicillin|PCN|"
        r"sulfa|amoxicillin)[- ]allerg(?:y|ies|ic)",
        r"(?:with|w/|containing|contained|had) (?:peanuts?|tree nuts|nuts|shellfish|shrimp|sesame)",

        r"hives",
        r"urticari\w*",
        r"angio-?edema",
        r"epi-?pen",
        r"epinephrine (?:given|administered|IM)",
    ),
)
AIRWAY_SWELLING = Phrase(
    "upper-airway threat (stridor, throat closing, tongue swelling, drooling)",
    (
        r"stridor\w*",
        r"throat (?:is )?(?:closing|swelling|swollen|tight\w*)",
        r"(?:tongue|uvula) (?:is )?(?:swelling|swollen)",
        r"swelling of (?:the )?(?:tongue|throat|uvula)",
        r"swollen (?:tongue|throat|uvula)",
        r"angio-?edema",
        r"(?:unable to|can'?t|cannot) (?:swallow|handle) (?:(?:his|her|their|own) )?(?:secretions|saliva|spit)",
        r"drooling (?:and |with |w/ )?(?:unable|inability|can'?t|cannot|stridor|muffled|tripod\w*)",
        r"muffled voice",
        r"hot potato voice",
        r"epiglottitis",
    ),
)
# An ingestion event (not a drug named in a medication list): the handbook treats an overdose or a
# deliberate or unknown ingestion of medication as a high-risk situation, whatever the vitals.
OVERDOSE_EVENT = Phrase(
    "overdose or ingestion of medication",
    (
        r"overdos\w*",
        r"(?-i:OD)(?:'?d)?",
        r"(?:took|swallowed|ingested|ate) (?:a |an |the |all (?:of )?)?(?:whole |entire |full )?"
        r"(?:bottle|handful|bunch|pack|box|\d+) (?:of )?(?:his |her |their |\w+ )?"
        r"(?:pills|tabs|tablets|meds|capsules)",
        r"(?:took|swallowed) (?:all|a lot|too many|too much) (?:of )?(?:his |her |their )?"
        r"(?:pills|tabs|tablets|meds|medication)",
        r"empty (?:pill |med(?:ication)? )?bottles?",
        r"pill ingestion",
    ),
)
OVERDOSE = Phrase(
    "overdose / opioid or sedative ingestion",
    (
        r"overdos\w*",
        r"(?-i:OD)(?:'?d)?",
        r"ingest\w*",
        r"took (?:a |an )?(?:bottle|handful|bunch|\d+) (?:of )?(?:pills|tabs|tablets|his|her|their)",
        r"heroin",
        r"fentan[yi]l",
        r"opioids?",
        r"opiates?",
        r"narcan",
        r"naloxone",
        r"oxy(?:codone|contin)",
        r"methadone",
        r"morphine",
        r"percocet",
        r"benzo(?:diazepine)?s?",
        r"xanax",
        r"pinpoint pupils",
    ),
)
RESP_DEPRESSION = Phrase(
    "respiratory depression (shallow, hypoventilating)",
    (
        r"shallow (?:resp\w*|breath\w*)",
        r"(?:resp\w*|breath\w*) (?:are |is )?shallow",
        r"resp(?:iratory)? depression",
        r"hypoventilat\w*",
        r"snoring resp\w*",
    ),
)
MASSIVE_BLEEDING = Phrase(
    "massive or uncontrolled bleeding",
    (
        r"(?:massive|uncontrolled|uncontrollable|profuse|torrential|large volume) "
        r"(?:bleed\w*|h(?:a)?emorrh\w*|blood loss)",
        r"(?:bleeding|hemorrhaging) (?:profusely|uncontrolled|heavily|through (?:the )?dressings?)",
        r"exsanguinat\w*",
        r"(?:massive|large|large[- ]volume|large amounts? of|profuse|copious) (?:h(?:a)?ematemesis|bloody emesis)",
        r"arterial (?:bleed\w*|spurting|h(?:a)?emorrh\w*)",
        r"(?:spurting|pulsatile) (?:blood|bleed\w*)",
        r"(?:blood|bleeding) spurting",
        r"tourniquet (?:applied|placed|in place|on)",
        r"soaked through (?:\w+ )?(?:dressings?|towels?|gauze)",
    ),
)
PACING = Phrase(
    "symptomatic bradycardia needing atropine/pacing",
    (
        r"transcutaneous(?:ly)? pac\w*",
        r"(?:pacer|pacing) pads",
        r"external(?:ly)? pac\w*",
        r"being paced",
        r"(?:needs|requires|requiring) pacing",
        r"atropine (?:given|administered|x ?\d|\d)",
    ),
)

THUNDERCLAP = Phrase(
    "thunderclap / worst headache of life",
    (
        r"thunderclap\w*",
        r"worst (?:\w+ )?(?:head ?ach\w*|hed ?ache\w*|headahce|HA)s?"
        r"(?: (?:of|in) (?:(?:my|his|her|their|the|pt'?s) )?life| ever)?",
        r"(?:headache|HA) (?:is |was )?(?:the )?worst(?: of (?:(?:my|his|her|their) )?life| ever)?",
        r"(?-i:WHOL)",
        r"sudden(?:ly)?(?:[- ]onset)?(?: of)?(?: (?:severe|explosive|intense|worst|excruciating))? (?:headache|HA)",
        r"(?:headache|HA) (?:that )?(?:came on |started |began )?(?:very )?(?:sudden(?:ly)?|abrupt(?:ly)?)",
        r"explosive (?:headache|HA)",
        r"subarachnoid",
        r"(?-i:SAH)",
    ),
)
MENINGEAL = Phrase(
    "meningeal signs or petechial rash",
    (
        r"neck stiffness",
        r"stiff neck",
        r"neck (?:is |feels )?(?:very |really |so )?stiff",
        r"(?:can'?t|cannot|unable to) (?:bend|touch|put) (?:his |her |their |my )?(?:chin|head|neck) (?:to|down)",
        r"rash (?:that )?(?:doesn'?t|does not|won'?t|will not|didn'?t) (?:go away|fade|blanch|disappear) "
        r"(?:when|with|under) (?:pressed|pressing|pressure|a glass|glass)",
        r"nuchal rigidity",
        r"meningism\w*",
        r"meningitis",
        r"meningococc\w*",
        r"kernig\w*",
        r"brudzinski\w*",
        r"petechi\w*",
        r"purpur\w*",
        r"non-?blanching (?:rash|spots|lesions)",
    ),
)
CHEST_PAIN = Phrase(
    "chest pain or pressure",
    (
        r"chest (?:pain|pains|pressure|tightness|tight|heaviness|discomfort|squeezing|burning|ache|aching)",
        r"chest (?:hurts|hurting|is hurting|is sore|feels (?:tight|heavy|like|funny|weird))",
        rf"(?:heavy|tight|squeezing|crushing|burning|pressure|weird|funny) (?:feeling|sensation) in {_POSS}chest",
        r"(?-i:CP)",
        r"c/p",
        r"angina\w*",
        r"(?:sub|retro)sternal (?:pain|pressure|discomfort|burning|tightness)",
        rf"(?:pain|pressure|tightness|heaviness|squeezing) in {_POSS}chest",
        rf"elephant (?:on|sitting on) {_POSS}chest",
    ),
)
CP_FEATURES = Phrase(
    "cardiac features of chest pain (pressure, radiation to jaw/arm, diaphoresis, nausea, exertion or rest, nitro)",
    (
        r"(?<!blood )(?<!BP )(?<!pulse )(?<!positive )(?<!airway )pressure(?! (?:ulcer|sore|injury|dressing|wound))",
        r"squeez\w*",
        r"crushing",
        r"heaviness",
        r"elephant",
        rf"(?:sitting|standing|sat) on (?:it|{_POSS}chest)",
        r"like a (?:weight|vise|vice|band|belt|fist)",
        rf"(?:radiat\w*|rad(?:s|iating)?|spreading|spreads|going|goes|moving) (?:in)?to {_POSS}(?:{_SIDE} )?"
        r"(?:jaw|arms?|shoulders?|neck|back)",
        rf"(?:into|down) {_POSS}(?:{_SIDE} )?(?:jaw|arms?|shoulders?)",
        r"diaphore\w*",
        r"sweaty",
        r"sweating",
        r"clammy",
        r"exertion(?:al)?",
        r"(?:with|on) exertion",
        r"nitro(?:glycerin|gly|stat)?",
        r"(?-i:NTG|ASA) (?:given|taken|x ?\d|\d+)",
        r"(?:chewed|given) (?:(?:an|a) )?(?:ASA|aspirin)",
        r"at rest",
        r"nause\w*",
        r"aspirin 324",
    ),
)
CARDIAC_HISTORY = Phrase(
    "cardiac history (CAD, MI, stents, CABG, angina)",
    (
        r"(?-i:CAD|MI|NSTEMI|STEMI|PCI|CABG|ACS|IHD)",
        r"coronary (?:artery )?disease",
        r"heart attacks?",
        r"(?:cardiac |coronary )?stents?",
        r"(?:coronary|cardiac|triple|quadruple|double) bypass",
        r"bypass x ?\d",
        r"angina",
        r"cardiac (?:hx|history|disease)",
        r"isch(?:a)?emic heart",
    ),
    history_ok=True,
)
ACS_ECG = Phrase(
    "ECG or troponin evidence of acute coronary syndrome",
    (
        r"(?-i:STEMI|NSTEMI|STE|ACS)",
        r"ST[- ]?(?:segment )?(?:elevation|depression)s?",
        r"new (?:LBBB|left bundle)",
        r"(?:positive|elevated|\+|rising) trop\w*",
        r"trop\w* (?:positive|elevated|\+|rising)",
        r"cath lab (?:activat\w*|alert\w*|called|notified)",
        r"(?:code|alert) STEMI",
        r"STEMI (?:alert|code|activation)",
        r"acute coronary",
        r"(?:acute|active) (?:MI|myocardial infarction)",
    ),
)
STROKE = Phrase(
    "stroke signs (facial droop, slurred speech, unilateral weakness, LKW)",
    (
        r"(?:facial|face|mouth|lip) (?:is |was )?droop\w*",
        r"drooping (?:of )?(?:the )?(?:face|mouth|lip)",
        rf"{_SIDE}[- ]?(?:sided )?facial (?:droop\w*|weakness|asymmetry|palsy)",
        r"facial asymmetry",
        r"slurr\w*(?: (?:speech|words))?",
        r"speech (?:is )?slurred",
        r"dysarthri\w*",
        r"aphasi\w*",
        r"word[- ]finding (?:difficult\w*|problems?|trouble)",
        r"garbled speech",
        r"(?:trouble|difficulty) (?:speaking|getting (?:his |her |the )?words out|finding words)",
        rf"{_SIDE}[- ]?(?:sided |side )?(?:{_LIMB} )?(?:weakness|numbness|paralysis|hemiparesis|paresthesias?|drift)",
        rf"(?:weakness|numbness|paralysis) (?:of|in|to|on) (?:the )?(?:{_SIDE}|one) (?:{_LIMB}|upper|lower)",
        r"unilateral (?:weakness|numbness|paralysis)",
        r"hemi(?:paresis|plegia|paretic|plegic)",
        r"(?:arm|leg|pronator) drift",
        r"gaze (?:deviation|preference)",
        r"(?:sudden|acute) (?:vision loss|loss of vision|blindness)",
        r"(?-i:LKW|LSW|LKN|LSN)",
        r"last (?:known|seen) (?:well|normal)",
        # lay phrasing
        r"(?:face|mouth|smile|lip) (?:is |was )?(?:falling|fallen|sagging|sagged|crooked|lopsided|uneven|drooping)"
        rf"(?: (?:on|to) (?:one|the {_SIDE}|{_SIDE}) side)?",
        r"(?:numb|numbness|weak|weakness|tingl\w*|heavy|dead) (?:on|down) "
        rf"(?:one|the {_SIDE}|{_SIDE}|his {_SIDE}|her {_SIDE}) side",
        r"one side of (?:the |his |her |their |my )?(?:face|body) (?:is |feels |went |was )?"
        r"(?:numb|weak|droop\w*|heavy|dead)",
        rf"(?:can'?t|cannot|unable to|could not|couldn'?t) (?:lift|raise|move|feel|use) (?:his|her|their|my|the) "
        rf"{_SIDE} (?:arm|leg|hand|side)",
        r"words (?:are |were |come |came |coming )?(?:out )?(?:wrong|jumbled|mixed up|garbled|slurred|funny)",
        r"(?:can'?t|cannot|unable to|couldn'?t) get (?:his|her|their|my|the) words out",
        r"(?:code|alert) stroke",
        r"stroke (?:alert|code|protocol|activation)",
        r"B?E-?FAST (?:positive|\+|pos)",
        r"(?<!heat )(?<!sun )stroke",
        r"(?-i:CVA)(?! ?(?:tenderness|tender|ttp|pain|\+|T\b))",  # not costovertebral-angle tenderness
        r"(?-i:TIA)",
    ),
)
SUICIDAL = Phrase(
    "suicidal or homicidal ideation",
    (
        r"(?-i:SI)(?! joint)",
        r"(?<!BG )(?<!glucose )(?<!reads )(?<!sugar )(?<!glucometer )(?-i:HI)",
        r"s[ui]{1,2}c[ie]?dal\w*",
        r"suicid\w*",
        r"homicid\w*",
        r"(?:wants?|wanting|plans?|planning|going|threaten\w*|trying) to (?:kill|hurt|harm|end|shoot|hang) "
        r"(?:him|her|my|them|their|your)sel(?:f|ves)",
        r"(?:wants?|wanting|plans?|planning|going|threaten\w*) to (?:kill|hurt|harm|shoot|stab) "
        r"(?:someone|others|people|his|her|their|him|them)",
        r"(?:wants?|wanting|plans?|planning|going) to end (?:his|her|my|their) life",
        r"wants? to die",
        r"(?:end|ending|finish) it all",
        r"(?:don'?t|dont|do not|doesn'?t|does not) want to (?:be alive|live|wake up)(?: anymore| any more)?",
        r"(?:don'?t|dont|do not|doesn'?t|does not) want to be (?:here|around) (?:anymore|any more)",
        r"(?:take|taking) (?:my|his|her|their) (?:own )?life",
        r"better off dead",
        r"(?:thoughts?|thinking) (?:of|about) (?:killing|hurting|harming|ending|dying)",
    ),
)
SI_PLAN = Phrase(
    "a plan, intent or means",
    (
        r"plan(?!\s*(?::|of care|to (?:d/?c|discharge|admit|follow))|ned)\w*",
        r"intent(?:ion)?s?",
        r"(?:has|have|with|access to|available) (?:the )?means",
        r"means (?:to|of|available|at home)",
        r"access to (?:a )?(?:guns?|firearms?|weapons?|pills|meds|knife|knives)",
        r"guns?",
        r"firearms?",
        r"weapons?",
        r"rope",
        r"noose",
        r"stockpil\w*",
        r"(?:saving|saved|hoarding|hoarded) (?:up )?(?:\w+ )?(?:pills|meds|medications|tablets)",
        r"(?:jump|jumping) (?:off|from|in front of)",
        r"(?:going|gonna|goig|about|trying|tried) to (?:jump|hang|shoot|drown|overdose)",
        r"(?:overdos(?:e|ing)|(?-i:OD)) on",
        r"(?:suicide|goodbye) (?:note|letter)",
    ),
)
SUICIDE_ATTEMPT = Phrase(
    "suicide attempt",
    (
        r"suicid\w* attempt",
        r"attempted suicide",
        r"(?:tried|trying|attempted) to (?:kill|hang|overdose|shoot|hurt|harm|drown|suffocate) "
        r"(?:him|her|my|them)sel(?:f|ves)",
        r"intentional (?:overdose|OD|ingestion)",
        r"(?:slit|cut|slashed) (?:(?:his|her|their|my|both) )?wrists?",
        r"(?:hanging attempt|found hanging|attempted hanging)",
    ),
)
FEVER = Phrase(
    "fever",
    (
        r"(?<!hay )fevers?",
        r"febrile",
        r"pyrexi\w*",
        r"hot to (?:the )?touch",
        r"tactile (?:fever|temp\w*)",
        r"rigors",
    ),
)
SEPSIS = Phrase(
    "sepsis named (septic, code sepsis, SIRS)",
    (
        r"seps[ie]s",
        r"septic\w*",
        r"urosepsis",
        r"(?:code|alert) sepsis",
        r"sepsis (?:alert|screen positive|protocol)",
        r"SIRS (?:criteria|positive|\+)",
    ),
)
IMMUNOCOMPROMISED = Phrase(
    "immunocompromised (chemotherapy, neutropenia, transplant, asplenia)",
    (
        r"chemo\w*",
        r"neutropeni\w*",
        r"(?-i:ANC) (?:<|low|of [0-9]{1,3}\b)",
        r"immuno-?(?:compromised|suppress\w*|deficien\w*)",
        r"transplant\w*",
        r"(?-i:BMT)",
        r"stem cell",
        r"(?-i:HIV|AIDS)",
        r"(?:on|taking) (?:high[- ]dose )?(?:steroids|prednisone)",
        r"(?:active|metastatic) (?:cancer|malignancy|leukemia|lymphoma)",
        r"(?:leukemia|lymphoma) (?:on|in) (?:treatment|therapy|chemo)",
        r"oncology (?:pt|patient)",
        r"sickle cell",
        r"(?-i:SCD)",
        r"asplen\w*",
        r"splenectomy",
    ),
    history_ok=True,
)
CONFUSION = Phrase(
    "new confusion, lethargy, disorientation",
    (
        r"conf(?:u|us)s\w*",
        r"confus\w*",
        r"disorient\w*",
        r"altered (?:mental status|mentation|sensorium|LOC|level of consciousness)",
        r"(?-i:AMS|ALOC)",
        r"(?:mental status|MS) changes?",
        r"change in (?:mental status|mentation|LOC)",
        r"(?:decreased|depressed|reduced) (?:LOC|level of consciousness|responsiveness)",
        r"leth[ae]r?g\w*",
        r"somnolen\w*",
        r"(?:hard|difficult) to (?:arouse|rouse|wake)",
        r"(?:poorly|less|minimally) responsive",
        r"not acting (?:right|normal|like (?:him|her|them)self|himself|herself|themselves)",
        r"acting (?:strange\w*|odd\w*|weird\w*|bizarre\w*|confused|inappropriate\w*)",
        r"delirium",
        r"delirious",
        r"A\s*&?\s*O\s*x?\s*[0-2](?![\d/])",
        r"oriented (?:x|times) ?[0-2](?![\d/])",
        r"oriented to (?:self|person|name) only",
        r"not oriented",
        r"(?:inappropriate (?:responses|answers|speech))",
        r"(?:answering|responding) inappropriately",
        r"floppy",
        # lay phrasing
        r"not making (?:any )?sense",
        r"talking (?:nonsense|gibberish|jibberish|giberish|crazy|out of (?:his|her|their) head)",
        r"(?:not|isn'?t|wasn'?t|not being) (?:him|her|them)sel(?:f|ves)",
        r"not (?:his|her|their) (?:usual|normal) sel(?:f|ves)",
        r"(?:very|really|super|so|too|extremely|unusually|abnormally|excessively|more|much more) (?:sleepy|drowsy)",
        r"(?:sleepy|drowsy) (?:all day|than (?:usual|normal)|and (?:hard|difficult) to wake)",
        r"keeps? (?:falling|drifting|nodding) (?:asleep|off)",
        r"(?:can'?t|cannot|won'?t|wont|unable to) (?:stay|keep (?:his|her|their) eyes) (?:awake|open)",
        r"(?:hard|difficult) to keep (?:him|her|them|baby) awake",
        r"(?:doesn'?t|does not|didn'?t|did not) (?:know|recogni[sz]e) (?:where|who|what)",
        r"(?:only )?knows (?:her|his|their) (?:own )?name",
        r"(?:went|gone|going|became|is|was|very|completely) limp(?! (?:on|when|while|after))",
    ),
)
PREGNANT = Phrase(
    "pregnancy (positive test, weeks pregnant, missed period)",
    (
        r"pregnan\w*",
        r"(?:\+ ?|positive |pos )(?:UPT|HCG|b-?hcg|preg\w*|home preg(?:nancy)? test|HPT|urine preg\w*)",
        r"(?:UPT|HCG|b-?hcg|HPT|preg(?:nancy)? test)(?: (?:is|was))? (?:\+|positive|pos)",
        r"\d{1,2} ?(?:wks?|weeks?) (?:preg\w*|gestation|GA|IUP|by LMP|since LMP|from LMP)",
        r"(?:missed|late) (?:period|menses|cycle)",
        r"(?-i:LMP) (?:was )?(?:[5-9]|1\d) ?(?:wks?|weeks?) ago",
        r"first trimester",
        r"(?-i:IUP)",
        r"ectopic",
        r"(?-i:G\d{1,2} ?P\d{1,2})[\w-]*,? (?:@|at) ?\d{1,2} ?(?:wks?|weeks?)",
        r"@ ?(?:[5-9]|[1-3]\d|4[0-2]) ?(?:wks?|weeks?)(?! ago)",
        r"(?:[5-9]|[1-3]\d|4[0-2]) ?(?:wks?|weeks?|wees) (?:pregnant|preg|along|gestation)",
        r"(?:second|third|2nd|3rd) trimester",
    ),
)
ECTOPIC_SYMPTOM = Phrase(
    "abdominal/pelvic pain, vaginal bleeding, shoulder-tip pain or syncope",
    (
        r"(?:abd\w*|abdom\w*|pelvic|lower abd\w*|suprapubic|adnexal|belly|stomach|flank) "
        r"(?:pain|cramp\w*|tenderness|ttp|discomfort)",
        r"(?-i:RLQ|LLQ|LQ)(?: (?:pain|ttp|tenderness))?",
        r"cramping",
        r"vag\w* (?:bleed\w*|spotting|blood|h(?:a)?emorrh\w*)",
        r"(?:spotting|passing clots)",
        r"(?-i:PVB|VB)",
        r"(?:PV|per vagina) (?:bleed\w*|blood)",
        r"soaking (?:\d+ |through )?pads?",
        r"shoulder (?:tip )?pain",
        r"syncop\w*",
        r"passed out",
    ),
)
ECTOPIC_NAMED = Phrase("ectopic pregnancy named", (r"ectopic(?: pregnancy)?",))
TORSION = Phrase(
    "testicular torsion signs",
    (
        r"testic\w*(?: \w+)? (?:pain|swelling|tenderness)",
        r"(?:scrot\w*|testes|testis|testicle) (?:pain|swelling|tenderness)",
        r"(?:scrot\w*|testes|testis|testicle) (?:is |was )?(?:swollen|painful|tender)",
        rf"pain in {_POSS}(?:{_SIDE} )?(?:testicles?|testis|testes|scrotum|balls?)",
        r"torsion",
        r"high[- ]riding (?:testicle|testis)",
        r"(?:absent|no) cremaster\w*(?: reflex)?",
    ),
)
AORTIC = Phrase(
    "aortic dissection signs (tearing pain to back)",
    (
        r"(?:tearing|ripping)(?: \w+){0,3} (?:chest|back|abd\w*|abdominal|interscapular) (?:pain|sensation)",
        r"(?:chest|back|abd\w*) (?:pain|sensation)(?: \w+){0,3} (?:tearing|ripping)",
        rf"(?:tearing|ripping) (?:pain|sensation)(?: \w+){{0,3}} (?:to|into|through|in|radiating to) {_POSS}"
        r"(?:back|chest|abdomen|abd|shoulder blades)",
        r"(?:aortic )?dissect(?:ion|ing)",
        r"(?:pulse|BP|blood pressure) (?:differential|discrepancy|difference) between (?:the )?arms",
    ),
)
AAA = Phrase("abdominal aortic aneurysm", (r"(?-i:AAA)", r"aortic aneurysm"), history_ok=True)
AAA_SYMPTOM = Phrase(
    "abdominal, back or flank pain, or syncope",
    (r"(?:abd\w*|abdom\w*|back|flank) pain", r"pain (?:in|to) (?:the )?(?:abd\w*|back|flank)", r"syncop\w*"),
)
DKA = Phrase(
    "DKA signs (ketoacidosis, Kussmaul breathing, ketones)",
    (
        r"(?-i:DKA)",
        r"(?:diabetic )?ketoacidosis",
        r"kussmaul\w*",
        r"fruity (?:breath|odor|smell)",
        r"(?:large|positive|moderate|\+) (?:urine |serum )?ketones",
        r"ketones (?:large|positive|moderate|\+)",
        r"ketonuria",
    ),
)
HYPERGLYCEMIA_SYMPTOM = Phrase(
    "vomiting, abdominal pain, deep breathing or lethargy",
    (
        r"vom[it]+\w*",
        r"(?-i:N/V|NV)",
        r"emesis",
        r"throwing up",
        r"(?:abd\w*|abdom\w*|stomach|belly) pain",
        r"deep (?:rapid )?breath\w*",
        r"tachypn\w*",
        r"leth[ae]r?g\w*",
        r"confus\w*",
    ),
)
CHEMICAL_EYE = Phrase(
    "chemical exposure to the eye",
    (
        r"(?:chemical|bleach|alkali\w*|lye|caustic|oven cleaner|drain cleaner|cleaner|ammonia|lime|cement|"
        r"battery acid|acid|pepper spray|solvent|degreaser)\W+(?:\w+\W+){0,6}?(?:eyes?|ocular|OD|OS|OU)",
        r"(?:eyes?|ocular)\W+(?:\w+\W+){0,6}?(?:chemical|bleach|alkali\w*|lye|caustic|cleaner|ammonia|cement|"
        r"battery acid|acid|pepper spray|solvent|degreaser)(?: (?:splash|exposure|burn|injury))?",
    ),
)
HEAD_STRIKE = Phrase(
    "head strike",
    (
        rf"(?:hit|struck|bumped|banged|hitting|striking) {_POSS}head",
        r"head (?:strike|struck|injury|trauma|lac\w*|hematoma|bump)",
        r"(?:occipital|frontal|scalp|forehead) (?:hematoma|lac\w*|contusion|abrasion)",
    ),
)
ANTICOAGULANT = Phrase(
    "anticoagulant or antiplatelet use",
    (
        r"anti-?coag\w*",
        r"blood thinners?",
        r"warfarin",
        r"coumadin",
        r"eliquis",
        r"apixaban",
        r"xarelto",
        r"rivaroxaban",
        r"pradaxa",
        r"dabigatran",
        r"edoxaban",
        r"savaysa",
        r"lovenox",
        r"enoxaparin",
        r"heparin",
        r"plavix",
        r"clopidogrel",
        r"brilinta",
        r"ticagrelor",
        r"(?-i:DOAC|NOAC)s?",
        r"(?-i:INR) (?:of )?(?:[3-9]|\d\d)",
    ),
    history_ok=True,
)
TRAUMA_HIGH_ENERGY = Phrase(
    "high-energy mechanism (rollover, ejection, pedestrian struck, fall from height, GSW/stab)",
    (
        r"roll-?over",
        r"rolled (?:over|the car|the vehicle|several times)",
        r"eject(?:ed|ion)(?! fraction)",
        r"high[- ]speed",
        r"(?:[4-9]\d|1\d\d) ?(?:mph|km/?h|kph)",
        r"ped(?:estrian)? (?:struck|vs\.?|versus|hit)",
        r"(?:struck|hit) by (?:a |an )?(?:car|vehicle|truck|bus|train|motorcycle)",
        r"(?:motorcycle|motorbike|MCC|dirt bike|ATV) (?:crash|collision|accident|vs\.?|wreck)",
        r"(?-i:MCC)",
        r"fall from (?:a |the )?(?:roof|balcony|scaffold\w*|(?:2nd|second|3rd|third) (?:story|floor)|height|bridge)",
        r"(?:fell|fall|jumped) (?:from |off |about |approx\.? |~)?(?:[1-9]\d|\d{3}) ?(?:ft|feet|foot|')",
        r"(?:fell|fall|jumped) (?:from|off) (?:a |the )?"
        r"(?:roof|balcony|bridge|(?:2nd|second|3rd|third) (?:story|floor))",
        r"(?-i:GSW)s?",
        r"gun ?shot(?: wound)?s?",
        r"shot (?:in|to) (?:the )?(?:chest|abd\w*|abdomen|back|head|neck|torso)",
        r"stab(?:bed| wounds?)",
        r"stabbing (?:victim|injury|incident|assault)",
        r"impale\w*",
        r"crush (?:injury|injuries)",
        r"(?:prolonged )?extrication",
        r"(?:significant|major) (?:intrusion|mechanism)",
        r"(?:fatality|death|DOA) (?:at|on) (?:the )?scene",
        r"death in (?:the )?same (?:vehicle|car)",
        r"trauma (?:alert|activation|code|team activat\w*)",
        r"(?:level (?:1|I)|full) trauma",
        r"(?:major|multi(?:ple)?|poly)[- ]?trauma",
    ),
)
DISTRESS_VISIBLE = Phrase(
    "visible distress (writhing, crying, diaphoretic, grimacing)",
    (
        r"writh\w*",
        r"doubled over",
        r"(?:crying|screaming|yelling|moaning) (?:out )?(?:in|from|with|d/t|due to) pain",
        r"moaning",
        r"screaming",
        r"grimac\w*",
        r"diaphore\w*",
        r"in (?:obvious|visible|acute|severe|significant|moderate|marked|extreme|great|considerable) distress",
        r"(?:visibly |obviously )?distressed",
        r"(?:unable to|can'?t|cannot) (?:sit|lie|stay|keep) still",
        r"(?:can'?t|cannot|unable to) get comfortable",
        r"tearful",
        r"(?:visibly|obviously|very|appears|looks) uncomfortable",
        r"in agony",
        r"rocking (?:back and forth|in (?:the )?(?:chair|bed))",
        r"(?:pale and )?sweating profusely",
    ),
)
NEAR_DROWNING = Phrase(
    "near-drowning / submersion",
    (
        r"near[- ]?drown\w*",
        r"drown\w*",
        r"submersion",
        r"submerged",
        r"(?:pulled|rescued|found) (?:from|in|out of) (?:the |a )?(?:pool|water|lake|river|ocean|sea|tub|bath\w*|pond)",
        r"found (?:face ?down|floating) in",
    ),
)
SEIZURE_ACTIVE = Phrase(
    "active seizure / status epilepticus",
    (
        rf"(?<!was )(?<!were )(?<!been )(?<!had )"
        rf"(?:actively |currently |still |continuously |persistently )?{_SEIZING}",
        r"status epilep\w*",
        r"in status(?! post)",
        rf"(?:active|ongoing|continuous|continuing|persistent|back[- ]to[- ]back) {_SEIZ}",
        rf"{_SEIZ}(?: activity)? (?:ongoing|in progress|continu\w*|not stopping|(?:for|x|lasting|over|>) ?>? ?"
        rf"(?:[5-9]|[1-9]\d)\+? ?min\w*)",
        rf"{_SEIZ} (?:without|w/o) (?:return to|regaining) (?:baseline|consciousness)",
        r"(?:no|without|w/o|not) (?:return(?:ing)?|returned) to baseline (?:in )?between",
        r"(?:without|w/o|not|never) (?:waking(?: up)?|wak\w+ up|regaining consciousness|coming (?:to|around)|"
        r"back to baseline) (?:in )?between",
        r"convulsing",
        r"(?:still|continuously|continually|constantly|nonstop|non-stop|actively) (?:having |has )?"
        r"(?:jerk(?:ing|s)|shak(?:ing|inng|in)|twitch(?:ing|es)|convuls\w*)",
        r"(?:jerking|shaking|twitching|convulsing|fitting)(?: all over| whole body| everywhere)?"
        r" (?:and )?(?:won'?t|wont|will not|not|doesn'?t|does not|didn'?t) stop(?:ping)?",
        r"(?:fitting|fits?) (?:for|x|lasting|over|>) ?>? ?(?:[5-9]|[1-9]\d)\+? ?min\w*",
        r"(?:tonic[- ]clonic|rhythmic|generali[sz]ed|full[- ]body) (?:jerking|shaking|movements|activity) "
        r"(?:ongoing|on arrival|in progress|continu\w*|now|in triage)",
    ),
)
SEIZURE_RECENT = Phrase(
    "postictal, new-onset, recurrent or prolonged seizure",
    (
        r"post-?ictal\w*",
        rf"(?:new[- ]onset|first[- ]time|first(?: ever)?) {_SEIZ}",
        rf"{_SEIZ} for the first time",
        rf"(?:recurrent|repeated|multiple|several|prolonged|[2-9]|\d\d|two|three) {_SEIZ}",
    ),
)
GI_BLEED_UPPER = Phrase(
    "upper GI bleeding (hematemesis, coffee-ground emesis)",
    (
        r"h(?:a)?ematemesis",
        r"(?:vomit\w*|throwing up|threw up|emesis)(?: (?!(?:no|not|without|w/o|denies|any)\b)[\w-]+){0,6}? blood",
        r"bloody (?:emesis|vomit\w*)",
        r"coffee[- ]?grounds?(?: emesis)?",
    ),
)
BURN_INHALATION = Phrase(
    "airway burn / smoke inhalation / large burn",
    (
        r"smoke inhalation",
        r"inhalation (?:injury|burn)",
        r"singed (?:nasal|nose|facial) hairs?",
        r"soot (?:in|around) (?:the )?(?:mouth|nose|nares|airway|oropharynx)",
        r"carbonaceous sputum",
        r"(?:[2-9]\d|100) ?% (?:TBSA|BSA|body surface)",
    ),
)
PREECLAMPSIA = Phrase("preeclampsia / eclampsia", (r"pre-?eclamp\w*", r"eclamp\w*", r"(?-i:HELLP)"))
LIMB_THREAT = Phrase(
    "limb threat (open fracture, pulseless limb, compartment syndrome)",
    (
        r"open (?:fx|fracture)",
        r"bone (?:exposed|visible|protruding|sticking out|through (?:the )?skin)",
        rf"pulseless (?:{_SIDE} )?(?:extremit\w*|limb|foot|feet|leg|arm|hand|distal\w*|lower|upper|pedal)",
        rf"(?:no|absent) (?:distal |pedal |radial |DP |PT |dorsalis pedis )?pulses? (?:in|to|on) (?:the )?(?:{_SIDE} )?"
        r"(?:foot|feet|leg|arm|hand|extremit\w*|limb)",
        r"compartment syndrome",
        r"degloving",
    ),
)
DANGEROUS_RHYTHM = Phrase(
    "dangerous rhythm (complete heart block, ventricular tachycardia)",
    (
        r"complete heart block",
        r"(?-i:CHB)",
        r"(?:3rd|third)[- ]degree (?:AV )?(?:heart )?block",
        r"v-? ?tach\w*",
        r"(?-i:VT)",
        r"ventricular tachycardia",
        r"wide[- ]complex tachy\w*",
        r"torsades",
    ),
)

CHOKING = Phrase(
    "choking / foreign body in the airway",
    (
        r"chok(?:ing|ed|es)(?! (?:sensation|feeling))",
        r"foreign body (?:in (?:the )?)?(?:airway|throat|trachea)",
        r"(?:aspirated|inhaled) (?:a |an |the )?(?:\w+ )?(?:toy|coin|grape|nut|peanut|food|bead|piece)",
    ),
)
CANNOT_VOICE = Phrase(
    "cannot speak, cry, cough or breathe, or cyanosis",
    (
        r"(?:can'?t|cannot|unable to|not able to) (?:talk|speak|cry|cough|breathe|make (?:a )?sounds?)",
        r"(?:no|silent) (?:cough|cry)",
        r"(?:turning|turned|went|going|gone) (?:blue|purple|gr[ae]y)",
        r"cyano\w*",
    ),
)
SYNCOPE = Phrase(
    "syncope (fainted, passed out, blacked out, LOC)",
    (
        r"syncop\w*",
        r"(?:passed|passing|passes) out",
        r"faint(?:ed|ing)(?! (?:feeling|sensation))",
        r"(?:blacked|blacking|blacks) out",
        r"(?-i:LOC)(?! (?:decreased|altered))",
        r"loss of consciousness",
        r"lost consciousness",
        r"collaps(?:ed|ing)(?! (?:lung|vertebra\w*))",
    ),
)
SYNCOPE_RISK = Phrase(
    "cardiac features of syncope (exertion, chest pain, palpitations, dyspnea, no warning)",
    (
        r"(?:on|with|during|while|after) (?:exertion|exercis\w*|running|climbing)",
        r"exertional",
        r"palpitations?",
        r"heart (?:racing|pounding|fluttering|skipping)",
        r"(?:without|w/o|no) (?:warning|prodrome)",
        r"while (?:driving|lying down|sitting)",
    ),
)
_TOXIC_SUBSTANCE = (
    r"(?:antifreeze|anti-freeze|ethylene glycol|methanol|windshield (?:washer )?fluid|wiper fluid|bleach|drain cleaner|"
    r"oven cleaner|lye|caustic\w*|battery acid|button batter(?:y|ies)|disc batter(?:y|ies)|batter(?:y|ies)|magnets?|"
    r"pesticides?|insecticides?|weed ?killer|herbicides?|paraquat|rat poison|rodenticides?|lamp oil|kerosene|"
    r"gasoline|lighter fluid|paint thinner|laundry (?:pods?|detergent pods?)|detergent pods?|iron (?:pills|tablets)|"
    r"nicotine (?:liquid|juice)|vape (?:juice|liquid)|e-?liquid|poison(?:s|ous)?(?! (?:ivy|oak|sumac|control)))"
)
_DRUG = (
    r"(?:pills|tabs|tablets|capsules|caps|meds|tylenol|acetaminophen|APAP|paracetamol|aspirin|ibuprofen|advil|motrin|"
    r"benadryl|diphenhydramine|xanax|ativan|klonopin|valium|seroquel|trazodone|ambien|amitriptyline|sertraline|"
    r"zoloft|prozac|lithium|metoprolol|propranolol|amlodipine|digoxin|insulin|oxy\w*|percs?|percocets?|norcos?|"
    r"vicodins?|sleeping pills|sleep aids?|iron)"
)
TOXIC_INGESTION = Phrase(
    "toxic ingestion named by its substance or amount (antifreeze, caustics, button battery, magnets, >= 10 tablets)",
    (
        r"(?:drank|drunk|drinking|drinks|swallowed|swallowing|swallows|ingested|ingesting|ate|eaten|eating|chewed|"
        r"chewing|bit into|sucked on)(?: (?:a|an|the|some|several|\d+|two|few|of|his|her|their|my|\w+'?s|\w+)){0,3} "
        + _TOXIC_SUBSTANCE,
        _TOXIC_SUBSTANCE + r" (?:ingestion|ingested|swallowed|poisoning|toxicity)",
        r"(?:got|gotten|getting) into (?:\w+'?s? ){0,2}(?:pills?|pill ?box|pill bottle|pill organi[sz]er|meds|"
        r"medicines?|medications?)",
        r"(?:unknown|unsure|not sure) how many (?:pills |tabs |tablets )?(?:swallowed|taken|ingested|missing|gone)",
        r"(?:took|swallowed|ingested|ate) (?:[1-9]\d|\d{3})\+? (?:of )?(?:(?:his|her|their|my|\w+'?s) ){0,2}" + _DRUG,
        r"(?:took|swallowed|ate) (?:a |the )?(?:bunch|handful|lot|whole bottle|bottle|box|pack) of "
        r"(?:(?:his|her|their|my|\w+'?s) ){0,2}" + _DRUG,
    ),
)
SEXUAL_ASSAULT = Phrase(
    "sexual assault",
    (
        r"sexual(?:ly)? (?:assault\w*|abused|abuse(?= (?:today|tonight|last night|this)))",
        r"raped",
        r"rape(?! seed)",
        r"(?-i:SANE) (?:exam|nurse|kit)",
        r"rape kit",
    ),
)
LOWER_GI_BLEED = Phrase(
    "GI bleeding (melena, blood in the stool, hematochezia, BRBPR)",
    (
        r"melena",
        r"(?:black|tarry|maroon|bloody) (?:(?:and |, ?)?(?:black|tarry|maroon|bloody) )?"
        r"(?:stools?|BMs?|bowel movements?|poops?)",
        r"blood (?:in|with) (?:the |his |her |their |my )?(?:stools?|BMs?|poop|toilet)",
        r"(?-i:BRBPR)",
        r"h(?:a)?ematochezia",
        r"rectal (?:bleed\w*|blood)",
        r"bleeding (?:from|per) (?:the )?(?:rectum|bottom|back passage)",
    ),
)
ORTHOSTATIC = Phrase(
    "lightheaded, dizzy on standing, near-syncope, pale",
    (
        r"light-? ?headed\w*",
        r"dizz\w*",
        r"near[- ]?syncop\w*",
        r"pre-?syncop\w*",
        r"(?:almost|nearly) (?:passed|fainted|blacked)(?: out)?",
        r"orthostatic\w*",
        r"pale",
        r"pallor",
    ),
)
PE_RISK = Phrase(
    "pulmonary embolism suspected or its risk (DVT, unilateral leg swelling, long travel, recent surgery, postpartum)",
    (
        r"pulmonary embol\w*",
        r"(?:r/o|rule out|rule-out|concern for|suspected|suspect|possible) (?-i:PE)",
        r"(?-i:DVT)s?",
        r"blood clots? (?:in (?:the |his |her |my )?(?:leg|calf|lung)s?)?",
        rf"(?:{_SIDE}|one) (?:calf|leg|thigh) (?:is )?(?:swelling|swollen|pain|painful|tender|red)",
        rf"swollen (?:{_SIDE} )?(?:calf|leg)",
        r"(?:long|recent|\d+[- ]?(?:hr|hour)|international|overseas) (?:flight|car ride|drive|bus ride|trip)",
        r"(?:just |recently )?flew (?:back|home|in) from",
        r"(?:recent|\d+ (?:days?|wks?|weeks?) (?:after|post|since)) (?:surgery|op\w*|hip replacement|knee replacement)",
        r"post-?partum",
        r"h(?:a)?emoptysis",
        r"cough\w* (?:up )?blood",
    ),
)
ELDERLY = AgeBand("65 years and over", 65.0, 200.0, unknown=False)

# ---------------------------------------------------------------------------------------------------
# The rules table
# ---------------------------------------------------------------------------------------------------

_FEVER_ANY = AnyOf((Vital("temperature_c", ">=", 38.0), FEVER))

RULES: tuple[Rule, ...] = (
    # --- Decision point A: immediate life-saving intervention -> ESI 1 ---------------------------------
    Rule("A-apnea", 1, "A", (APNEA,), SOURCE_A, summary="Apnea, agonal or absent breathing"),
    Rule("A-arrest", 1, "A", (ARREST,), SOURCE_A, summary="Cardiac arrest, pulseless, CPR/ROSC, VF/asystole"),
    Rule("A-airway", 1, "A", (AIRWAY,), SOURCE_A, summary="Intubated/bagged or airway not maintained"),
    Rule("A-unresponsive", 1, "A", (UNRESPONSIVE,), SOURCE_A, summary="Unresponsive or responds only to pain"),
    Rule("A-gcs-low", 1, "A", (Vital("gcs", "<=", 8),), SOURCE_A, summary="GCS 8 or less"),
    Rule("A-resp-severe", 1, "A", (RESP_SEVERE,), SOURCE_A, summary="Severe respiratory distress"),
    Rule(
        "A-hypoxia-distress",
        1,
        "A",
        (Vital("spo2", "<", 90), AnyOf((DYSPNEA, Vital("resp_rate", ">", 30)))),
        SOURCE_A,
        summary="SpO2 < 90% with respiratory distress",
    ),
    Rule("A-hypoxia-critical", 1, "A", (Vital("spo2", "<", 80),), SOURCE_A, summary="SpO2 < 80%"),
    Rule(
        "A-resp-rate-critical",
        1,
        "A",
        (Vital("resp_rate", "<", 8),),
        SOURCE_A,
        summary="Respiratory rate < 8 (hypoventilation)",
    ),
    Rule(
        "A-overdose-hypoventilation",
        1,
        "A",
        (OVERDOSE, AnyOf((Vital("resp_rate", "<", 10), RESP_DEPRESSION))),
        SOURCE_A,
        summary="Overdose with RR < 10 or respiratory depression",
    ),
    Rule(
        "A-shock",
        1,
        "A",
        (Vital("systolic_bp", "<", 90), AnyOf((Vital("heart_rate", ">", 100), POOR_PERFUSION))),
        SOURCE_A,
        ages=ADULT,
        summary="SBP < 90 with tachycardia or poor perfusion",
    ),
    Rule(
        "A-hypotension-severe",
        1,
        "A",
        (Vital("systolic_bp", "<", 80),),
        SOURCE_A,
        ages=ADULT,
        summary="SBP < 80 (e.g. 70/palp)",
    ),
    Rule("A-shock-named", 1, "A", (SHOCK_NAMED,), SOURCE_A, summary="Shock documented (septic, hemorrhagic, ...)"),
    Rule(
        "A-brady-hypotension",
        1,
        "A",
        (Vital("heart_rate", "<", 50), Vital("systolic_bp", "<", 90)),
        SOURCE_A,
        ages=ADULT,
        summary="Bradycardia < 50 with SBP < 90",
    ),
    Rule("A-pacing", 1, "A", (PACING,), SOURCE_A, summary="Bradycardia treated with atropine or pacing"),
    Rule("A-seizure-active", 1, "A", (SEIZURE_ACTIVE,), SOURCE_A, summary="Actively seizing / status epilepticus"),
    Rule(
        "A-anaphylaxis",
        1,
        "A",
        (ALLERGIC, AnyOf((AIRWAY_SWELLING, HYPOTENSION_WORDS, Vital("systolic_bp", "<", 90)))),
        SOURCE_A,
        summary="Anaphylaxis with stridor/airway swelling or hypotension",
    ),
    Rule("A-massive-bleeding", 1, "A", (MASSIVE_BLEEDING,), SOURCE_A, summary="Massive or arterial bleeding"),
    Rule(
        "A-airway-obstruction",
        1,
        "A",
        (CHOKING, CANNOT_VOICE),
        SOURCE_A,
        summary="Choking and unable to speak, cry, cough or breathe, or turning blue",
    ),
    Rule(
        "A-hypoglycemia-altered",
        1,
        "A",
        (Vital("glucose", "<", 60), AnyOf((CONFUSION, UNRESPONSIVE, Vital("gcs", "<", 15)))),
        SOURCE_A,
        summary="Glucose < 60 mg/dL with altered mental status",
    ),
    Rule(
        "A-hypotension-neonate",
        1,
        "A",
        (Vital("systolic_bp", "<", 60),),
        SOURCE_PEDS_HYPOTENSION,
        ages=NEONATE,
        summary="SBP < 60",
    ),
    Rule(
        "A-hypotension-infant",
        1,
        "A",
        (Vital("systolic_bp", "<", 70),),
        SOURCE_PEDS_HYPOTENSION,
        ages=INFANT_1Y,
        summary="SBP < 70",
    ),
    Rule(
        "A-hypotension-toddler",
        1,
        "A",
        (Vital("systolic_bp", "<", 72),),
        SOURCE_PEDS_HYPOTENSION,
        ages=TODDLER_1_3,
        summary="SBP < 72 (70 + 2 x 1 year)",
    ),
    Rule(
        "A-hypotension-child",
        1,
        "A",
        (Vital("systolic_bp", "<", 76),),
        SOURCE_PEDS_HYPOTENSION,
        ages=CHILD,
        summary="SBP < 76 (70 + 2 x 3 years)",
    ),
    # --- Decision point B: high risk, new confusion, severe pain/distress -> at least ESI 2 ------------
    Rule("B-thunderclap", 2, "B", (THUNDERCLAP,), SOURCE_B, summary="Thunderclap / worst headache of life"),
    Rule(
        "B-meningitis",
        2,
        "B",
        (MENINGEAL, _FEVER_ANY),
        SOURCE_B,
        summary="Fever with meningeal signs or petechial rash",
    ),
    Rule(
        "B-chest-pain-cardiac",
        2,
        "B",
        (CHEST_PAIN, AnyOf((CP_FEATURES, CARDIAC_HISTORY))),
        SOURCE_B,
        summary="Chest pain with cardiac features or cardiac history",
    ),
    Rule("B-acs-ecg", 2, "B", (ACS_ECG,), SOURCE_B, summary="STEMI / ST changes / positive troponin"),
    Rule("B-stroke", 2, "B", (STROKE,), SOURCE_B, summary="Stroke signs or a stroke alert / LKW time"),
    Rule("B-si-hi-plan", 2, "B", (SUICIDAL, SI_PLAN), SOURCE_B, summary="Suicidal or homicidal with a plan/intent"),
    Rule("B-suicide-attempt", 2, "B", (SUICIDE_ATTEMPT,), SOURCE_B, summary="Suicide attempt"),
    Rule("B-overdose", 2, "B", (OVERDOSE_EVENT,), SOURCE_B, summary="Overdose or ingestion of medication"),
    Rule("B-sepsis", 2, "B", (SEPSIS,), SOURCE_B, summary="Sepsis named"),
    Rule(
        "B-sepsis-hypotension",
        2,
        "B",
        (_FEVER_ANY, Vital("systolic_bp", "<", 90)),
        SOURCE_B,
        ages=ADULT,
        summary="Fever with SBP < 90",
    ),
    Rule(
        "B-neonate-fever",
        2,
        "B",
        (_FEVER_ANY,),
        SOURCE_PEDS_FEVER,
        ages=NEONATE,
        summary="Neonate 0-28 days with fever >= 38.0 C (measured or reported)",
    ),
    Rule(
        "B-immunocompromised-fever",
        2,
        "B",
        (IMMUNOCOMPROMISED, _FEVER_ANY),
        SOURCE_B,
        summary="Immunocompromised (chemo, transplant, asplenia) with fever",
    ),
    Rule("B-confusion", 2, "B", (CONFUSION,), SOURCE_B, summary="New confusion, lethargy or disorientation"),
    Rule("B-gcs-altered", 2, "B", (Vital("gcs", "<", 15),), SOURCE_B, summary="GCS below 15"),
    Rule("B-seizure-recent", 2, "B", (SEIZURE_RECENT,), SOURCE_B, summary="Postictal, new-onset or repeated seizure"),
    Rule("B-ectopic", 2, "B", (ECTOPIC_NAMED,), SOURCE_B, summary="Ectopic pregnancy suspected"),
    Rule(
        "B-pregnancy-pain-bleeding",
        2,
        "B",
        (PREGNANT, ECTOPIC_SYMPTOM),
        SOURCE_B,
        summary="Pregnant with abdominal/pelvic pain, vaginal bleeding or syncope",
    ),
    Rule("B-preeclampsia", 2, "B", (PREECLAMPSIA,), SOURCE_B, summary="Preeclampsia / eclampsia"),
    Rule(
        "B-pregnancy-severe-hypertension",
        2,
        "B",
        (PREGNANT, AnyOf((Vital("systolic_bp", ">=", 160), Vital("diastolic_bp", ">=", 110)))),
        SOURCE_B,
        summary="Pregnant with BP in the severe range (>= 160 systolic or >= 110 diastolic)",
    ),
    Rule("B-torsion", 2, "B", (TORSION,), SOURCE_B, summary="Testicular pain or torsion signs"),
    Rule("B-aortic-dissection", 2, "B", (AORTIC,), SOURCE_B, summary="Tearing pain to the back / dissection"),
    Rule("B-aaa-pain", 2, "B", (AAA, AAA_SYMPTOM), SOURCE_B, summary="Known or suspected AAA with pain or syncope"),
    Rule("B-dka", 2, "B", (DKA,), SOURCE_B, summary="DKA signs"),
    Rule(
        "B-hyperglycemia-symptomatic",
        2,
        "B",
        (Vital("glucose", ">", 400), HYPERGLYCEMIA_SYMPTOM),
        SOURCE_B,
        summary="Glucose > 400 mg/dL with vomiting, abdominal pain, deep breathing or lethargy",
    ),
    Rule("B-hypoglycemia", 2, "B", (Vital("glucose", "<", 60),), SOURCE_B, summary="Glucose < 60 mg/dL"),
    Rule("B-chemical-eye", 2, "B", (CHEMICAL_EYE,), SOURCE_B, summary="Chemical splash to the eye"),
    Rule(
        "B-head-strike-anticoag",
        2,
        "B",
        (HEAD_STRIKE, ANTICOAGULANT),
        SOURCE_B,
        summary="Head strike on anticoagulant/antiplatelet",
    ),
    Rule("B-trauma-high-energy", 2, "B", (TRAUMA_HIGH_ENERGY,), SOURCE_B, summary="High-energy trauma mechanism"),
    Rule(
        "B-severe-pain-distress",
        2,
        "B",
        (Vital("pain", ">=", 7), DISTRESS_VISIBLE),
        SOURCE_B,
        summary="Pain >= 7/10 with visible distress",
    ),
    Rule("B-near-drowning", 2, "B", (NEAR_DROWNING,), SOURCE_B, summary="Near-drowning / submersion"),
    Rule("B-resp-distress", 2, "B", (RESP_DISTRESS,), SOURCE_B, summary="Respiratory distress, stridor, hypoxia"),
    Rule("B-airway-threat", 2, "B", (AIRWAY_SWELLING,), SOURCE_B, summary="Threatened upper airway"),
    Rule("B-anaphylaxis", 2, "B", (Phrase("anaphylaxis", (r"anaph\w*",)),), SOURCE_B, summary="Anaphylaxis"),
    Rule("B-gi-bleed", 2, "B", (GI_BLEED_UPPER,), SOURCE_B, summary="Hematemesis / coffee-ground emesis"),
    Rule("B-burn-inhalation", 2, "B", (BURN_INHALATION,), SOURCE_B, summary="Inhalation injury or burn >= 20% TBSA"),
    Rule("B-limb-threat", 2, "B", (LIMB_THREAT,), SOURCE_B, summary="Open fracture, pulseless limb, compartment"),
    Rule("B-dangerous-rhythm", 2, "B", (DANGEROUS_RHYTHM,), SOURCE_B, summary="Complete heart block or VT"),
    Rule("B-hypothermia", 2, "B", (Vital("temperature_c", "<", 35.0),), SOURCE_B, summary="Temperature < 35 C"),
    Rule("B-syncope-elderly", 2, "B", (SYNCOPE,), SOURCE_B, ages=ELDERLY, summary="Syncope at 65 or older"),
    Rule(
        "B-syncope-cardiac",
        2,
        "B",
        (SYNCOPE, AnyOf((SYNCOPE_RISK, CHEST_PAIN, CARDIAC_HISTORY, DYSPNEA, Vital("heart_rate", "<", 50)))),
        SOURCE_B,
        summary="Syncope with exertion, palpitations, no warning, chest pain, dyspnea, cardiac history or HR < 50",
    ),
    Rule(
        "B-toxic-ingestion",
        2,
        "B",
        (TOXIC_INGESTION,),
        SOURCE_B,
        summary="Ingestion of a toxic substance, a button battery or magnets, or of 10 or more tablets",
    ),
    Rule("B-sexual-assault", 2, "B", (SEXUAL_ASSAULT,), SOURCE_B, summary="Sexual assault"),
    Rule(
        "B-gi-bleed-unstable",
        2,
        "B",
        (
            LOWER_GI_BLEED,
            AnyOf(
                (
                    ORTHOSTATIC,
                    SYNCOPE,
                    Vital("heart_rate", ">", 100),
                    Vital("systolic_bp", "<", 100),
                )
            ),
        ),
        SOURCE_B,
        summary="Melena or rectal bleeding with lightheadedness, syncope, HR > 100 or SBP < 100",
    ),
    Rule(
        "B-pe-suspected",
        2,
        "B",
        (AnyOf((CHEST_PAIN, DYSPNEA)), PE_RISK),
        SOURCE_B,
        summary="Chest pain or dyspnea with PE risk (DVT, one swollen leg, long travel, surgery, postpartum)",
    ),
    # --- Decision point D: danger-zone vitals by age -> consider ESI 2 ---------------------------------
    Rule("D-infant-hr", 2, "D", (Vital("heart_rate", ">", 180),), SOURCE_D, ages=INFANT, summary="HR > 180"),
    Rule("D-infant-rr", 2, "D", (Vital("resp_rate", ">", 50),), SOURCE_D, ages=INFANT, summary="RR > 50"),
    Rule("D-toddler-hr", 2, "D", (Vital("heart_rate", ">", 160),), SOURCE_D, ages=TODDLER, summary="HR > 160"),
    Rule("D-toddler-rr", 2, "D", (Vital("resp_rate", ">", 40),), SOURCE_D, ages=TODDLER, summary="RR > 40"),
    Rule("D-child-hr", 2, "D", (Vital("heart_rate", ">", 140),), SOURCE_D, ages=CHILD, summary="HR > 140"),
    Rule("D-child-rr", 2, "D", (Vital("resp_rate", ">", 30),), SOURCE_D, ages=CHILD, summary="RR > 30"),
    Rule("D-adult-hr", 2, "D", (Vital("heart_rate", ">", 100),), SOURCE_D, ages=ADULT, summary="HR > 100"),
    Rule("D-adult-rr", 2, "D", (Vital("resp_rate", ">", 20),), SOURCE_D, ages=ADULT, summary="RR > 20"),
    Rule("D-spo2", 2, "D", (Vital("spo2", "<", 92),), SOURCE_D, summary="SpO2 < 92% at any age"),
)

RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


def _validate_table(rules: tuple[Rule, ...]) -> None:
    if len(RULES_BY_ID) != len(rules):
        raise ValueError("duplicate rule ids in the safety table")
    for r in rules:
        expected = 1 if r.point == "A" else 2
        if r.level != expected or not r.id.startswith(f"{r.point}-") or not r.when:
            raise ValueError(f"rule {r.id}: level/decision point/conditions inconsistent")


_validate_table(RULES)


def rules_table() -> str:
    """The table as a markdown document for clinical review."""
    lines = ["| id | ESI <= | point | ages | when | source |", "|---|---|---|---|---|---|"]
    for r in RULES:
        lines.append(f"| {r.id} | {r.level} | {r.point} | {r.ages.label} | {r.summary}: {r.describe()} | {r.source} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Negation and history scope
# ---------------------------------------------------------------------------------------------------

# Clause breaks: sentence ends, separators, contrast words.
_CLAUSE_BREAK = re.compile(
    r"[.!?;](?=\s|$)|[\n|\"\u201c\u201d]|\s[-\u2013\u2014]{1,2}\s|\b(?:but|however|although|though|except|yet|whereas)\b",
    re.IGNORECASE,
)
# Cues before a finding. Pseudo-negations ("no improvement", "not sure", and A findings that are
# themselves negative: "not breathing", "no pulse") are excluded by lookahead.
_PSEUDO_AFTER_NO = (
    r"(?!\s+(?:improvement|relief|change|better|longer|one|response|(?:palpable )?pulses?|respirations?|"
    r"resp(?:iratory)? effort|spontaneous|significant change|"
    r"breathing(?!\s+(?:difficult\w*|problems?|troubles?|issues?|changes?|complaints?)))\b)"
)
_PSEUDO_AFTER_NOT = (
    r"(?!\s+(?:sure|certain|improv\w*|relieved|resolved|better|only|just|responding|responsive|breathing|alert|"
    r"able|tolerating|arousable|reacting|oriented|acting|ruled)\b)"
)
_PRE_CUE = re.compile(
    r"(?<![\w/])(?:"
    r"(?P<nka>no known (?:drug )?allergies|(?-i:NKA|NKDA))|"
    r"(?P<family>(?:family|famly|famliy|fmaily) (?:hx|history|med(?:ical)? history)|fam(?:ily)? hx|(?-i:FHx?|FMHx)|"
    r"(?:mother|father|mom|dad|brother|sister|sibling|grand(?:mother|father|ma|pa)|aunt|uncle|parents?|"
    r"son|daughter|wife|husband|spouse)(?:'s)? (?:hx|history|had|died (?:of|from)|passed (?:away )?(?:of|from)|"
    r"(?:w/|with) (?:a )?(?:hx|history)))"
    r"|(?P<neg>(?:no|No|NO)"
    + _PSEUDO_AFTER_NO
    + r"|not"
    + _PSEUDO_AFTER_NOT
    + r"|never|denies|denied|denying|deny|den(?:ie|ei|i|y|e)s(?:i|e)?|deies|dneies|"
    r"(?:without|w/o)(?! (?:relief|improvement|return|stopping|change))|neg(?:ative)?(?: for)?|free of|absence of|"
    r"ruled out(?: for)?|r/o'd|no evidence of|no signs? of|none|nor)"
    r"|(?P<hist>h/o|hx|history(?= of|\s*:)|(?-i:PMH\w*|PHx|PSH\w*)|past (?:medical |surgical )?history|"
    r"prior(?! to)|previous(?:ly)?|remote|baseline|residual|known|chronic|resolved|"
    r"old(?= (?:CVA|MI|stroke|infarct\w*|fx|fracture|injury|TIA|lacunar)))"
    r"|(?P<allergy>allerg(?:ies|y|ic)(?= to|\s*[:\-])|allergies)"
    r")(?![\w/])",
    re.IGNORECASE,
)
# Anything of these between a cue and a finding ends the cue's scope.
_SCOPE_STOP = re.compile(
    r"(?<!\w)(?:c/o|complains?|complaining|reports?|reporting|states?|stating|presents?|presenting|endorses?|"
    r"endorsing|admits?|now|today|tonight|currently|this (?:am|pm|morning|afternoon|evening)|on arrival|noted|"
    r"positive for|pos for|has|having|then|aside from|apart from|\+)(?!\w)|\+",
    re.IGNORECASE,
)
# A comma segment that opens with one of these is a new statement, not the continuation of a list.
_NEW_STATEMENT = re.compile(
    r"\s*(?:\+|(?:worst|severe\w*|sudden\w*|acute\w*|new|now|more|increas\w*|wors\w*|progressive|positive|pos|"
    r"pt|patient|he|she|they|has|having|with new|still|actively|currently|then|c/o|complains?|reports?|"
    r"no|not|denies|denied|neg|negative|without|w/o|"
    r"states?|endorses?|admits?|presents?|appears?|noted|found|became|started|began|developed|today|tonight|"
    r"this|here|on arrival)\b)",
    re.IGNORECASE,
)
# History lists are diagnoses; a segment opening with a participle or adjective describes today
# ("hx seizures, seizing now", "hx transplant, febrile").
_STATE_START = re.compile(r"\s*\w+(?:ing|ed|ic|ile|ive|ous)\b", re.IGNORECASE)
# A history cue that is an adjective ("known AAA", "chronic cough", "prior MI") qualifies the words that
# follow it, not the next item of a comma list ("known peanut allergic, tongue swelling").
_ADJECTIVE_HISTORY_CUE = re.compile(r"known|remote|prior|previous(?:ly)?|old", re.IGNORECASE)
# Between a history cue and a finding, these mark the finding as new.
_DIAGNOSIS_LIST_CUE = re.compile(r"h/o|hx|history|PMH|PHx|PSH|past|prior|previous|remote", re.IGNORECASE)
_HISTORY_STOP = re.compile(r"(?<!\w)(?:new|acute|recent(?:ly)?|worsening|since)(?!\w)", re.IGNORECASE)
# An observation adjective opening a segment ("no fever, tachypneic", "denies CP, diaphoretic") is a finding
# of the exam, not one more item of the denied list.
_OBSERVED_START = re.compile(r"\s*\w+ic\b", re.IGNORECASE)
_SCOPE_WORDS = 10  # a cue reaches at most this many words forward (lists: "denies CP, SOB, N/V, ...")
_SEGMENT_WORDS = 5  # a list item longer than this is a new statement
_LEAD_WORDS = 3  # words before a finding in its own list item ("denies CP, SOB, any numbness or weakness")
_PRE_WINDOW = 160  # characters of the clause looked at before a finding
_BASELINE = r"(?<!than )(?<!from )(?<!not )(?<!not at )(?<!above )(?<!below )(?<!off )(?<!beyond )baseline"
# Cues after a finding, in its own comma segment (up to 3 words after it) or opening the next one.
_POST_CUE_BODY = (
    r"(?:denied|neg(?:ative)?(?!\s*for)|absent|ruled out|r/o'd|resolved|none (?:today|now|currently|since|recently)|"
    r"not (?:today|now|currently|present|since)|in the past|(?:\d+|several|many|few) (?:yrs?|years?|months?|mos?) ago|"
    r"as an? (?:child|kid|teen\w*|infant)|last (?:year|yr)|in (?:19|20)\d\d|previously|"
    rf"(?:at |is |= |\()?{_BASELINE}|chronic(?:ally)?|since birth|unchanged|"
    r"(?:x|for|over) ?(?:\d+|several|many) ?(?:yrs?|years)|for years)"
)
_POST_CUE_NEAR = re.compile(
    r"^[\s\-:(]*(?:[\w/'&]+[\s\-(]+){0,3}?(?P<cue>" + _POST_CUE_BODY + r")(?!\w)", re.IGNORECASE
)
_POST_CUE_NEXT = re.compile(r"^\s*(?P<cue>" + _POST_CUE_BODY + r")(?!\w)", re.IGNORECASE)
_POST_NEGATION = re.compile(r"denied|neg|absent|ruled out|r/o'd|none|not ", re.IGNORECASE)
_POST_COLON_DENIAL = re.compile(r"^\s*[:=]\s*(?:denies|denied|no|none|neg\w*|absent|\(-\)|-)(?!\w)", re.IGNORECASE)
_FAMILY_POST = re.compile(r"^[\s,]*(?:in|of) (?:his |her |their |the )?(?:mother|father|mom|dad|family)", re.IGNORECASE)

ContextKind = Literal["negated", "history", "family"]


class _Note:
    """A note with its clause boundaries, for scope checks."""

    __slots__ = ("break_ends", "break_starts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        breaks = [(m.start(), m.end()) for m in _CLAUSE_BREAK.finditer(text)]
        self.break_starts = [b[0] for b in breaks]
        self.break_ends = [b[1] for b in breaks]

    def clause(self, start: int, end: int) -> Span:
        i = bisect.bisect_right(self.break_ends, start) - 1
        clause_start = self.break_ends[i] if i >= 0 else 0
        j = bisect.bisect_left(self.break_starts, end)
        clause_end = self.break_starts[j] if j < len(self.break_starts) else len(self.text)
        return clause_start, clause_end


def _in_scope(cue: str, between: str, finding: str, kind: str) -> bool:
    """Whether a cue followed by `between` still reaches the finding."""
    if _SCOPE_STOP.search(between) or len(between.split()) > _SCOPE_WORDS:
        return False
    if kind == "hist" and _HISTORY_STOP.search(between):
        return False
    if any(c.start() > 0 and between[: c.start()].strip() for c in _PRE_CUE.finditer(between)):
        return False  # a later cue starts its own scope ("denies travel, PMH: ..."); "no hx of" stays one cue
    parts = between.split(",")
    if len(parts) == 1:
        return True
    if kind == "hist" and _ADJECTIVE_HISTORY_CUE.fullmatch(cue):
        return False
    if kind == "allergy":  # an allergy list reaches a reaction in brackets: "PCN, sulfa (anaphylaxis)"
        return bool(re.search(r"[(:\-]\s*$", between))
    if len(parts[-1].split()) > _LEAD_WORDS:
        return False
    segments = [*parts[1:-1], parts[-1] + finding]
    for i, segment in enumerate(segments):
        if _NEW_STATEMENT.match(segment) or _OBSERVED_START.match(segment):
            return False
        if kind == "hist" and _DIAGNOSIS_LIST_CUE.match(cue) and _STATE_START.match(segment):
            return False
        if i < len(segments) - 1 and len(segment.split()) > _SEGMENT_WORDS:
            return False
    return True


def _finding_context(note: _Note, start: int, end: int, history_ok: bool = False) -> ContextKind | None:
    """Why a finding at note[start:end] does not count: negated, history, family history; None if it counts."""
    text = note.text
    clause_start, clause_end = note.clause(start, end)
    pre = text[max(clause_start, start - _PRE_WINDOW) : start]
    finding = text[start:end]
    for cue in reversed(list(_PRE_CUE.finditer(pre))):
        kind = cue.lastgroup or "neg"
        if kind == "nka" or (kind == "hist" and history_ok):  # "no known allergies" is a statement of its own
            continue
        if _in_scope(cue.group(0), pre[cue.end() :], finding, kind):
            return "negated" if kind == "neg" else "family" if kind == "family" else "history"
    post = text[end:clause_end]
    if _FAMILY_POST.match(post):
        return "family"
    if _POST_COLON_DENIAL.match(post):
        return "negated"
    first, _, rest = post.partition(",")
    near = _POST_CUE_NEAR.match(first)
    following = _POST_CUE_NEXT.match(rest.partition(",")[0]) if rest else None
    cue_match = near or following
    if cue_match is not None:
        if _POST_NEGATION.match(cue_match.group("cue")):
            return "negated"
        if not history_ok:
            return "history"
    return None


# ---------------------------------------------------------------------------------------------------
# Vitals and age written in the note
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteVital:
    """A vital sign read from the note text (canonical units: degrees C, mg/dL)."""

    key: str
    value: float
    span: Span
    text: str
    history: bool = False  # "baseline sats 88%": read but not used by the rules


_FILL = (
    r"(?:\s*(?:[:=~@]|(?:of|is|was|at|to|up|down|dropped|dropping|drops|as|high|low|only|about|around|approx|"
    r"approximately|in|the|now|initially|reaching|ranging|from|between|noted|per|by|EMS|triage|home|running|"
    r"reads?|reading|checked|measured|rechecked|repeat|went|sitting)\b\.?)){0,6}\s*"
)
_N = r"(\d{1,3}(?:\.\d+)?)s?"  # "130s" reads as 130
_RANGE = rf"{_N}(?:\s*(?:-|\u2013|to)\s*{_N})?"
_PLAUSIBLE: dict[str, tuple[float, float]] = {
    "heart_rate": (20, 300),
    "resp_rate": (0, 80),
    "spo2": (40, 100),
    "temperature_c": (25, 45),
    "systolic_bp": (30, 300),
    "diastolic_bp": (10, 200),
    "pain": (0, 10),
    "gcs": (3, 15),
    "glucose": (10, 2000),
}

_HR_RE = re.compile(
    r"(?<![\w/])(?:(?-i:HR|Hr)|heart ?rate|pulse(?!\s*ox)|hr(?=\s*[:=]\s*\d)|tachycardi(?:c|a)|tachy|"
    r"bradycardi(?:c|a)|brady|(?<=\d )(?-i:P)|(?<=\d, )(?-i:P)|(?<=mmHg )(?-i:P)|(?<= [CF] )(?-i:P))(?![A-Za-z])"
    + _FILL
    + _RANGE
    + r"(?:\s*(?:bpm|beats(?: per minute|/min)?))?(?![\w/%])",
    re.IGNORECASE,
)
_RR_RE = re.compile(
    r"(?<![\w/])(?:RR|resp(?:iratory|iration)?s?\.? ?rate|resp(?:iration)?s?|RespR|tachypn(?:e|o)(?:ic|a)|"
    r"(?<=\d )(?-i:R)|(?<=\d, )(?-i:R)|(?<=mmHg )(?-i:R)|(?<=bpm )(?-i:R)|(?<= [CF] )(?-i:R)|(?<= [CF], )(?-i:R))"
    r"(?![A-Za-z])" + _FILL + _RANGE + r"(?:\s*(?:/min|bpm|breaths(?:/min| per minute)?))?(?![\w/%])",
    re.IGNORECASE,
)
_SPO2_RE = re.compile(
    r"(?<![\w/])(?:SpO2|SaO2|O2 ?sats?|O2 ?saturation|sats?|sat'?ing|satt?ing|saturating|saturation|"
    r"pulse ?ox(?:imetry)?|POx)(?![A-Za-z])" + _FILL + _RANGE + r"\s*%?(?![\w/])",
    re.IGNORECASE,
)
_SPO2_BARE_RE = re.compile(
    r"(?<![\w/.])(?:O2\s+)?(\d{2,3})\s*%\s*(?:on\s+)?(?:RA|room air|r/a|NRB|non-?rebreather|NC|nasal cannula|"
    r"\d+\s*(?:L|lpm)|BiPAP|CPAP|HFNC)(?!\w)",
    re.IGNORECASE,
)
_TEMP_RE = re.compile(
    r"(?<![\w/])(?:(?-i:T)|temp(?:erature)?s?|T ?max|max temp|febrile(?: to)?|(?<!hay )fevers?(?: (?:of|to|up to))?|"
    r"oral temp|rectal(?: temp)?|axillary(?: temp)?|tympanic(?: temp)?)(?![A-Za-z])"
    + _FILL
    + r"(\d{2,3}(?:\.\d+)?)\s*(?:°|deg(?:rees)?)?\s*(?:(?-i:([CF]))(?![A-Za-z]))?(?![\w/%])",
    re.IGNORECASE,
)
_TEMP_BARE_RE = re.compile(
    r"(?<![\w/.])(\d{2,3}\.\d|\d{2,3}(?=\s*°))\s*(?:°|deg(?:rees)?)?\s*(?-i:([CF]))(?![A-Za-z])",
    re.IGNORECASE,
)
_BP_RE = re.compile(
    r"(?<![\w/])(?:BP|B/P|blood pressure|NIBP|hypotensive|hypertensive)(?![A-Za-z])"
    + _FILL
    + r"(\d{2,3})s?\s*/\s*(?:(\d{2,3})s?|(palp\w*|P|dopp\w*))(?![\w/])",
    re.IGNORECASE,
)
_SBP_RE = re.compile(
    r"(?<![\w/])(?:SBP|systolics?(?: BP| pressure)?|hypotensive|hypotension)(?![A-Za-z])"
    + _FILL
    + r"(\d{2,3})s?(?![\w/%])",
    re.IGNORECASE,
)
_BP_BARE_RE = re.compile(r"(?<![\w/.])(\d{2,3})\s*/\s*(?:(\d{2,3})|(palp\w*|P|dopp\w*))(?![\w/])", re.IGNORECASE)
_NOT_DURATION = r"(?!\s*(?:days?|d\b|hrs?|hours?|h\b|weeks?|wks?|min\w*|mo\w*|y(?:rs?|ears?)?\b|x\b|times|yo|%))"
_PAIN_RE = re.compile(
    r"(?<![\w/])(?:pain(?: score| scale| level| rating)?|rates (?:(?:his|her|their|the) )?pain(?: as| at)?)"
    r"(?:\s*(?:[:=]|is|of|at|rated|now|currently|described as))*\s*"
    r"(\d{1,2})(?:\s*[-\u2013]\s*(\d{1,2}))?\+?(?:\s*(?:/|out of)\s*10)?" + _NOT_DURATION + r"(?![\w/])",
    re.IGNORECASE,
)
_PAIN_BARE_RE = re.compile(
    r"(?<![\w/.])(\d{1,2})(?:\s*[-\u2013]\s*(\d{1,2}))?\+?\s*(?:/|out of)\s*10(?![\d/])",
    re.IGNORECASE,
)
_GCS_RE = re.compile(r"(?<![\w/])GCS(?:\s*(?:[:=]|of|is|was|now))*\s*(\d{1,2})(?:\s*T)?(?:\s*/\s*15)?(?![\d/])", re.I)
_GCS_PARTS_RE = re.compile(r"(?<![\w/])GCS\s*(?:of\s*|[:=]\s*)?\(?E\s*(\d)\s*V\s*(\d|T)\s*M\s*(\d)", re.IGNORECASE)
_GLUCOSE_RE = re.compile(
    r"(?<![\w/])(?:BGL?|FSBG|FSBS|FS|CBG|POCT? glucose|glucose|gluc|blood sugar|sugar|(?-i:BS)|accu-?che?c?k|"
    r"glucometer|fingerstick(?: glucose)?)(?![A-Za-z])" + _FILL + r"(?:(\d{1,4}(?:\.\d)?)s?(?![\w/%])|(?-i:(HI|LO))\b)",
    re.IGNORECASE,
)
_VITAL_HISTORY_PRE = re.compile(
    r"(?:baseline|usual(?:ly)?|normally|typical(?:ly)?|goal|target|previous|last (?:visit|admission|time)|"
    r"at discharge)\W+(?:\w+\W+){0,2}$",
    re.IGNORECASE,
)
_VITAL_HISTORY_POST = re.compile(
    r"^\s*(?:\(\s*(?:baseline|usual|normal)\s*\)|at baseline|(?:which is|is|=) (?:(?:his|her|their|pt'?s) )?"
    r"(?:baseline|normal|usual))",
    re.IGNORECASE,
)


def _plausible(key: str, value: float) -> bool:
    low, high = _PLAUSIBLE[key]
    return low <= value <= high


def _temperature_c(value: float, unit: str | None) -> float | None:
    """Celsius from a written temperature; the unit is inferred from the value when not written."""
    if unit is None:
        unit = "F" if value >= 86 else "C"
    if unit.upper() == "F":
        if not 86 <= value <= 113:
            return None
        return round((value - 32) * 5 / 9, 2)
    return value if 30 <= value <= 45 else None


def _glucose_mg_dl(raw: str) -> float | None:
    if raw == "HI":
        return 600.0
    if raw == "LO":
        return 20.0
    value = float(raw)
    if "." in raw or value < 20:  # mmol/L
        value = round(value * 18.0, 1)
    return value


_VITAL_GATES: dict[re.Pattern[str], frozenset[str] | None] = {
    rx: _gate(rx)
    for rx in (
        _HR_RE,
        _RR_RE,
        _SPO2_RE,
        _SPO2_BARE_RE,
        _TEMP_RE,
        _TEMP_BARE_RE,
        _BP_RE,
        _BP_BARE_RE,
        _SBP_RE,
        _PAIN_RE,
        _PAIN_BARE_RE,
        _GCS_RE,
        _GCS_PARTS_RE,
        _GLUCOSE_RE,
    )
}


def parse_note_vitals(note: str) -> list[NoteVital]:
    """Vital signs written in the note ("HR 112", "sats 86% RA", "T 38.6", "temp 101.2F", "BP 70/palp")."""
    return _parse_note_vitals(note, _WordIndex(note))


def _parse_note_vitals(note: str, words: _WordIndex) -> list[NoteVital]:
    found: list[NoteVital] = []

    def scan(regex: re.Pattern[str]) -> Iterator[re.Match[str]]:
        return _matches(regex, _VITAL_GATES[regex], note, words)

    def add(key: str, value: float | None, span: Span) -> None:
        if value is None or not _plausible(key, value):
            return
        start, end = span
        for other in found:  # the same reading matched by a labelled and a bare pattern
            if other.key == key and other.value == value and other.span[0] < end and start < other.span[1]:
                return
        before = re.split(r"[.;|\n]", note[max(0, start - 40) : start])[-1]
        history = bool(_VITAL_HISTORY_PRE.search(before)) or bool(_VITAL_HISTORY_POST.match(note[end : end + 40]))
        found.append(NoteVital(key, value, span, note[start:end], history))

    def numbers(m: re.Match[str], *groups: int) -> Iterable[float]:
        for g in groups:
            if m.group(g) is not None:
                yield float(m.group(g))

    for key, regex in (("heart_rate", _HR_RE), ("resp_rate", _RR_RE), ("spo2", _SPO2_RE)):
        for m in scan(regex):
            for value in numbers(m, 1, 2):
                add(key, value, m.span())
    for m in scan(_SPO2_BARE_RE):
        add("spo2", float(m.group(1)), m.span())
    for m in scan(_TEMP_RE):
        add("temperature_c", _temperature_c(float(m.group(1)), m.group(2)), m.span())
    for m in scan(_TEMP_BARE_RE):
        add("temperature_c", _temperature_c(float(m.group(1)), m.group(2)), m.span())
    for regex in (_BP_RE, _BP_BARE_RE):
        for m in scan(regex):
            systolic = float(m.group(1))
            diastolic = float(m.group(2)) if m.group(2) else None
            if regex is _BP_BARE_RE and not (systolic >= 60 and (diastolic is None or systolic > diastolic >= 20)):
                continue
            add("systolic_bp", systolic, m.span())
            if diastolic is not None:
                add("diastolic_bp", diastolic, (m.start(2), m.end(2)))
    for m in scan(_SBP_RE):
        add("systolic_bp", float(m.group(1)), m.span())
    for regex in (_PAIN_RE, _PAIN_BARE_RE):
        for m in scan(regex):
            for value in numbers(m, 1, 2):
                add("pain", value, m.span())
    for m in scan(_GCS_PARTS_RE):
        verbal = 1 if m.group(2).upper() == "T" else int(m.group(2))
        add("gcs", float(int(m.group(1)) + verbal + int(m.group(3))), m.span())
    for m in scan(_GCS_RE):
        add("gcs", float(m.group(1)), m.span())
    for m in scan(_GLUCOSE_RE):
        add("glucose", _glucose_mg_dl(m.group(1) or m.group(2)), m.span())
    return sorted(found, key=lambda v: (v.span, v.key))


_AGE_RES: tuple[tuple[re.Pattern[str], float], ...] = (
    (
        re.compile(
            r"(?<![\w.])(\d{1,3})\s*-?\s*(?:y(?:ears?|rs?)?\.?\s*-?\s*(?:/\s*o\b|o\b\.?|old)|y\.o\.?|yoa|yo)(?![a-z])",
            re.IGNORECASE,
        ),
        1.0,
    ),
    (
        re.compile(r"(?<![\w.])(\d{1,2})\s*-?\s*(?:mo(?:nths?|s)?|m)\s*-?\s*(?:/\s*o\b|old)", re.IGNORECASE),
        1 / 12,
    ),
    (
        re.compile(
            r"(?<![\w.])(?<!x )(?<!for )(?<!past )(?<!last )(?<!over )(?<!since )(?<!within )(?<!in )(?<!every )"
            r"(?<!after )(?<!about )(?<!~)(\d{1,2})\s*(?:mos?|months?)\b"
            r"(?!\s*(?:ago|prior|hx|history|of|duration|post|since|later|before|earlier|pregnant|gestation|x\b))",
            re.IGNORECASE,
        ),
        1 / 12,
    ),
    (
        re.compile(r"(?<![\w.])(\d{1,2})\s*-?\s*(?:w(?:ee)?ks?)\s*-?\s*(?:/\s*o\b|o\b|old)", re.IGNORECASE),
        7 / _DAYS_PER_YEAR,
    ),
    (
        re.compile(r"(?<![\w.])(\d{1,2})\s*-?\s*(?:d(?:ays?)?)\s*-?\s*(?:/\s*o\b|o\b|old)", re.IGNORECASE),
        1 / _DAYS_PER_YEAR,
    ),
    (re.compile(r"^\W*(?:(?:pt|patient)\s+(?:is\s+)?(?:an?\s+)?)?(\d{1,3})\s*(?-i:[MF])\b", re.IGNORECASE), 1.0),
    (
        re.compile(
            r"(?<![\w.])(\d{1,3})\s*(?:y|yrs?|years?)\.?\s+(?:(?-i:[MF])|male|female|man|woman|boy|girl|m/f)\b",
            re.IGNORECASE,
        ),
        1.0,
    ),
)
_AGE_LABEL_RE = re.compile(
    r"(?<![\w.])age\s*[:=]?\s*(\d{1,3}(?:\.\d)?)\s*(d|days?|wks?|w|weeks?|mos?|months?|m|y|yrs?|years?)?(?![a-z])",
    re.IGNORECASE,
)
_AGE_UNITS = {"d": 1 / _DAYS_PER_YEAR, "w": 7 / _DAYS_PER_YEAR, "m": 1 / 12, "y": 1.0}
_NEWBORN_RE = re.compile(r"(?<!\w)(?:newborn|neonate)(?!\w)", re.IGNORECASE)


def parse_note_age(note: str) -> tuple[float, Span] | None:
    """The patient's age in years from the note ("10 day old", "3 wk old", "82yo", "6 mo", "67M c/o"):
    the first age phrase in the note; "newborn"/"neonate" without a number count as 0 days."""
    best: tuple[float, Span] | None = None
    for regex, scale in _AGE_RES:
        m = regex.search(note)
        if m is not None and (best is None or m.start() < best[1][0]):
            best = (float(m.group(1)) * scale, m.span())
    m = _AGE_LABEL_RE.search(note)
    if m is not None and (best is None or m.start() < best[1][0]):
        unit = (m.group(2) or "y")[0].lower()
        best = (float(m.group(1)) * _AGE_UNITS[unit], m.span())
    if best is None:
        m = _NEWBORN_RE.search(note)
        if m is not None:
            best = (0.0, m.span())
    if best is not None and not 0 <= best[0] < 130:
        return None
    return best


# ---------------------------------------------------------------------------------------------------
# Assessment
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One condition's match: a phrase span in the note, or a vital (structured or written in the note)."""

    kind: Literal["phrase", "vital"]
    span: Span | None
    text: str
    vital_key: str | None = None
    vital_value: float | None = None
    vital_source: VitalSource | None = None


@dataclass(frozen=True)
class FiredRule:
    rule_id: str
    level: int
    decision_point: DecisionPoint
    span: Span | None  # the first evidence in the note; None when only structured vitals fired it
    vital_key: str | None  # the first vital evidence, if any
    vital_value: float | None
    evidence: tuple[Evidence, ...]
    source: str


@dataclass(frozen=True)
class VitalFlag:
    """A vital value past a threshold of the table (for the patient's age band), whether or not its rule fired."""

    key: str
    value: float
    comparison: Comparison
    threshold: float
    source: VitalSource
    span: Span | None  # in the note, for source "note"


@dataclass(frozen=True)
class SafetyAssessment:
    fired: tuple[FiredRule, ...]
    required_level: int | None  # the highest acuity (lowest ESI number) any fired rule requires
    vitals_out_of_range: tuple[VitalFlag, ...]
    age_years: float | None
    age_source: VitalSource | None
    note_vitals: tuple[NoteVital, ...]
    ignored_vitals: tuple[str, ...] = ()  # structured values dropped as implausible (e.g. spo2 0)

    @property
    def fired_ids(self) -> tuple[str, ...]:
        return tuple(f.rule_id for f in self.fired)


@dataclass
class _Context:
    note: _Note
    age_years: float | None
    vitals: dict[str, list[Evidence]]  # key -> values, structured first
    index: _WordIndex  # word starts of the note, for the pattern gates
    phrase_cache: dict[int, Evidence | None] = field(default_factory=dict)
    vital_cache: dict[int, list[Evidence]] = field(default_factory=dict)


def _structured_vitals(inp: TriageInput) -> tuple[dict[str, list[Evidence]], list[str]]:
    out: dict[str, list[Evidence]] = {}
    ignored: list[str] = []
    for key, value in inp.vitals.items():
        if value is None:
            continue
        if key == "temperature_c" and 86 <= value <= 113:  # a Fahrenheit reading in the Celsius field
            value = round((value - 32) * 5 / 9, 2)
        if not _plausible(key, value) or (value == 0 and key != "pain"):
            ignored.append(key)
            continue
        out.setdefault(key, []).append(Evidence("vital", None, f"{key}={value:g}", key, value, "structured"))
    return out, ignored


def _phrase_evidence(phrase: Phrase, ctx: _Context) -> Evidence | None:
    cache_key = id(phrase)
    if cache_key in ctx.phrase_cache:
        return ctx.phrase_cache[cache_key]
    result: Evidence | None = None
    for m in _matches(phrase.regex, phrase.gate, ctx.note.text, ctx.index):
        if _finding_context(ctx.note, m.start(), m.end(), phrase.history_ok) is None:
            result = Evidence("phrase", m.span(), m.group(0))
            break
    ctx.phrase_cache[cache_key] = result
    return result


def _vital_hits(vital: Vital, ctx: _Context) -> list[Evidence]:
    hits = ctx.vital_cache.get(id(vital))
    if hits is None:
        hits = [e for e in ctx.vitals.get(vital.key, ()) if e.vital_value is not None and vital.holds(e.vital_value)]
        ctx.vital_cache[id(vital)] = hits
    return hits


def _condition_evidence(cond: Condition, ctx: _Context) -> Evidence | None:
    if isinstance(cond, Phrase):
        return _phrase_evidence(cond, ctx)
    if isinstance(cond, Vital):
        hits = _vital_hits(cond, ctx)
        return hits[0] if hits else None
    for option in cond.options:
        evidence = _condition_evidence(option, ctx)
        if evidence is not None:
            return evidence
    return None


def _vitals_in(cond: Condition) -> Iterable[Vital]:
    if isinstance(cond, Vital):
        yield cond
    elif isinstance(cond, AnyOf):
        for option in cond.options:
            yield from _vitals_in(option)


# Every (vital threshold, age band) in the table, for the out-of-range report.
_VITAL_CHECKS: tuple[tuple[Vital, AgeBand], ...] = tuple(
    dict.fromkeys((v, r.ages) for r in RULES for c in r.when for v in _vitals_in(c))
)


def assess(inp: TriageInput) -> SafetyAssessment:
    """Run every rule over one encounter: structured fields first, the note's own vitals and age as fallback."""
    note = _Note(inp.note)
    index = _WordIndex(inp.note)
    note_vitals = _parse_note_vitals(inp.note, index)
    vitals, ignored = _structured_vitals(inp)
    for nv in note_vitals:
        if not nv.history:
            vitals.setdefault(nv.key, []).append(Evidence("vital", nv.span, nv.text, nv.key, nv.value, "note"))

    age_source: VitalSource | None = None
    age = inp.age_years
    if age is not None:
        age_source = "structured"
    else:
        parsed = parse_note_age(inp.note)
        if parsed is not None:
            age, age_source = parsed[0], "note"

    ctx = _Context(note=note, age_years=age, vitals=vitals, index=index)
    fired: list[FiredRule] = []
    for rule in RULES:
        if not rule.ages.contains(age):
            continue
        evidence: list[Evidence] = []
        for cond in rule.when:
            found = _condition_evidence(cond, ctx)
            if found is None:
                break
            evidence.append(found)
        else:
            first_span = next((e.span for e in evidence if e.span is not None), None)
            first_vital = next((e for e in evidence if e.kind == "vital"), None)
            fired.append(
                FiredRule(
                    rule_id=rule.id,
                    level=rule.level,
                    decision_point=rule.point,
                    span=first_span,
                    vital_key=first_vital.vital_key if first_vital else None,
                    vital_value=first_vital.vital_value if first_vital else None,
                    evidence=tuple(evidence),
                    source=rule.source,
                )
            )

    flags: dict[tuple[str, float, str, float, str, Span | None], VitalFlag] = {}
    for vital, band in _VITAL_CHECKS:
        if not band.contains(age):
            continue
        for hit in _vital_hits(vital, ctx):
            assert hit.vital_value is not None and hit.vital_source is not None
            flag = VitalFlag(vital.key, hit.vital_value, vital.op, vital.threshold, hit.vital_source, hit.span)
            flags.setdefault((flag.key, flag.value, flag.comparison, flag.threshold, flag.source, flag.span), flag)

    return SafetyAssessment(
        fired=tuple(fired),
        required_level=min((f.level for f in fired), default=None),
        vitals_out_of_range=tuple(flags.values()),
        age_years=age,
        age_source=age_source,
        note_vitals=tuple(note_vitals),
        ignored_vitals=tuple(ignored),
    )


def apply(prediction_level: int, assessment: SafetyAssessment) -> tuple[int, bool]:
    """The final ESI level: the model's, raised to the net's required level when that is more acute.

    Never returns a higher (less acute) number than `prediction_level`."""
    if prediction_level not in ESI_LEVELS:
        raise ValueError(f"ESI level must be 1-5, got {prediction_level}")
    required = assessment.required_level
    if required is None or required >= prediction_level:
        return prediction_level, False
    return required, True
