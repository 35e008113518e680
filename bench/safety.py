"""What the clinical safety net and the explanation cost a triage task, in one run.

    .venv/bin/python bench/safety.py [--notes 1000] [--threads 1] [--rounds 3]

The shipped triage model through its runner (prepare: render, tokenize, chunk, and with the net
`engine.triage_safety.assess`; then the planned forward passes), on generated notes of the held-out
template split, with the net off and on, alternating rounds; then building the contract result with
and without the explanation (`worker.adapters.triage_result`, `without_explanation`). Prints the
best round of each and the ratios. The net's work runs at preparation, on the preparer thread, so
on a worker it also overlaps nothing that the forward pass needs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from engine.triage_runner import load_triage  # noqa: E402
from training import served  # noqa: E402
from training.triage_data import generate  # noqa: E402
from worker.adapters import triage_result, without_explanation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inputs = served.triage_inputs(generate(args.notes, 77, "test"))
    runners = {net: load_triage(REPO / "models" / "triage", device="cpu", precision="fp32", safety_net=net)
               for net in (False, True)}
    best = {False: float("inf"), True: float("inf")}
    for _ in range(args.rounds):
        for net, runner in runners.items():
            started = time.perf_counter()
            predictions = runner.predict(inputs)
            best[net] = min(best[net], time.perf_counter() - started)
    predictions = runners[True].predict(inputs)
    timings = {}
    for explain in (False, True):
        started = time.perf_counter()
        for prediction in predictions:
            result = triage_result(prediction)
            if not explain:
                without_explanation(result)
        timings[explain] = time.perf_counter() - started
    changed = sum(p.net_changed for p in predictions)
    off, on = best[False], best[True]
    print(f"{args.notes} notes, {args.threads} thread(s), best of {args.rounds} rounds")
    print(f"  runner, net off : {off:7.2f} s  ({args.notes / off:6.1f} notes/s)")
    print(f"  runner, net on  : {on:7.2f} s  ({args.notes / on:6.1f} notes/s)   net adds {on / off - 1:+.1%}")
    print(f"  result without explanation: {timings[False] * 1e6 / args.notes:6.1f} us/note; "
          f"with: {timings[True] * 1e6 / args.notes:6.1f} us/note ({timings[True] / off:.2%} of the runner time)")
    print(f"  the net changed {changed} of {args.notes} levels")


if __name__ == "__main__":
    main()
