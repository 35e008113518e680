"""The embedded Valkey: start, reuse, persistence, stop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from worker import embedded
from worker.errors import EmbeddedServerError


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    embedded.stop(tmp_path)


def test_start_reuse_stop(state_dir: Path) -> None:
    first = embedded.start(state_dir)
    assert first.started_here
    assert redis.Redis.from_url(first.url).ping()

    again = embedded.start(state_dir)
    assert not again.started_here
    assert (again.url, again.pid) == (first.url, first.pid)

    assert embedded.stop(state_dir)
    assert embedded.running(state_dir) is None
    assert not embedded.stop(state_dir)


def test_append_only_persistence_survives_restart(state_dir: Path) -> None:
    server = embedded.start(state_dir)
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.xadd("inferq:queue:batch", {"task": "inferq.triage", "id": "t-1", "request": "{}"})
    assert client.config_get("appendonly")["appendonly"] == "yes"
    client.close()
    embedded.stop(state_dir)

    restarted = embedded.start(state_dir)
    assert restarted.started_here
    client = redis.Redis.from_url(restarted.url, decode_responses=True)
    assert client.xlen("inferq:queue:batch") == 1
    client.close()


def test_stale_pid_file_is_replaced(state_dir: Path) -> None:
    home = state_dir / "valkey"
    home.mkdir(parents=True)
    (home / "valkey.pid").write_text("999999\n")
    (home / "url").write_text("redis://127.0.0.1:1/0\n")
    assert embedded.running(state_dir) is None
    server = embedded.start(state_dir)
    assert server.started_here
    assert redis.Redis.from_url(server.url).ping()


def test_a_secured_server_is_probed_without_login_retries(state_dir: Path) -> None:
    # The probe holds no credentials: its refused login means "answering", at once (redis-py's
    # default client retries a refused login ten times, seconds per probe).
    user = embedded.AclUser("inferq", "correct-horse-battery", "~inferq:* resetchannels -@all +ping")
    started = time.monotonic()
    server = embedded.start(state_dir, acl_users=[user])
    assert embedded.running(state_dir) == embedded.EmbeddedServer(server.url, server.pid, started_here=False)
    assert embedded.stop(state_dir)
    assert time.monotonic() - started < 3.0


def test_a_server_refusing_its_acl_file_says_why(state_dir: Path) -> None:
    user = embedded.AclUser("inferq", "correct-horse-battery", "~inferq:* -@all +no-such-command")
    with pytest.raises(EmbeddedServerError, match="no-such-command") as refused:
        embedded.start(state_dir, acl_users=[user])
    assert "overcommit" not in str(refused.value)  # the reason, not the warnings logged before it
