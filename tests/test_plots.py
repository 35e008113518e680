"""The benchmarks' figures (bench/plots.py): each writes a PNG of what it was given."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import plots  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000


def test_every_figure_is_written(tmp_path: Path) -> None:
    points = {"realtime": [{"offered": 10.0, "achieved": 9.9, "p50_ms": 60.0, "p99_ms": 300.0},
                           {"offered": 50.0, "achieved": 31.5, "p50_ms": 4000.0, "p99_ms": 6000.0}],
              "batch": [{"offered": 2.0, "achieved": 1.8, "p50_ms": 180.0, "p99_ms": 1500.0}]}
    assert _png(plots.latency_vs_throughput(points, "caption", tmp_path / "a" / "lat.png"))
    sizes = {"realtime": {"at 10/s": [1, 1, 2], "at 50/s": [32, 30, 7]}, "batch": {"at 2/s": [1]}}
    assert _png(plots.batch_sizes(sizes, "caption", tmp_path / "sizes.png"))
    rows = [{"scope": scope, "length": n, "sparse_ms": n / 100, "dense_ms": n * n / 100_000}
            for scope in ("layer", "model") for n in (512, 1024, 2048)]
    assert _png(plots.sparse_scaling(rows, "caption", tmp_path / "sparse.png"))
