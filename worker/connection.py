"""Redis clients for every part of inferq, with TLS (`rediss://`) and ACL users from the settings.

Credentials come from the URL (`rediss://user:pass@host:6380/0`) or from `INFERQ_REDIS_USERNAME` and
`INFERQ_REDIS_PASSWORD`; the URL's win, as redis-py lets URL options override keyword arguments. TLS
settings apply to `rediss://` URLs only. Passwords never reach logs: log `redacted_url(url)`.

`WORKER_ACL_COMMANDS` is every command a worker or a producer sends, scripts' commands included (Redis
checks those against the same rules), and nothing more: tests/test_tls_acl.py runs a worker and every
kind of producer through a server and checks that the commands it executed are exactly these.
`WORKER_ACL_RULES` is the `ACL SETUSER` rule list an operator gives the inferq user
(docs/operations.md, "TLS and ACL").

A refusal that no retry can cure (credentials, permissions, a certificate that does not verify or
that the server refuses) is told from an outage by `refused_for_good`. A connection that the server
closes during the handshake says what may be wrong: a plain `redis://` URL to a TLS-only server, or a
client certificate the server refuses.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection

from contracts.wire import KEY_PREFIX
from worker.config import Settings
from worker.errors import ConfigurationError

# A connection idle this long is pinged before use: a proxy or server that dropped it quietly
# costs a reconnect, not a failed command.
HEALTH_CHECK_INTERVAL_S: Final = 30
# Must outlast the longest BLOCK of a stream read, or the read fails.
DEFAULT_SOCKET_TIMEOUT_S: Final = 30.0

WORKER_ACL_COMMANDS: Final[tuple[str, ...]] = (
    # Connection set-up and upkeep. HELLO and AUTH need no rule: Redis lets every user run them.
    # PING: redis-py's health check of a connection idle for HEALTH_CHECK_INTERVAL_S. SELECT: a URL
    # naming a database other than 0. CLIENT SETINFO: redis-py names itself on every connection
    # (Redis 7.2 on, Valkey); it ignores a refusal, and Redis 7.0 has no such command: leave it out there.
    "ping", "select", "client|setinfo",
    # Worker (worker/ingress.py): fetch, take over a dead worker's tasks and read their delivery
    # counts, create the group, drop departed consumers, heartbeats and lane depths, leave.
    "xreadgroup", "xautoclaim", "xpending", "xgroup|create", "xgroup|delconsumer", "xinfo|consumers",
    "exists", "hset", "expire", "xlen", "del",
    # Worker: answered-before check (worker/outcomes.py); signed entries' replay markers (SET NX).
    "mget", "set",
    # Lua scripts (worker/keys.py), run by EVALSHA after SCRIPT EXISTS or SCRIPT LOAD. Redis checks
    # the commands inside against the same rules: ENQUEUE XLEN XADD; FINISH TYPE SET XADD EXPIRE
    # XACK XDEL, and HINCRBY for usage metering (worker/usage.py); REQUEUE XADD XACK XDEL; TOUCH XPENDING XCLAIM.
    "evalsha", "script|load", "script|exists", "type", "xadd", "xack", "xdel", "xclaim", "hincrby",
    # Producers: the Python client reads its reply stream (XREAD) and deletes it (DEL); the Celery
    # transport counts, purges, checks and deletes lanes (XLEN, XTRIM, EXISTS, DEL); a raw producer
    # queues with XADD or EVAL of the lane-limit script (docs/wire-format.md); an integration reads
    # its result stream with a group (XGROUP CREATE, XREADGROUP, XACK, XAUTOCLAIM).
    "xread", "xtrim", "eval",
)  # fmt: skip


# Not in the rules above: a worker that moves stock Celery producers' kombu lists into the lanes
# (worker/celery_lists.py, the BRIDGE_LISTS script) also runs these, on the lists it moves (keys
# outside inferq:*; docs/operations.md, "TLS and ACL", grants both or turns the move off).
CELERY_LIST_ACL_COMMANDS: Final[tuple[str, ...]] = ("lindex", "rpop", "llen")


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


# Appended to the error of a connection that the server closed before answering the handshake: what a
# TLS-only server does to a client speaking plain RESP, and (TLS 1.3) a server refusing the client certificate.
TLS_HINT: Final = "the server closed the connection during the handshake; if it speaks TLS only, use a rediss:// URL"
CERT_HINT: Final = (
    "the server closed the TLS connection during the handshake; if it requires client certificates, set "
    "INFERQ_TLS_CERT_FILE and INFERQ_TLS_KEY_FILE to one signed by a CA it trusts"
)


def _hinted(exc: redis.ConnectionError, hint: str) -> redis.ConnectionError:
    return redis.ConnectionError(f"{exc} ({hint})")


class PlainConnection(redis.connection.Connection):
    """redis-py's TCP connection, whose handshake failure says that the server may speak TLS only."""

    def on_connect_check_health(self, check_health: bool = True) -> None:
        try:
            super().on_connect_check_health(check_health=check_health)
        except redis.AuthenticationError:
            raise
        except redis.ConnectionError as exc:
            raise _hinted(exc, TLS_HINT) from exc


class TlsConnection(redis.connection.SSLConnection):
    """redis-py's TLS connection, whose handshake failure says that the server may refuse the client certificate.

    With TLS 1.3 the server checks the client certificate after the client's side of the handshake,
    so a refusal reaches the client as a closed connection at its first command, not as a TLS error.
    """

    def on_connect_check_health(self, check_health: bool = True) -> None:
        try:
            super().on_connect_check_health(check_health=check_health)
        except redis.AuthenticationError:
            raise
        except redis.ConnectionError as exc:
            raise _hinted(exc, CERT_HINT) from exc


class AsyncPlainConnection(redis.asyncio.connection.Connection):
    """The asyncio twin of `PlainConnection`."""

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        try:
            await super().on_connect_check_health(check_health=check_health)
        except redis.AuthenticationError:
            raise
        except redis.ConnectionError as exc:
            raise _hinted(exc, TLS_HINT) from exc


class AsyncTlsConnection(redis.asyncio.connection.SSLConnection):
    """The asyncio twin of `TlsConnection`."""

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        try:
            await super().on_connect_check_health(check_health=check_health)
        except redis.AuthenticationError:
            raise
        except redis.ConnectionError as exc:
            raise _hinted(exc, CERT_HINT) from exc


def redis_client(
    url: str, settings: Settings, *, decode: bool = False, socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT_S
) -> redis.Redis:
    """A client for `url` with the settings' TLS files and ACL user; replies as bytes unless `decode`."""
    client = redis.Redis.from_url(
        url, decode_responses=decode, socket_timeout=socket_timeout, **connection_kwargs(settings, url)
    )
    # Set on the pool before its first connection (redis-py's asyncio from_url lets the URL's scheme win
    # over a connection_class argument, so both clients get theirs this way).
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        client.connection_pool.connection_class = PlainConnection if scheme == "redis" else TlsConnection
    return client


def async_redis_client(
    url: str, settings: Settings, *, decode: bool = False, socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT_S
) -> redis.asyncio.Redis:
    """The asyncio twin of `redis_client`."""
    client = redis.asyncio.Redis.from_url(
        url, decode_responses=decode, socket_timeout=socket_timeout, **connection_kwargs(settings, url)
    )
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        client.connection_pool.connection_class = AsyncPlainConnection if scheme == "redis" else AsyncTlsConnection
    return client


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def refused_for_good(exc: BaseException) -> bool:
    """Whether `exc` is a refusal that retrying cannot cure, unlike a Redis that is away for a while.

    Refused credentials (a wrong password, a disabled user), a missing permission, a server
    certificate that does not verify, a client certificate the server refuses with a TLS alert.
    redis-py raises most of these as `ConnectionError`s, the type of an outage too. A connection
    closed during the handshake is not among them: a restarting server closes connections too.
    """
    for error in _chain(exc):
        if isinstance(error, redis.AuthenticationError | redis.exceptions.NoPermissionError):
            return True
        # A command inside a script that the user may not run (the message names the script, not the command).
        if isinstance(error, redis.ResponseError) and "can't run this command" in str(error):
            return True
        if isinstance(error, ssl.SSLCertVerificationError):
            return True
        # The server's TLS alerts (certificate required, unknown CA, bad certificate); a peer that is no TLS server.
        if isinstance(error, ssl.SSLError) and ("ALERT" in str(error.reason) or error.reason == "WRONG_VERSION_NUMBER"):
            return True
    return False


def redacted_url(url: str) -> str:
    """`url` with any password replaced by `***`, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
