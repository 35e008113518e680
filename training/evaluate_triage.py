"""Triage evaluation with under-triage first: the model alone, with its safety net, and the baselines.

    python -m training.evaluate_triage --model models/triage [--out models/triage/evaluation.json]

Three sets, reported separately:

- `synthetic test`: the held-out test split of the generator (`train_triage.make_splits`: phrasing
  templates never seen in training). The safety net's first rules were debugged while looking at
  notes drawn from the same facts (seed 9), so its figures with the net are optimistic; later rules
  were designed on the development set of `training.triage_dev` only;
- `synthetic fresh`: `generate(2000, FRESH_SEED, "test")`, drawn for this report and looked at by
  nobody while the model or the rules were made;
- `handwritten`: `training/data/triage_handwritten.jsonl`, 180 notes written by hand in styles the
  generator does not produce. Evaluation only: nothing is trained, tuned or chosen on it.

None of the three is read for misses, rule design or threshold choice; that is what the development
set is for (`python -m training.triage_dev --misses`). The report is written to
`<model>/evaluation.json` (or `--out`) and its tables printed in the card's format.

Every input is built as a worker builds it (`training.served`). For each set: the model alone (its
argmax), the model with the clinical safety net (`engine.triage_safety`, what a worker serves), the
TF-IDF + LR baseline and the TF-IDF + numbers + LR baseline (both fitted on the training split), each
baseline also with the net. Metrics: ESI 1-2 predicted 4-5 (must be 0), ESI 1-2 predicted any less
urgent level (goal <= 5 %), ESI 4-5 predicted 1-2 (over-triage, goal <= 10 %), macro-F1, exact and
within-one accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import torch

from contracts import TriageRequest, parse_request
from engine import triage_safety
from engine.triage_input import TriageInput, format_triage_text
from engine.triage_runner import load_triage
from training import served
from training.handwritten import HandwrittenNote, load_handwritten
from training.train_triage import (
    TrainConfig,
    classification_metrics,
    fit_baseline,
    fit_baseline_structured,
    label_index,
    make_splits,
)
from training.triage_data import TriageExample, generate
from worker.adapters import triage_input

Labels = npt.NDArray[np.int64]
FRESH_SEED = 41
# The figures the card leads with, in this order.
HEADLINE = ("under_triage_rate", "under_triage_any_rate", "over_triage_rate", "macro_f1", "accuracy",
            "within_one_accuracy")


def handwritten_inputs(notes: Sequence[HandwrittenNote]) -> list[TriageInput]:
    """The hand-written notes as a producer would send them, converted as a worker converts them."""
    inputs = []
    for note in notes:
        payload: dict[str, Any] = {"tenant": "evaluation", "note": note.note}
        if note.age is not None:
            payload["age"] = note.age
        if note.sex:
            payload["sex"] = note.sex
        if note.vitals:
            payload["vitals"] = {k: (int(v) if float(v).is_integer() else v) for k, v in note.vitals.items()}
        if note.arrival_mode:
            payload["arrival_mode"] = note.arrival_mode
        request = parse_request("triage", orjson.loads(orjson.dumps(payload)))
        assert isinstance(request, TriageRequest)
        inputs.append(triage_input(request))
    return inputs


def with_net(levels: Labels, inputs: Sequence[TriageInput]) -> Labels:
    """Label indices (0 = ESI 1) raised by the safety net where a rule requires it."""
    return np.array([triage_safety.apply(int(level) + 1, triage_safety.assess(inp))[0] - 1
                     for level, inp in zip(levels, inputs, strict=True)])


def _row(y_true: Labels, y_pred: Labels) -> dict[str, Any]:
    return classification_metrics(y_true, y_pred)


def evaluate_set(name: str, y_true: Labels, inputs: Sequence[TriageInput], model_dir: Path,
                 baselines: dict[str, Callable[[Sequence[TriageInput]], Labels]]) -> dict[str, Any]:
    runner = load_triage(model_dir, device="cpu", precision="fp32")
    started = time.perf_counter()
    predictions = runner.predict(list(inputs))
    seconds = time.perf_counter() - started
    model_alone = np.array([p.model_label_index for p in predictions])
    served_levels = np.array([p.label_index for p in predictions])
    rows: dict[str, Any] = {
        "model alone": _row(y_true, model_alone),
        "model + safety net (served)": _row(y_true, served_levels),
    }
    for baseline, predict in baselines.items():
        levels = predict(inputs)
        rows[baseline] = _row(y_true, levels)
        rows[f"{baseline} + safety net"] = _row(y_true, with_net(levels, inputs))
    fired = [p for p in predictions if p.net_changed]
    return {
        "set": name,
        "n": int(len(y_true)),
        "rows": rows,
        "net_changed": len(fired),
        "net_changed_correctly": int(sum(p.label_index == t for p, t in zip(predictions, y_true, strict=True)
                                         if p.net_changed)),
        "seconds_model_and_net": round(seconds, 1),
    }


def _text_baselines(cfg: TrainConfig, train: list[TriageExample], val: list[TriageExample]
                    ) -> dict[str, Callable[[Sequence[TriageInput]], Labels]]:
    text_model, _ = fit_baseline(train, val)
    predict_structured, _ = fit_baseline_structured(train, val, text_model)

    def text_only(inputs: Sequence[TriageInput]) -> Labels:
        return np.asarray(text_model.predict([format_triage_text(i) for i in inputs]))

    def with_numbers(inputs: Sequence[TriageInput]) -> Labels:
        return np.asarray(predict_structured(list(inputs)))

    return {"TF-IDF + LR": text_only, "TF-IDF + numbers + LR": with_numbers}


def run(model_dir: Path, cfg: TrainConfig) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    splits = make_splits(cfg)
    baselines = _text_baselines(cfg, splits.train, splits.val)
    notes = load_handwritten()
    fresh = generate(2000, FRESH_SEED, "test")
    sets = [
        evaluate_set("synthetic test (held-out templates, seed 9)", label_index(splits.test),
                     served.triage_inputs(splits.test), model_dir, baselines),
        evaluate_set(f"synthetic fresh (held-out templates, seed {FRESH_SEED})", label_index(fresh),
                     served.triage_inputs(fresh), model_dir, baselines),
        evaluate_set("handwritten", np.array([n.esi - 1 for n in notes]), handwritten_inputs(notes),
                     model_dir, baselines),
    ]
    return {"model_dir": str(model_dir), "sets": sets}


def table(report: dict[str, Any]) -> str:
    """The card's tables: one per set, the headline metrics per row."""
    lines = []
    for block in report["sets"]:
        lines.append(f"\n**{block['set']}** ({block['n']} notes; the net changed {block['net_changed']} levels, "
                     f"{block['net_changed_correctly']} of them to the true level)\n")
        lines.append("| model | ESI 1–2 → 4–5 | ESI 1–2 → less urgent | ESI 4–5 → 1–2 | macro-F1 | accuracy | ±1 |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for name, m in block["rows"].items():
            lines.append(
                f"| {name} | {m['under_triage_n']} / {m['urgent_n']} | {m['under_triage_any_rate']:.1%} "
                f"({m['under_triage_any_n']}) | {m['over_triage_rate']:.1%} ({m['over_triage_n']} / {m['minor_n']}) "
                f"| {m['macro_f1']:.3f} | {m['accuracy']:.3f} | {m['within_one_accuracy']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/triage"))
    parser.add_argument("--out", type=Path, default=None, help="default: <model>/evaluation.json")
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    args = parser.parse_args(argv)
    cfg = TrainConfig(out=args.model, threads=args.threads)
    report = run(args.model, cfg)
    out = args.out or args.model / "evaluation.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


if __name__ == "__main__":
    main()
