"""Worker processes started by another program: the demo, the benchmarks, the tests.

Each is `python -m worker.app` configured through `INFERQ_*` variables, with its own metrics port
so that readiness is read from `/readyz` as Kubernetes would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
# Probes go straight to the loopback interface: an HTTP(S)_PROXY in the environment must not route them.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    """One running `python -m worker.app` and where to look at it."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    terminated: bool = False

    def ready(self) -> bool:
        """Whether `/readyz` answers 200 (models loaded, warm-up done)."""
        try:
            with _DIRECT.open(f"http://127.0.0.1:{self.port}/readyz", timeout=0.5) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout_s: float) -> None:
        """Block until ready; raises RuntimeError if the process exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} not ready after {timeout_s:.0f}s: {self.log_tail()}")
            time.sleep(0.1)

    def terminate(self) -> None:
        """Ask for a graceful drain (SIGTERM), once: Celery takes a repeated signal as impatience."""
        if self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout_s: float) -> int:
        """SIGTERM (graceful drain), SIGKILL after `timeout_s`; returns the exit code."""
        self.terminate()
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log."""
        return self.log_path.read_text(errors="replace")[-chars:]


def spawn_worker(redis_url: str, name: str, log_dir: Path, env: dict[str, str] | None = None) -> WorkerProcess:
    """Start a worker on `redis_url`; `env` adds or overrides `INFERQ_*` (and other) variables."""
    port = free_port()
    full_env = {
        **os.environ,
        "INFERQ_REDIS_URL": redis_url,
        "INFERQ_METRICS_PORT": str(port),
        # Several workers share a small machine: one compute thread each keeps them off each
        # other's cores (two threads per process measured several times slower there).
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.app", "--name", name],
            cwd=_REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(name, port, proc, log_path)
