"""docs/wire-format.md: its examples run, from the document's own text, against the test database they
name through `$INFERQ_REDIS_URL`, and decode, answer and read as documented."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from contracts import FraudRequest, TriageRequest, parse_request
from contracts.errors import DESCRIPTIONS, ErrorCode
from contracts.wire import (
    CLIENT_RESULTS_PREFIX,
    DEADLETTER_STREAM,
    FIELD_ID,
    FIELD_REQUEST,
    FIELD_TASK,
    KINDS,
    LANES,
    MAX_TASK_ID_CHARS,
    REPLY_TO_PATTERN,
    TASK_NAMES,
    queue_stream,
    results_stream,
)
from worker.config import Settings
from worker.connection import redis_client as worker_client
from worker.entries import Delivery
from worker.ingress import Ingress
from worker.keys import CONSUMER_GROUP, done_key
from worker.outcomes import Publisher
from worker.preparing import answer_expired
from worker.processes import spawn_worker

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parent.parent / "docs" / "wire-format.md"
needs_cli = pytest.mark.skipif(
    shutil.which("redis-cli") is None, reason="redis-cli is not installed, so the documented commands cannot run"
)


def _block(marker: str) -> str:
    """The fenced block that follows `<!-- wire-example:{marker} -->` in the document."""
    text = DOC.read_text()
    found = re.search(rf"<!-- wire-example:{marker} -->\n```\w*\n(.*?)\n```", text, re.S)
    assert found is not None, f"docs/wire-format.md lost its {marker} example"
    return found.group(1)


def _block_table(marker: str) -> str:
    """The document from `<!-- wire-example:{marker} -->` on (a table is its last section)."""
    text = DOC.read_text()
    return text[text.index(f"<!-- wire-example:{marker} -->"):]


# Every bash and python block of the document is an example some test runs, by its marker.
MARKERS_RUN_HERE = ("xadd", "eval", "read", "celery-transport", "stock-celery", "celery-results")
MARKERS_RUN_ELSEWHERE = {"signed": "test_signing.py", "signed-python": "test_signing.py"}


def _run(command: str, redis_url: str, **env: str) -> str:
    full_env = {**os.environ, "INFERQ_REDIS_URL": redis_url, **env}
    done = subprocess.run(["bash", "-c", command], env=full_env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _python(code: str, redis_url: str, timeout_s: float = 30.0) -> str:
    """The block as a program of its own, with only `INFERQ_REDIS_URL` of the inferq settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "INFERQ_REDIS_URL": redis_url},
                          capture_output=True, text=True, timeout=timeout_s, cwd=DOC.parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def _fetch_one(redis_url: str) -> Delivery:
    settings = Settings(redis_url=redis_url)
    client = worker_client(redis_url, settings)
    try:
        ingress = Ingress(client, "doc-reader", settings)
        ingress.ensure_groups()
        [delivery] = ingress.fetch(["realtime", "batch"], 10, None)
    finally:
        client.close()
    return delivery




def test_every_example_is_run_and_names_its_database() -> None:
    text = DOC.read_text()
    blocks = re.findall(r"(<!-- wire-example:([\w-]+) -->\n)?```(bash|python)\n", text)
    assert blocks and all(marker for _, marker, _ in blocks), "a bash or python block without a marker"
    assert sorted(marker for _, marker, _ in blocks) == sorted([*MARKERS_RUN_HERE, *MARKERS_RUN_ELSEWHERE])
    for marker, test_file in MARKERS_RUN_ELSEWHERE.items():
        assert f'"{marker}"' in (DOC.parent.parent / "tests" / test_file).read_text()
    # No example reads or writes a database other than the one $INFERQ_REDIS_URL names.
    commands = [line for line in text.splitlines() if line.lstrip().startswith("redis-cli")]
    assert commands and all(line.lstrip().startswith('redis-cli -u "$INFERQ_REDIS_URL" ') for line in commands)
    run_here = ("celery-transport", "stock-celery", "celery-results")
    assert "127.0.0.1" not in "".join(_block(marker) for marker in run_here)


@needs_cli
def test_documented_xadd_is_decoded_by_the_ingress(redis_client: redis.Redis, redis_url: str) -> None:
    entry_id = _run(_block("xadd"), redis_url)
    assert re.fullmatch(r"\d+-\d+", entry_id)
    delivery = _fetch_one(redis_url)
    assert delivery.entry_id == entry_id and delivery.decode_error is None
    assert (delivery.task_name, delivery.task_id) == ("inferq.fraud", "c6977029-7aba-470e-81d6-241049b07ace")
    assert delivery.result_stream == "inferq:results:payments-switch"
    assert delivery.kind is not None and delivery.request is not None
    assert isinstance(parse_request(delivery.kind, delivery.request), FraudRequest)


@needs_cli
def test_documented_limit_script_queues_then_refuses(redis_client: redis.Redis, redis_url: str) -> None:
    script = _block("eval")
    assert re.fullmatch(r"\d+-\d+", _run(script, redis_url))
    [(_, fields)] = redis_client.xrange(queue_stream("batch"))
    assert isinstance(parse_request("triage", fields["request"]), TriageRequest)
    full = script.replace("1 inferq:queue:batch 200000", "1 inferq:queue:batch 1")
    assert full != script
    assert _run(full, redis_url) == ""  # nil: overloaded
    assert redis_client.xlen(queue_stream("batch")) == 1


def test_error_code_table_matches_contracts() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+?) \| (.+) \|$", _block_table("codes"), re.M)
    assert {code: text for code, text, _ in rows} == {code.value: text for code, text in DESCRIPTIONS.items()}
    reaches = {code: where for code, _, where in rows}
    # What no result carries: a refused task was never queued; a replay's id belongs to another entry.
    assert reaches[ErrorCode.OVERLOADED].startswith("never a result")
    assert reaches[ErrorCode.REPLAYED] == "dead letter only"
    assert all(where.startswith("result") for code, where in reaches.items()
               if code not in (ErrorCode.OVERLOADED, ErrorCode.REPLAYED))


@needs_cli
def test_documented_read_commands_read_and_acknowledge_a_posted_result(
    redis_client: redis.Redis, redis_url: str
) -> None:
    _run(_block("xadd"), redis_url)
    delivery = _fetch_one(redis_url)
    assert delivery.kind is not None and delivery.result_stream == "inferq:results:payments-switch"
    # A worker's own publisher posts the answer (expired: nothing here computes it).
    settings = Settings(redis_url=redis_url)
    client = worker_client(redis_url, settings)
    try:
        assert Publisher(client, settings).finish_many(
            [answer_expired(delivery, delivery.kind, delivery.result_stream)]) == [True]
    finally:
        client.close()
    [(entry_id, _)] = redis_client.xrange("inferq:results:payments-switch")
    out = _run(_block("read"), redis_url, ENTRY_ID=entry_id)
    assert "OK" in out and entry_id in out and "c6977029-7aba-470e-81d6-241049b07ace" in out
    assert redis_client.xpending("inferq:results:payments-switch", "payments-switch")["pending"] == 0


def test_documented_celery_transport_example_queues_an_envelope(redis_client: redis.Redis, redis_url: str) -> None:
    _python(_block("celery-transport"), redis_url)
    delivery = _fetch_one(redis_url)
    assert delivery.lane == "batch" and delivery.decode_error is None and delivery.kind == "triage"
    assert isinstance(parse_request("triage", delivery.request or {}), TriageRequest)


@pytest.mark.slow
def test_documented_stock_celery_producer_and_result_backend(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    code, results_code = _block("stock-celery"), _block("celery-results")
    # They run with nothing of inferq imported: stock Celery applications.
    for block in (code, results_code):
        assert not re.search(r"^\s*(from|import)\s+(worker|contracts|engine|training)\b", block, re.M)
    worker = spawn_worker(redis_url, "doc-stock", tmp_path, {"INFERQ_KINDS": '["triage"]', "INFERQ_LANES": '["batch"]',
                                                             "INFERQ_DEVICE": "cpu", "INFERQ_LOG_LEVEL": "WARNING"})
    try:
        worker.wait_ready(90.0)
        started = time.monotonic()
        out = _python(code, redis_url, timeout_s=90.0)
        print(f"\nstock Celery example answered in {time.monotonic() - started:.2f} s: {out}")
        results_out = _python(results_code, redis_url, timeout_s=150.0).splitlines()
    finally:
        worker.stop(timeout_s=15.0)
    stated = re.search(r"It printed `(SUCCESS [^`]+)` and `(FAILURE [^`]+)`", DOC.read_text())
    assert stated is not None and results_out == [stated.group(1), stated.group(2)]
    printed = re.search(r"It printed `(ok \d)`", DOC.read_text())
    assert printed is not None and out == printed.group(1)
    assert redis_client.xlen("inferq:results:ed-intake") == 1 and redis_client.llen("batch") == 0


def test_documented_keys_and_fields_match_the_wire_module() -> None:
    text = DOC.read_text()
    for lane in LANES:
        assert f"`{queue_stream(lane)}`" in text
    for kind in KINDS:
        assert f"`{TASK_NAMES[kind]}`" in text and f"`{kind}`" in text
    assert results_stream("{kind}") == "inferq:results:{kind}" and "`inferq:results:{kind}`" in text
    assert f"consumer group `{CONSUMER_GROUP}`" in text
    assert f"`{done_key('{task_id}')}`" in text and f"`{DEADLETTER_STREAM}`" in text
    assert f"`{REPLY_TO_PATTERN}`" in text
    assert f"1–{MAX_TASK_ID_CHARS} characters" in text
    assert all(f"| `{name}` |" in text for name in (FIELD_TASK, FIELD_ID, FIELD_REQUEST))
    assert f"`{CLIENT_RESULTS_PREFIX}`" in text
