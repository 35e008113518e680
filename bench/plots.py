"""PNG figures of the benchmarks (matplotlib, headless `Agg` backend; the `dev`/`bench` extras install it).

Each function takes what a benchmark measured in its own run and writes one PNG; the caption line
under the title names the command and the time of that run, so a figure is never read apart from
the run that made it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

DPI = 110


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def latency_vs_throughput(points: Mapping[str, Sequence[Mapping[str, float]]], caption: str, path: Path) -> Path:
    """p50 and p99 latency (ms) against offered load (tasks/s), one panel per lane; each point is
    annotated with the rate actually answered, which stops growing where the lane saturates.

    `points[lane]` holds one mapping per offered load with keys `offered`, `achieved`, `p50_ms`, `p99_ms`.
    """
    lanes = list(points)
    fig, axes = plt.subplots(1, len(lanes), figsize=(5.6 * len(lanes), 4.4), squeeze=False)
    for ax, lane in zip(axes[0], lanes, strict=True):
        rows = sorted(points[lane], key=lambda p: p["offered"])
        x = [p["offered"] for p in rows]
        ax.plot(x, [p["p50_ms"] for p in rows], "o-", label="p50")
        ax.plot(x, [p["p99_ms"] for p in rows], "s--", label="p99")
        for p in rows:
            ax.annotate(f"{p['achieved']:.1f}/s answered", (p["offered"], p["p99_ms"]), fontsize=7,
                        textcoords="offset points", xytext=(-10, 6))
        ax.set_yscale("log")
        ax.set_xlabel("offered load (tasks/s, open loop)")
        ax.set_ylabel("latency, submit to result (ms)")
        ax.set_title(f"{lane} lane")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Latency against load per lane\n{caption}", fontsize=9)
    return _save(fig, path)


def batch_sizes(sizes: Mapping[str, Mapping[str, Sequence[int]]], caption: str, path: Path) -> Path:
    """Histograms of the batch sizes the workers formed: a row per group (a lane), a panel per series
    (an offered load)."""
    groups = list(sizes)
    cols = max(len(series) for series in sizes.values())
    fig, axes = plt.subplots(len(groups), cols, figsize=(3.6 * cols, 3.0 * len(groups)), squeeze=False)
    for row, group in enumerate(groups):
        for col in range(len(sizes[group]), cols):
            axes[row][col].set_visible(False)
    panels = [(axes[row][col], f"{group} {name}", values) for row, group in enumerate(groups)
              for col, (name, values) in enumerate(sizes[group].items())]
    for ax, name, found in panels:
        values = list(found)
        top = max(values, default=1)
        ax.hist(values, bins=range(1, top + 2), align="left", rwidth=0.85)
        ax.set_xlabel("tasks per batch")
        ax.set_ylabel("batches")
        mean = sum(values) / len(values) if values else 0.0
        ax.set_title(f"{name}: {len(values)} batches, mean {mean:.1f}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Batch sizes formed by the worker\n{caption}", fontsize=9)
    return _save(fig, path)


def sparse_scaling(rows: Sequence[Mapping[str, Any]], caption: str, path: Path) -> Path:
    """Forward time against sequence length, sparse and dense, one panel per scope (layer, model).

    `rows` hold `scope`, `length`, `sparse_ms`, `dense_ms`.
    """
    scopes = list(dict.fromkeys(str(r["scope"]) for r in rows))
    fig, axes = plt.subplots(1, len(scopes), figsize=(5.2 * len(scopes), 4.2), squeeze=False)
    for ax, scope in zip(axes[0], scopes, strict=True):
        mine = sorted((r for r in rows if r["scope"] == scope), key=lambda r: int(r["length"]))
        lengths = [int(r["length"]) for r in mine]
        ax.plot(lengths, [r["sparse_ms"] for r in mine], "o-", label="dynamic sparse")
        ax.plot(lengths, [r["dense_ms"] for r in mine], "s--", label="dense SDPA")
        for r in mine:
            ax.annotate(f"{r['dense_ms'] / r['sparse_ms']:.1f}x", (int(r["length"]), r["sparse_ms"]), fontsize=7,
                        textcoords="offset points", xytext=(0, -12), ha="center")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.set_xlabel("sequence length L (tokens)")
        ax.set_ylabel("ms per forward pass (median)")
        ax.set_title("one attention layer" if scope == "layer" else "whole fraud model")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Sparse against dense attention (annotation: dense / sparse)\n{caption}", fontsize=9)
    return _save(fig, path)
