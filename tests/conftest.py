"""Shared fixtures: a real Redis for every test that needs one.

`INFERQ_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/15`, a database kept for tests)
names the server. When nothing answers there, the run starts an embedded Valkey in a
temporary state directory and stops it at the end, so the suite never skips for want of
Redis.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from worker import embedded

DEFAULT_TEST_URL = "redis://127.0.0.1:6379/15"


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis database that this test run may flush."""
    url = os.environ.get("INFERQ_TEST_REDIS_URL", DEFAULT_TEST_URL)
    if _answers(url):
        yield url
        return
    state_dir = Path(tempfile.mkdtemp(prefix="inferq-test-valkey-"))
    server = embedded.start(state_dir)
    try:
        yield server.url.rsplit("/", 1)[0] + "/15"
    finally:
        embedded.stop(state_dir)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test database, flushed before and after the test."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
