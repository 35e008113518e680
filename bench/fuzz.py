"""Bytes-level fuzzing of the lane streams, the full run: tests/test_fuzz.py at 100,000 entries.

    .venv/bin/python bench/fuzz.py [--entries 100000] [--seed 20261202] [--redis-url URL | --embedded]
                                   [--huge 40] [--fraud 2000] [--triage 100] [--workers 2] [--duplicates]

The same generator and oracle as the CI test (`tests/fuzz_entries.py`): hypothesis draws the fuzz entries
(arbitrary bytes in any field, missing and extra fields, non-UTF-8, raw and escaped surrogates, deep
nesting, NaN and Infinity, huge numbers, unknown task names, forged Celery envelopes and headers, forged
`origin`/`prior_deliveries`/signature fields), the seeded random adds MiB-sized entries, and real triage
notes and fraud requests are interleaved; all of them are XADDed straight into both lanes against real
worker processes (`python -m worker.app`, both kinds, both lanes). It prints the counts per class and per
outcome, the workers' restarts (a worker that exits is restarted and counted; there must be none), the
time each phase took, and every oracle failure; it exits non-zero when anything failed.

`--duplicates` adds entries that name a field twice (Redis keeps both pairs, the worker's reader keeps
the last, so a dead letter's `raw` loses the first): a known bug, off by default.

Without `--redis-url` it claims a free database index of the Redis at 127.0.0.1:6379 the way the test
suite does, or starts an embedded Valkey when none answers (`--embedded`: always, so that a run of
hundreds of MB stays off a shared server). The database is flushed before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import redis  # noqa: E402
from fuzz_entries import CLASSES, run_fuzz  # noqa: E402


def _database(url: str | None, own_server: bool) -> contextlib.AbstractContextManager[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import claimed_database

    return claimed_database(url, own_server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="fuzz entries (besides huge and valid)")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--huge", type=int, default=40, help="MiB-sized entries")
    parser.add_argument("--fraud", type=int, default=2000, help="valid fraud tasks (short histories)")
    parser.add_argument("--triage", type=int, default=100, help="valid triage notes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--wait", type=float, default=1500.0, help="longest wait for the lanes to drain (s)")
    parser.add_argument("--duplicates", action="store_true", help="add entries that name a field twice")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--embedded", action="store_true", help="run an embedded Valkey of its own")
    args = parser.parse_args(argv)
    started = time.time()
    print(f"fuzz: seed {args.seed}, {args.entries} fuzz entries in {len(CLASSES)} classes, {args.huge} huge, "
          f"{args.fraud} fraud + {args.triage} triage valid tasks, {args.workers} workers", flush=True)
    with _database(args.redis_url, args.embedded) as url, tempfile.TemporaryDirectory(prefix="inferq-fuzz-") as logs:
        try:
            run = run_fuzz(url, Path(logs), n_fuzz=args.entries, seed=args.seed, n_huge=args.huge,
                           n_fraud=args.fraud, n_triage=args.triage, n_workers=args.workers, wait_s=args.wait,
                           duplicates=args.duplicates, say=lambda line: print(line, flush=True))
        finally:
            redis.Redis.from_url(url).flushdb()
    print(run.describe())
    print(f"result: {'PASS' if run.ok else 'FAIL'} in {time.time() - started:.0f}s "
          f"({len(run.report.failures)} oracle failures, {run.restarts} worker restarts)")
    return 0 if run.ok else 1


if __name__ == "__main__":
    sys.exit(main())
