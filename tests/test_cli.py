"""Smoke tests of the `inferq` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker.cli import build_parser

SUBCOMMANDS = ["worker", "submit", "usage", "schema", "server", "demo"]


def _inferq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_top_level_help_lists_every_subcommand() -> None:
    done = _inferq("--help")
    assert done.returncode == 0
    for name in SUBCOMMANDS:
        assert name in done.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name: str) -> None:
    done = _inferq(name, "--help")
    assert done.returncode == 0, done.stderr
    assert f"usage: inferq {name}" in done.stdout


def test_unknown_command_fails_with_usage() -> None:
    done = _inferq("nonsense")
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_demo_duration_has_a_default() -> None:
    args = build_parser().parse_args(["demo"])
    assert 0 < args.duration <= 300


def test_server_start_status_stop(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "INFERQ_STATE_DIR": str(tmp_path)}
    env.pop("INFERQ_REDIS_URL", None)
    started = _inferq("server", "start", env=env)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert url.startswith("redis://127.0.0.1:")
    status = _inferq("server", "status", env=env)
    assert (status.returncode, status.stdout.strip()) == (0, url)
    stopped = _inferq("server", "stop", env=env)
    assert stopped.stdout.strip() == "stopped"
    assert _inferq("server", "status", env=env).returncode == 1


def test_readme_documents_every_setting() -> None:
    from worker.config import Settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [f"INFERQ_{name.upper()}" for name in Settings.model_fields if f"`INFERQ_{name.upper()}`" not in readme]
    assert missing == []


def test_nice_setting_lowers_the_worker_process_priority() -> None:
    # In a child process: niceness only ever goes up, so the test process must keep its own.
    code = (
        "import os; from worker.app import lower_priority; start = os.nice(0); "
        "assert lower_priority(0) == start; print(lower_priority(7) - start)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "7"
