"""docs/wire-format.md: its redis-cli examples run against a real Redis and decode as documented."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from contracts import FraudRequest, TriageRequest, parse_request
from contracts.errors import DESCRIPTIONS
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
from worker.ingress import Ingress
from worker.keys import CONSUMER_GROUP, done_key

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


def _run(command: str, redis_url: str) -> str:
    env = {**os.environ, "INFERQ_REDIS_URL": redis_url}
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@needs_cli
def test_documented_xadd_is_decoded_by_the_ingress(redis_client: redis.Redis, redis_url: str) -> None:
    entry_id = _run(_block("xadd"), redis_url)
    assert re.fullmatch(r"\d+-\d+", entry_id)
    settings = Settings(redis_url=redis_url)
    client = worker_client(redis_url, settings)
    try:
        ingress = Ingress(client, "doc-reader", settings)
        ingress.ensure_groups()
        [delivery] = ingress.fetch(["realtime", "batch"], 10, None)
    finally:
        client.close()
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
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", _block_table("codes"), re.M)
    assert dict(rows) == {code.value: text for code, text in DESCRIPTIONS.items()}


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
