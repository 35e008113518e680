"""Dynamic sparse attention against dense scaled_dot_product_attention, one layer and the fraud model.

    .venv/bin/python bench/sparse.py [--device cpu|cuda] [--quick] [--lengths L ...] [--threads N] [--batch B]
                                     [--plot DIR]
    .venv/bin/python bench/sparse.py --runner [--threads 1] [--repeats 9]

For every length L in 512 ... 8192 (batch B, default 1: one history per scored transaction),
both variants run side by side in this one run:

  layer: one attention layer with the fraud model's default width and heads
         (`engine.sparse_attention.make_attention("sparse" | "dense", ...)`);
  model: the whole fraud model, `engine.fraud_model.FraudTransformer` with its default config
         and `attention="sparse" | "dense"`.

Time is the median of `--repeats` forward passes under `torch.inference_mode`, the two variants
alternating so that load from other processes falls on both alike. Peak memory is what one forward
pass adds on top of the model and its inputs: on CUDA `torch.cuda.max_memory_allocated`; on the
CPU the peak resident set size of a fresh subprocess per configuration (the kernel's high-water
mark, VmHWM, reset through /proc/self/clear_refs just before the pass), so it counts every byte
the allocator really touched. Memory per token (peak / (B * L)) staying flat across L is what
linear growth looks like.

With `--runner` it times the fraud runner instead, on simulated inputs: (a) 128 histories of
128 events, (b) realtime batches of 8 and 32 from the simulator's history mix, (c) one 4,096-event
history. The baseline in the same run plans sub-batches the former way (`greedy_passes`: fill the
token budget longest first) and runs every row of the last layer; the engine plans its forward
passes with `engine.batching.plan_batch` (least padded cost, each pass charged its fixed cost), as a
worker does, and computes only the transaction's row of the last layer. Time is CPU time of
the calling thread (`time.thread_time`), min and median of `--repeats`, the two alternating.

With `--plot DIR` it also writes DIR/sparse_vs_dense.png: time against L for both scopes, sparse
and dense, captioned with the command and the time of the run (`bench/plots.py`).

On a CPU shared with other busy processes, run with `OMP_WAIT_POLICY=PASSIVE` (or `--threads 1`):
OpenMP's default spin-then-wait makes every parallel region wait for a descheduled thread, which
swamps small kernels, and the sparse layer runs many of them.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.batching import BatchLimits, fits, plan_batch  # noqa: E402
from engine.fraud_features import MAX_HISTORY  # noqa: E402
from engine.fraud_model import FraudModelConfig, FraudTransformer, collate, padded_length  # noqa: E402
from engine.fraud_runner import FraudRunner, PreparedFraud, load_fraud  # noqa: E402
from engine.sparse_attention import make_attention  # noqa: E402
from training.fraud_sim import FraudSimulator, SimConfig  # noqa: E402

LENGTHS = (512, 1024, 2048, 4096, 8192)
QUICK_LENGTHS = (512, 1024, 2048, 4096)
KINDS = ("sparse", "dense")
SCOPES = ("layer", "model")
MIB = 2**20

Forward = Callable[[], torch.Tensor]


def build(scope: str, kind: str, length: int, batch: int, device: torch.device) -> Forward:
    """One forward pass of `scope` with `kind` attention over inputs of shape (batch, length, ...)."""
    torch.manual_seed(0)
    cfg = FraudModelConfig(attention=kind)
    mask = torch.ones(batch, length, dtype=torch.bool, device=device)  # (B, L)
    if scope == "layer":
        layer = make_attention(kind, cfg.attention_config()).to(device).eval()
        x = torch.randn(batch, length, cfg.dim, device=device)  # (B, L, D)
        return lambda: layer(x, mask)
    model = FraudTransformer(cfg).to(device).eval()
    cat = torch.stack([torch.randint(1, v, (batch, length), device=device) for v in cfg.cat_vocab], dim=-1)  # (B, L, C)
    num = torch.randn(batch, length, cfg.n_numeric, device=device)  # (B, L, F)
    return lambda: model(cat, num, mask)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(forwards: dict[str, Forward], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per forward pass for each variant, the variants alternating."""
    times: dict[str, list[float]] = {kind: [] for kind in forwards}
    with torch.inference_mode():
        for forward in forwards.values():
            forward()
        for _ in range(repeats):
            for kind, forward in forwards.items():
                sync(device)
                start = time.perf_counter()
                forward()
                sync(device)
                times[kind].append(time.perf_counter() - start)
    return {kind: statistics.median(ts) for kind, ts in times.items()}


def cuda_peak_bytes(forward: Forward, device: torch.device) -> int:
    """Bytes one forward pass allocates on top of what is already allocated, at its peak."""
    with torch.inference_mode():
        forward()
        sync(device)
        gc.collect()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def cpu_peak_bytes(scope: str, kind: str, length: int, batch: int) -> int:
    """Run in a fresh process: the peak resident memory one forward pass adds, in bytes."""
    forward = build(scope, kind, length, batch, torch.device("cpu"))
    with torch.inference_mode():
        build(scope, kind, 64, batch, torch.device("cpu"))()  # load kernels and thread pools first
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = _status_kib("VmRSS")
        forward()
        return (_status_kib("VmHWM") - base) * 1024


def probe_cpu_memory(scope: str, kind: str, length: int, args: argparse.Namespace) -> int:
    cmd = [sys.executable, __file__, "--probe", scope, kind, str(length)]
    cmd += ["--batch", str(args.batch), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["peak_bytes"])


def peak_bytes(scope: str, kind: str, length: int, args: argparse.Namespace, device: torch.device) -> int:
    if device.type == "cuda":
        return cuda_peak_bytes(build(scope, kind, length, args.batch, device), device)
    return probe_cpu_memory(scope, kind, length, args)


def measure(scope: str, length: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    forwards = {kind: build(scope, kind, length, args.batch, device) for kind in KINDS}
    seconds = time_pair(forwards, args.repeats, device)
    del forwards
    gc.collect()
    row: dict[str, float] = {f"{kind}_ms": seconds[kind] * 1e3 for kind in KINDS}
    for kind in KINDS:
        row[f"{kind}_mib"] = peak_bytes(scope, kind, length, args, device) / MIB
    return row


HEADER = (
    f"{'scope':<6}{'L':>6}{'sparse ms':>11}{'dense ms':>10}{'speed-up':>10}"
    f"{'sparse MiB':>12}{'dense MiB':>11}{'mem ratio':>11}{'sparse KiB/tok':>16}{'dense KiB/tok':>15}"
)


def format_row(scope: str, length: int, batch: int, row: dict[str, float]) -> str:
    tokens = batch * length
    per_token = {kind: row[f"{kind}_mib"] * 1024 / tokens for kind in KINDS}
    mem_ratio = row["dense_mib"] / row["sparse_mib"] if row["sparse_mib"] > 0 else float("nan")
    return (
        f"{scope:<6}{length:>6}{row['sparse_ms']:>11.2f}{row['dense_ms']:>10.2f}"
        f"{row['dense_ms'] / row['sparse_ms']:>9.2f}x{row['sparse_mib']:>12.1f}{row['dense_mib']:>11.1f}"
        f"{mem_ratio:>10.2f}x{per_token['sparse']:>16.2f}{per_token['dense']:>15.2f}"
    )


def baseline_logits(model: FraudTransformer, cat: torch.Tensor, num: torch.Tensor, mask: torch.Tensor,
                    agg: torch.Tensor | None) -> torch.Tensor:
    """The fraud model's logits with every row of every layer computed: the pre-`forward_last` path."""
    last = model.layers[-1]

    def whole_layer(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return last(x, m)[:, -1]  # every row, then the transaction's

    last.forward_last = whole_layer  # type: ignore[method-assign]
    try:
        logits: torch.Tensor = model(cat, num, mask, agg)
    finally:
        del last.forward_last
    return logits


def runner_cases(runner: FraudRunner) -> dict[str, list[PreparedFraud]]:
    def histories(seed: int, count: int, lengths: tuple[tuple[int, int, float], ...]) -> list[PreparedFraud]:
        sim = FraudSimulator(SimConfig(seed=seed, lengths=lengths))
        return [runner.prepare(ex.input) for ex in sim.examples(count)]

    mix = histories(7, 40, SimConfig().lengths)
    return {
        "a 128 x 128 events": histories(10, 128, ((128, 128, 1.0),)),
        "b realtime 8 (mix)": mix[:8],
        "b realtime 32 (mix)": mix[8:40],
        "c 1 x 4096 events": histories(8, 1, ((MAX_HISTORY, MAX_HISTORY, 1.0),)),
    }


def greedy_passes(lengths: list[int], limits: BatchLimits) -> list[list[int]]:
    """The former planner: longest first, each pass filled until the next item would not fit."""
    passes: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        if passes and fits(lengths[passes[-1][0]], len(passes[-1]) + 1, limits):
            passes[-1].append(index)
        else:
            passes.append([index])
    return passes


def run_baseline(runner: FraudRunner, batch: list[PreparedFraud]) -> None:
    padded = [padded_length(p.n_tokens, runner.model.cfg.block_size) for p in batch]
    for idx in greedy_passes(padded, runner.pass_limits):
        items = [(batch[i].features.cat, batch[i].features.num) for i in idx]
        cat, num, mask = collate(items, runner.model.cfg.block_size)
        agg = None
        if runner.model.cfg.n_aggregates:
            agg = torch.from_numpy(np.stack([batch[i].aggregates for i in idx]))  # type: ignore[arg-type]
        torch.sigmoid(baseline_logits(runner.model, cat, num, mask, agg)).tolist()


def run_engine(runner: FraudRunner, batch: list[PreparedFraud]) -> None:
    """The worker's path: plan the forward passes, then run them."""
    runner.run(batch, plan_batch(batch, runner.pass_limits, runner.pass_cost))


def bench_runner(repeats: int) -> None:
    runner = load_fraud(REPO / "models" / "fraud", device="cpu")
    runner.explain_top = 0  # forward passes only on both sides: evidence is a backward pass of its own
    threads = torch.get_num_threads()
    print(f"fraud runner, torch {torch.__version__}, threads {threads}, CPU ms per batch (min / median of {repeats})")
    print(f"{'case':<22}{'baseline':>18}{'engine':>18}{'speed-up':>10}")
    for name, batch in runner_cases(runner).items():
        variants: dict[str, Callable[[], object]] = {
            "baseline": functools.partial(run_baseline, runner, batch),
            "engine": functools.partial(run_engine, runner, batch),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        with torch.inference_mode():
            for fn in variants.values():
                fn()
            for _ in range(repeats):
                for k, fn in variants.items():
                    start = time.thread_time()
                    fn()
                    times[k].append((time.thread_time() - start) * 1e3)
        cells = {k: (min(v), statistics.median(v)) for k, v in times.items()}
        print(
            f"{name:<22}"
            + "".join(f"{mn:>9.1f} /{md:>7.1f}" for mn, md in cells.values())
            + f"{cells['baseline'][0] / cells['engine'][0]:>9.2f}x",
            flush=True,
        )


def describe(args: argparse.Namespace, device: torch.device) -> str:
    cfg = FraudModelConfig()
    return (
        f"sparse vs dense SDPA, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
        f"device {device}, threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, batch {args.batch}, fp32, "
        f"median of {args.repeats}\n"
        f"layer: dim {cfg.dim}, {cfg.n_heads} heads, block {cfg.block_size}, {cfg.n_global} globals; "
        f"model: fraud transformer, {cfg.n_layers} layers, ffn x{cfg.ffn_mult}"
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="lengths up to 4096, 3 repeats")
    p.add_argument("--lengths", type=int, nargs="+", metavar="L", help="these lengths only (e.g. 512 for a smoke run)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    # One history per scored transaction is the realtime case.
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None, help="timed passes per variant (default 7, quick 3)")
    p.add_argument("--runner", action="store_true", help="time the fraud runner against its baseline instead")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write DIR/sparse_vs_dense.png (time against L)")
    p.add_argument("--probe", nargs=3, metavar=("SCOPE", "KIND", "L"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        scope, kind, length = args.probe
        print(json.dumps({"peak_bytes": cpu_peak_bytes(scope, kind, int(length), args.batch)}))
        return
    if args.runner:
        bench_runner(args.repeats)
        return
    device = torch.device(args.device)
    started = datetime.now(UTC)
    print(describe(args, device))
    print(HEADER, flush=True)
    rows: list[dict[str, float | str]] = []
    for scope in SCOPES:
        for length in args.lengths or (QUICK_LENGTHS if args.quick else LENGTHS):
            row = measure(scope, length, args, device)
            rows.append({"scope": scope, "length": length, **row})
            print(format_row(scope, length, args.batch, row), flush=True)
    if args.plot:
        from bench.plots import sparse_scaling

        caption = (f"`bench/sparse.py {' '.join(sys.argv[1:])}`, {started:%Y-%m-%d %H:%M} UTC, device {device}, "
                   f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, batch {args.batch}, "
                   f"median of {args.repeats}")
        print(f"wrote {sparse_scaling(rows, caption, args.plot / 'sparse_vs_dense.png')}")


if __name__ == "__main__":
    main()
