"""Two test runs on one Redis server never share a database index (tests/conftest.py)."""

from __future__ import annotations

import pytest
import redis
from conftest import CLAIM_PREFIX, DatabaseClaim, _named_db, _with_db


def test_concurrent_runs_get_different_databases(redis_url: str) -> None:
    server = _with_db(redis_url, 0).rsplit("/", 1)[0]
    mine = _named_db(redis_url)
    first, second = DatabaseClaim(server), DatabaseClaim(server)
    try:
        assert len({mine, first.db, second.db}) == 3
        admin = redis.Redis.from_url(_with_db(server, 0))
        assert admin.ttl(CLAIM_PREFIX + str(first.db)) > 0  # a crashed run frees its index
    finally:
        first.release()
        second.release()
    assert not redis.Redis.from_url(_with_db(server, 0)).exists(CLAIM_PREFIX + str(first.db))


def test_a_named_database_held_by_another_run_is_refused(redis_url: str) -> None:
    with pytest.raises(RuntimeError, match="in use by another test run"):
        DatabaseClaim(redis_url)
