"""Bytes-level fuzzing of the lane streams against real worker processes, CI size.

At least 10,000 entries drawn by hypothesis (`tests/fuzz_entries.py`: arbitrary bytes in any field,
missing and extra fields, non-UTF-8, raw and escaped surrogates, huge values, deep nesting, NaN and
Infinity, unknown task names, forged Celery envelopes and headers), a few MiB-sized ones, and a few
hundred valid triage and fraud tasks, interleaved and XADDed straight into both lanes, against two
`python -m worker.app` processes serving both kinds. Then: no worker exited (each is restarted and
counted if it does), both are live and ready, the lanes are empty with nothing pending, every entry
with a usable id has exactly one result with the documented status and code on the documented
stream, every other one exactly one dead letter with its exact raw bytes and a reason, and every
valid task's result agrees with the same task computed alone in this process.

The run is deterministic for a seed (`INFERQ_FUZZ_SEED`, printed); `INFERQ_FUZZ_ENTRIES` changes the
size. `bench/fuzz.py` is the full run with the same generator and oracle.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fuzz_entries import run_fuzz

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = int(os.environ.get("INFERQ_FUZZ_SEED", "20261202"))
N_FUZZ = int(os.environ.get("INFERQ_FUZZ_ENTRIES", "10000"))
N_HUGE = 10  # one of each huge form (fuzz_entries.HUGE_FORMS)
N_FRAUD = 240  # valid fraud tasks (short histories: fast to compute)
N_TRIAGE = 16  # valid triage notes (the shortest of the generator's; ~12 ms each on one core)


@pytest.mark.timeout(420)
def test_fuzzed_entries_are_answered_or_dead_lettered(redis_url: str, tmp_path: Path) -> None:
    print(f"\nfuzz seed {SEED} (set INFERQ_FUZZ_SEED to replay), {N_FUZZ} fuzz entries")
    run = run_fuzz(redis_url, tmp_path, n_fuzz=N_FUZZ, seed=SEED, n_huge=N_HUGE, n_fraud=N_FRAUD,
                   n_triage=N_TRIAGE, wait_s=150.0)
    print(run.describe())
    assert len(run.entries) >= N_FUZZ + N_HUGE + N_FRAUD + N_TRIAGE
    assert run.restarts == 0, "\n".join(run.exits)
    assert all(running and live and ready for _, running, live, ready in run.alive_ready), run.alive_ready
    assert run.drained, f"lanes not drained: {run.lanes}"
    assert not run.report.failures, f"{len(run.report.failures)} oracle failures:\n" + "\n".join(
        run.report.failures[:40])
    assert run.report.references_checked >= N_FRAUD + N_TRIAGE
