"""Chaos in CI: two workers, 2,000 mixed tasks, three SIGKILLs at random moments with restarts.

`bench/chaos.py` at CI size, with the same machinery (`run_chaos`): two real worker processes
(`python -m worker.app`, both kinds, both lanes) on the test database; a producer submits 1,700 fraud
tasks (histories of 8-64 events, realtime lane) and 300 triage tasks (notes of at most 400 characters,
batch lane), interleaved at random, at 80 tasks/s; at three moments drawn from a seeded random
generator over the submission window, a worker drawn at random among the ready ones is SIGKILLed at its
first moment holding a task, and restarted at once under a new name. `INFERQ_CLAIM_IDLE_MS` is 1.5 s, so
a dead worker's tasks are taken over quickly.

Every task must have exactly one result entry (counted per task id over every result stream: a second
one is a failure), with status ok; none lost; the lanes drained, nothing pending, nothing dead-lettered;
the workers alive at the end drain on SIGTERM and exit 0. The seed is printed (`-s`, or in the failure
message); `INFERQ_CHAOS_SEED=<seed>` replays a run's kinds, kill moments and victims.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from chaos import ChaosPlan, run_chaos  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TASKS = 2000
KILLS = 3


@pytest.mark.timeout(240)
def test_random_sigkills_with_restarts_every_task_answered_exactly_once(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    seed = int(os.environ.get("INFERQ_CHAOS_SEED") or random.SystemRandom().randrange(2**31))
    print(f"chaos seed {seed} (INFERQ_CHAOS_SEED={seed} replays it)")
    run = run_chaos(redis_url, ChaosPlan(tasks=TASKS, kills=KILLS, seed=seed), tmp_path)
    print(run.summary())
    said = f"seed {seed}\n{run.summary()}"

    assert run.kinds["fraud"] > run.kinds["triage"] > 0, said
    assert len(run.kills) == KILLS, said
    assert sum(kill.held for kill in run.kills) > 0 and run.takeovers > 0, said
    assert run.lost == 0, said
    assert run.duplicates == 0 and run.foreign == 0, said
    assert [task_id for task_id, n in run.per_task.items() if n != 1] == [], said
    assert run.statuses == {"ok": TASKS}, said
    assert run.deadletters == 0 and run.pending == 0 and run.in_lanes == 0, said
    assert run.crashes == [], said
    assert all(code == 0 for code in run.exits.values()), said
