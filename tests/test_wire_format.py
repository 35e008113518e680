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
from worker.config import Settings
from worker.constants import queue_stream
from worker.streams import Ingress, connect

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
    client = connect(redis_url)
    try:
        ingress = Ingress(client, "doc-reader", Settings(redis_url=None))
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
