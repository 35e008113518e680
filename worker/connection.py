"""Redis clients for every part of inferq, with TLS (`rediss://`) and ACL users from the settings.

Credentials come from the URL (`rediss://user:pass@host:6380/0`) or from `INFERQ_REDIS_USERNAME` and
`INFERQ_REDIS_PASSWORD`; the URL's win, as redis-py lets URL options override keyword arguments. TLS
settings apply to `rediss://` URLs only. Passwords never reach logs: log `redacted_url(url)`.

`WORKER_ACL_COMMANDS` is every command a worker or a producer sends, scripts' commands included (Redis
checks those against the same rules); `WORKER_ACL_RULES` is the `ACL SETUSER` rule list an operator
gives the inferq user (docs/operations.md, "TLS and ACL").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

from contracts.wire import KEY_PREFIX
from worker.config import Settings
from worker.errors import ConfigurationError

# A connection idle this long is pinged before use: a proxy or server that dropped it quietly
# costs a reconnect, not a failed command.
HEALTH_CHECK_INTERVAL_S: Final = 30
# Must outlast the longest BLOCK of a stream read, or the read fails.
DEFAULT_SOCKET_TIMEOUT_S: Final = 30.0

WORKER_ACL_COMMANDS: Final[tuple[str, ...]] = (
    # Connection set-up by redis-py and by redis-cli. CLIENT SETINFO exists from Redis 7.2 on
    # (and in Valkey); drop it for Redis 7.0, where redis-py ignores its absence.
    "hello", "auth", "ping", "select", "info", "client|setname", "client|setinfo",
    # Lanes and result streams: producers, workers, integrations, KEDA's scaler, operators.
    "xadd", "xread", "xreadgroup", "xack", "xdel", "xautoclaim", "xclaim", "xpending",
    "xgroup", "xlen", "xinfo", "xtrim", "xrange",
    # The enqueue, publish and dead-letter scripts.
    "eval", "evalsha", "script|load", "script|exists",
    # Exactly-once and signature markers, worker heartbeats, result stream expiry.
    "set", "get", "mget", "del", "expire", "exists", "hset", "hgetall",
)  # fmt: skip


def acl_rules(commands: Iterable[str] = WORKER_ACL_COMMANDS) -> str:
    """ACL rules for a user that may run `commands` on inferq's keys and nothing else."""
    return " ".join([f"~{KEY_PREFIX}*", "resetchannels", "-@all", *(f"+{command}" for command in commands)])


WORKER_ACL_RULES: Final = acl_rules()


def _uses_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def _tls_kwargs(settings: Settings) -> dict[str, Any]:
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ConfigurationError("INFERQ_TLS_CERT_FILE and INFERQ_TLS_KEY_FILE go together: set both or neither")
    paths = {
        "ssl_ca_certs": settings.tls_ca_file,
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
    }
    # Verification is never optional: a server that cannot prove who it is gets no credentials.
    return {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": settings.tls_check_hostname,
        **{name: str(path) for name, path in paths.items() if path is not None},
    }


def _has_tls_settings(settings: Settings) -> bool:
    return any(path is not None for path in (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file))


def connection_kwargs(settings: Settings, url: str | None = None) -> dict[str, Any]:
    """Keyword arguments of `Redis.from_url` for `url` (default: the settings' URL): ACL user, TLS, health checks."""
    target = url if url is not None else settings.redis_url or ""
    kwargs: dict[str, Any] = {"health_check_interval": HEALTH_CHECK_INTERVAL_S}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if _uses_tls(target):
        kwargs |= _tls_kwargs(settings)
    elif _has_tls_settings(settings):
        # Silently sending a password in clear text to a server the operator meant to reach over TLS is worse.
        raise ConfigurationError(f"TLS files are set but {redacted_url(target)} is not a rediss:// URL")
    return kwargs


def redis_client(
    url: str, settings: Settings, *, decode: bool = False, socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT_S
) -> redis.Redis:
    """A client for `url` with the settings' TLS files and ACL user; replies as bytes unless `decode`."""
    return redis.Redis.from_url(
        url, decode_responses=decode, socket_timeout=socket_timeout, **connection_kwargs(settings, url)
    )


def async_redis_client(
    url: str, settings: Settings, *, decode: bool = False, socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT_S
) -> redis.asyncio.Redis:
    """The asyncio twin of `redis_client`."""
    return redis.asyncio.Redis.from_url(
        url, decode_responses=decode, socket_timeout=socket_timeout, **connection_kwargs(settings, url)
    )


def redacted_url(url: str) -> str:
    """`url` with any password replaced by `***`, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
