"""Development set for the triage safety net: where rules are designed and checked, never the evaluation sets.

    python -m training.triage_dev --model models/triage [--misses] [--cache DIR]

The safety net's rules may be looked at, debugged and extended only against this set. The evaluation
sets of `training.evaluate_triage` (the test split, seed 9; the fresh set, seed 41; the hand-written
notes of `training/data/triage_handwritten.jsonl`) are never read for misses, rule design or threshold
choice. The development set is:

- synthetic: `generate(DEV_N, seed, split)` for each seed in `DEV_SEEDS` and both template splits
  (seeds used nowhere else in the project);
- hand-written: `training/data/triage_dev_notes.jsonl` (`training.handwritten.load_dev_notes`),
  notes written for development in lay, shorthand, misspelled, paediatric, geriatric and non-native
  phrasing. Development data only: never mixed into the hand-written evaluation set.

The model's own levels do not depend on the rules, so they are computed once per set and cached
(`--cache`, keyed by the notes' hash); the net is then re-applied on every run, which takes seconds.
Prints, per set and pooled, the model alone and with the net (same metrics as the evaluation), and
with `--misses` every ESI 1-2 note the net leaves at a less urgent level and every ESI 4-5 note it
raises to 1-2, with the rules that fired.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from engine import triage_safety
from engine.triage_input import TriageInput
from engine.triage_runner import load_triage
from training import served
from training.evaluate_triage import handwritten_inputs
from training.handwritten import load_dev_notes
from training.train_triage import classification_metrics, label_index
from training.triage_data import generate

Labels = npt.NDArray[np.int64]
DEV_SEEDS = (61, 67, 71)
DEV_SPLITS = ("test", "train")
DEV_N = 1000
# Seeds the evaluation, training and benchmarks use: a development seed must be none of them.
RESERVED_SEEDS = frozenset({7, 8, 9, 41, 55, 77})


@dataclass(frozen=True)
class DevSet:
    name: str
    y_true: Labels
    inputs: list[TriageInput]


def dev_sets(n: int = DEV_N, include_notes: bool = True) -> list[DevSet]:
    """The synthetic development sets (every seed, both splits) and the hand-written development notes."""
    assert not RESERVED_SEEDS & set(DEV_SEEDS)
    sets = []
    for seed in DEV_SEEDS:
        for split in DEV_SPLITS:
            examples = generate(n, seed, split)  # type: ignore[arg-type]
            sets.append(DevSet(f"synthetic seed {seed} {split}", label_index(examples), served.triage_inputs(examples)))
    if include_notes:
        notes = load_dev_notes()
        sets.append(DevSet("hand-written development notes", np.array([n.esi - 1 for n in notes]),
                           handwritten_inputs(notes)))
    return sets


def _key(inputs: Sequence[TriageInput]) -> str:
    digest = hashlib.sha256()
    for inp in inputs:
        digest.update(repr((inp.note, inp.age_years, inp.sex, sorted(inp.vitals.items()), inp.arrival_mode)).encode())
    return digest.hexdigest()[:16]


def model_levels(model_dir: Path, inputs: Sequence[TriageInput], cache: Path | None) -> Labels:
    """The model's own label indices (before the net), from the cache when the same notes were run before."""
    path = None if cache is None else cache / f"{_key(inputs)}.npy"
    if path is not None and path.exists():
        return np.asarray(np.load(path), dtype=np.int64)
    runner = load_triage(model_dir, device="cpu", precision="fp32", safety_net=False)
    levels = np.array([p.label_index for p in runner.predict(list(inputs))], dtype=np.int64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, levels)
    return levels


def with_net(levels: Labels, inputs: Sequence[TriageInput]) -> tuple[Labels, list[tuple[str, ...]]]:
    """Label indices raised by the net, and the rules that fired on each note."""
    out, fired = [], []
    for level, inp in zip(levels, inputs, strict=True):
        assessment = triage_safety.assess(inp)
        out.append(triage_safety.apply(int(level) + 1, assessment)[0] - 1)
        fired.append(assessment.fired_ids)
    return np.array(out, dtype=np.int64), fired


def _line(name: str, y_true: Labels, y_pred: Labels) -> str:
    m = classification_metrics(y_true, y_pred)
    return (f"  {name:<12} ESI1-2->4-5 {m['under_triage_n']:>3}/{m['urgent_n']:<4} "
            f"->less urgent {m['under_triage_any_rate']:6.1%} ({m['under_triage_any_n']:>3})  "
            f"ESI4-5->1-2 {m['over_triage_rate']:6.1%} ({m['over_triage_n']:>3}/{m['minor_n']:<4}) "
            f"macro-F1 {m['macro_f1']:.3f} acc {m['accuracy']:.3f}")


def report(model_dir: Path, sets: Sequence[DevSet], cache: Path | None, misses: bool) -> str:
    lines = []
    pooled: dict[str, list[Labels]] = {"true": [], "model": [], "net": []}
    for block in sets:
        model = model_levels(model_dir, block.inputs, cache)
        net, fired = with_net(model, block.inputs)
        pooled["true"].append(block.y_true)
        pooled["model"].append(model)
        pooled["net"].append(net)
        lines.append(f"{block.name} ({len(block.inputs)} notes)")
        lines.append(_line("model alone", block.y_true, model))
        lines.append(_line("model + net", block.y_true, net))
        if misses:
            for i, (t, p) in enumerate(zip(block.y_true, net, strict=True)):
                under = t <= 1 and p > t
                over = t >= 3 and p <= 1
                if under or over:
                    kind = "UNDER" if under else "OVER"
                    inp = block.inputs[i]
                    lines.append(f"    {kind} #{i} true ESI {t + 1} -> {p + 1} (model {model[i] + 1}) "
                                 f"age {inp.age_years} vitals {inp.vitals} fired {list(fired[i])}")
                    lines.append(f"      {inp.note!r}")
    y_true, model, net = (np.concatenate(pooled[k]) for k in ("true", "model", "net"))
    lines.append(f"pooled ({len(y_true)} notes)")
    lines.append(_line("model alone", y_true, model))
    lines.append(_line("model + net", y_true, net))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/triage"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/inferq-triage-dev"),
                        help="where the model's own levels are kept between runs")
    parser.add_argument("--n", type=int, default=DEV_N)
    parser.add_argument("--misses", action="store_true")
    parser.add_argument("--no-notes", action="store_true", help="synthetic sets only")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(report(args.model, dev_sets(args.n, not args.no_notes), args.cache, args.misses))


if __name__ == "__main__":
    main()
