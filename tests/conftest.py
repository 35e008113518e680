"""Shared fixtures: a real Redis for every test that needs one, never shared with another run.

`INFERQ_TEST_REDIS_URL` names the server (default `redis://127.0.0.1:6379`). Each test run claims a
database index of its own there: the URL's index when it names one, otherwise the first free index
from 15 down to 1. A claim is a key in database 0 (`inferq-test:claim:{index}`) with a short expiry
that the run keeps renewing, so two runs on one server never flush or consume each other's tasks,
and a crashed run frees its index within a minute. When nothing answers, the run starts an embedded
Valkey in a temporary state directory and stops it at the end, so the suite never skips for want of
Redis.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from worker import embedded

DEFAULT_TEST_URL = "redis://127.0.0.1:6379"
CLAIM_PREFIX = "inferq-test:claim:"
CLAIM_TTL_S = 60
CANDIDATE_DBS = range(15, 0, -1)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _named_db(url: str) -> int | None:
    path = urlsplit(url).path.strip("/")
    return int(path) if path else None


class DatabaseClaim:
    """One database index of a shared server, held by this run until `release`."""

    def __init__(self, url: str) -> None:
        self._admin = redis.Redis.from_url(_with_db(url, 0))
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        named = _named_db(url)
        self.db = self._claim([named] if named is not None else list(CANDIDATE_DBS), named is not None)
        self.url = _with_db(url, self.db)
        threading.Thread(target=self._renew, name="test-db-claim", daemon=True).start()

    def _claim(self, candidates: list[int], named: bool) -> int:
        for db in candidates:
            if self._admin.set(CLAIM_PREFIX + str(db), self._token, nx=True, ex=CLAIM_TTL_S):
                return db
        if named:
            raise RuntimeError(f"database {candidates[0]} is in use by another test run; name another "
                               "index in INFERQ_TEST_REDIS_URL or leave it out to get a free one")
        raise RuntimeError("every test database index (1-15) is in use by other test runs")

    def _renew(self) -> None:
        while not self._stop.wait(CLAIM_TTL_S / 4):
            # Renewed on the next round when this one fails: the claim outlives a short outage.
            with contextlib.suppress(redis.RedisError):
                self._admin.expire(CLAIM_PREFIX + str(self.db), CLAIM_TTL_S)

    def release(self) -> None:
        self._stop.set()
        key = CLAIM_PREFIX + str(self.db)
        try:
            if self._admin.get(key) == self._token.encode():
                self._admin.delete(key)
        finally:
            self._admin.close()


@contextlib.contextmanager
def _claimed(url: str) -> Iterator[str]:
    claim = DatabaseClaim(url)
    try:
        yield claim.url
    finally:
        redis.Redis.from_url(claim.url).flushdb()
        claim.release()


@contextlib.contextmanager
def claimed_database(url: str | None = None, own_server: bool = False) -> Iterator[str]:
    """A database of its own for a test run or a benchmark: `url` as given; else a claimed index on
    `INFERQ_TEST_REDIS_URL` when it answers (and `own_server` is false); else an embedded Valkey
    started for the run and stopped after it."""
    if url is not None:
        yield url
        return
    shared = os.environ.get("INFERQ_TEST_REDIS_URL", DEFAULT_TEST_URL)
    if not own_server and _answers(shared):
        with _claimed(shared) as own:
            yield own
        return
    state_dir = Path(tempfile.mkdtemp(prefix="inferq-test-valkey-"))
    server = embedded.start(state_dir)
    try:
        with _claimed(server.url.rsplit("/", 1)[0]) as own:
            yield own
    finally:
        embedded.stop(state_dir)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis database that this test run alone may flush."""
    with claimed_database() as url:
        yield url


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


# The worker's side of the test database, for modules that drive ingress and publishing directly.
# `ingress` and `publisher` take the requesting module's `settings` fixture; a module that needs
# another kind of `client` or `ingress` defines its own.


@pytest.fixture
def client(redis_client: redis.Redis, redis_url: str) -> Iterator[redis.Redis]:
    """The worker's own kind of client on the (flushed) test database: replies as bytes."""
    from worker.config import Settings
    from worker.connection import redis_client as connect

    conn = connect(redis_url, Settings(redis_url=redis_url))
    yield conn
    conn.close()


@pytest.fixture
def ingress(client: redis.Redis, settings: Any) -> Any:
    """An `Ingress` named worker-a, its consumer groups created."""
    from worker.ingress import Ingress

    found = Ingress(client, "worker-a", settings)
    found.ensure_groups()
    return found


@pytest.fixture
def publisher(client: redis.Redis, settings: Any) -> Any:
    from worker.outcomes import Publisher

    return Publisher(client, settings)
