"""CPU cost of preparing one fraud task, this tree against a baseline commit, in one run.

    .venv/bin/python bench/prepare.py [--baseline REV] [--tasks 200] [--rounds 3]

The worker's prepare path for a fraud task, stage by stage, per task: decode (orjson, as the
ingress does), validate (`parse_request` on the decoded object), convert (`worker.adapters.fraud_input`;
`FraudModel.engine_input` in trees from before the adapters)
and featurize (`engine.fraud_features.featurize`); plus, for reference, validation straight from
the JSON bytes. Two workloads: the simulator's mix of history lengths and 128-event histories.

The baseline's `contracts/`, `engine/` and `worker/` are taken from `git archive REV`; each tree
is measured in its own process (the packages share names), the two alternating round by round so
that load from other processes hits both alike. A figure is the best round's median of several
passes over all tasks, on one torch thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The last commit before fraud histories were validated into dicts and handed to the engine as columns.
DEFAULT_BASELINE = "f68b89448534db444a33dbb6e185e35eaad424f0"
STAGES = ("decode", "validate", "convert", "featurize")
PASSES = 5  # passes over all tasks per round; the median pass is the round's figure


def _workloads(tasks: int) -> dict[str, list[bytes]]:
    sys.path.insert(0, str(REPO))
    import orjson

    from training import samples
    from training.fraud_sim import FraudSimulator, SimConfig

    def requests(config: SimConfig) -> list[bytes]:
        examples = FraudSimulator(config).examples(tasks)
        return [orjson.dumps(samples.fraud_request(ex.input, "bench-issuer", age_s=60.0)) for ex in examples]

    return {
        "simulator mix": requests(SimConfig(seed=1)),
        "128 events": requests(SimConfig(seed=2, lengths=((128, 128, 1.0),))),
    }


def _measure(bodies: list[bytes]) -> dict[str, float]:
    """Per-task ms of each stage in this process's tree, median of PASSES passes."""
    import orjson
    import torch

    from contracts import parse_request
    from engine.fraud_features import featurize

    convert: Any
    try:
        from worker.adapters import fraud_input as convert
    except ImportError:  # a baseline from before worker/adapters.py: the same step lived on FraudModel
        from worker.models import FraudModel

        convert = FraudModel(runner=None, review_threshold=0.5, decline_threshold=0.9).engine_input

    torch.set_num_threads(1)

    def timed(fn: Any, items: list[Any]) -> tuple[float, list[Any]]:
        runs, out = [], []
        for _ in range(PASSES):
            start = time.perf_counter()
            out = [fn(item) for item in items]
            runs.append(time.perf_counter() - start)
        return statistics.median(runs) / len(items) * 1e3, out

    figures: dict[str, float] = {}
    figures["decode"], decoded = timed(orjson.loads, bodies)
    figures["validate"], requests = timed(lambda data: parse_request("fraud", data), decoded)
    figures["convert"], inputs = timed(convert, requests)
    figures["featurize"], _ = timed(featurize, inputs)
    figures["validate from bytes"], _ = timed(lambda data: parse_request("fraud", data), bodies)
    return figures


def _child(workload_file: str) -> None:
    workloads = json.loads(Path(workload_file).read_text())
    figures = {name: _measure([b.encode() for b in bodies]) for name, bodies in workloads.items()}
    print(json.dumps(figures))


def _baseline_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", rev, "contracts", "engine", "worker"], cwd=REPO, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _run_in(tree: Path, workload_file: Path) -> dict[str, dict[str, float]]:
    out = subprocess.run(
        [sys.executable, "-P", __file__, "--child", str(workload_file)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},  # -P: bench/engine.py would shadow engine/
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    figures: dict[str, dict[str, float]] = json.loads(out)
    return figures


def _best(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {w: {s: min(r[w][s] for r in rounds) for s in rounds[0][w]} for w in rounds[0]}


def _report(workload: str, events: float, before: dict[str, float], after: dict[str, float]) -> None:
    print(f"\n{workload} ({events:.0f} events per task), ms per task")
    print(f"  {'stage':<22}{'baseline':>10}{'this tree':>11}{'ratio':>8}")
    rows = [*STAGES, "total", "validate from bytes"]
    before = {**before, "total": sum(before[s] for s in STAGES)}
    after = {**after, "total": sum(after[s] for s in STAGES)}
    for stage in rows:
        print(f"  {stage:<22}{before[stage]:>10.3f}{after[stage]:>11.3f}{after[stage] / before[stage]:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare against")
    parser.add_argument("--tasks", type=int, default=200, help="fraud tasks per workload")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per tree")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    workloads = _workloads(args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        workload_file = Path(tmp) / "workloads.json"
        workload_file.write_text(json.dumps({k: [b.decode() for b in v] for k, v in workloads.items()}))
        baseline = _baseline_tree(args.baseline, Path(tmp) / "baseline")
        before, after = [], []
        for _ in range(args.rounds):
            before.append(_run_in(baseline, workload_file))
            after.append(_run_in(REPO, workload_file))
    print(f"baseline {args.baseline[:12]} against this tree; {args.tasks} tasks per workload, best of {args.rounds}")
    for name, bodies in workloads.items():
        events = statistics.mean(body.count(b'"timestamp"') for body in bodies)
        _report(name, events, _best(before)[name], _best(after)[name])


if __name__ == "__main__":
    main()
