"""worker.logging in a process of its own: every kind of line a worker may write comes out as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import logging, sys, threading, warnings
    from worker import logging as inferq_logging
    from worker.app import _json_say
    inferq_logging.configure("DEBUG", json=True)
    log = inferq_logging.get_logger("probe")
    with inferq_logging.bind_batch("b-1", "triage", "batch", 2):
        log.info("batch.done", size=2, tokens=40, compute_ms=1.5)
        with inferq_logging.bind_task("t-1", "triage", "batch"):
            log.debug("task.computed")
    logging.getLogger("celery.worker.control").warning("Got shutdown from %s", "remote")
    logging.getLogger("celery.utils.functional").debug("def triage(request): return 1")  # kept back
    warnings.warn("something deprecated", DeprecationWarning)
    _json_say("worker: Warm shutdown (MainProcess)", sys.stderr)
    thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
    thread.start(); thread.join()
    inferq_logging.redirect_stdio()
    print("printed", "line one\\nline two")
    sys.stderr.write("partial ")
    sys.stderr.write("line\\n")
""")


def test_every_line_is_json_whoever_logs_it() -> None:
    done = subprocess.run([sys.executable, "-W", "always", "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    by_event = {r["event"].split(":")[0] if r.get("logger") == "py.warnings" else r["event"]: r for r in records}
    batch = by_event["batch.done"]
    assert (batch["batch_id"], batch["kind"], batch["lane"], batch["batch_size"], batch["tokens"]) == (
        "b-1", "triage", "batch", 2, 40)
    assert by_event["task.computed"]["task_id"] == "t-1" and by_event["task.computed"]["batch_id"] == "b-1"
    shutdown = by_event["Got shutdown from remote"]
    assert (shutdown["logger"], shutdown["level"]) == ("celery.worker.control", "warning")
    assert not any("def triage" in r["event"] for r in records)
    assert any(r.get("logger") == "py.warnings" and "something deprecated" in r["event"] for r in records)
    assert by_event["celery.notice"]["message"] == "worker: Warm shutdown (MainProcess)"
    crashed = by_event["uncaught_exception"]
    assert crashed["thread"] == "doomed" and crashed["error"] == "ZeroDivisionError" and "exception" in crashed
    printed = [r["event"] for r in records if r.get("logger") == "stdio"]
    assert printed == ["printed line one", "line two", "partial line"]
    assert done.stdout == ""
    assert all({"level", "timestamp"} <= r.keys() for r in records)
