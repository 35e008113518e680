#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs inferq with its test tools (the `dev` extra, which
# includes matplotlib for the benchmarks' plots). Safe to run again:
# it reinstalls only when pyproject.toml changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

py=""
for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        py=$candidate
        break
    fi
done
[ -n "$py" ] || { echo "setup: Python 3.11 or newer is required" >&2; exit 1; }

[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=.venv/.inferq-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setup: installing into .venv (first run takes a few minutes)"
log=.venv/setup.log
pipi() { .venv/bin/python -m pip install -q "$@" >>"$log" 2>&1 || { tail -40 "$log" >&2; exit 1; }; }
: >"$log"
pipi --upgrade pip
# The CPU wheel first: any looser torch spec would pull a multi-GB CUDA build. GPU hosts
# install their own torch build before running this; the project's range accepts it.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    pipi torch==2.13.0
fi
pipi -e '.[dev]'
.venv/bin/python -c 'import torch, celery, contracts, engine, worker, matplotlib' || { echo "setup: install failed" >&2; exit 1; }
echo "$want" > "$stamp"
