"""Serving the fraud model: prepare one `FraudInput`, score a batch along the plan it is given.

The worker calls `prepare` off the inference thread (featurisation and reason codes, CPU only) and
`run` on a lane batch with the forward passes `engine.batching.plan_batch` cut for it under the
runner's `pass_limits`, so one 4,096-event history does not pad a hundred short ones to its length.
A fraud input is one segment: its events padded to the attention block.

A model with aggregates gets them from `engine.fraud_aggregates.card_aggregates` (the card state
built from the request's history, then read for the transaction): the code training used. Each
prediction the model flags (score at or above `explain_from`, by default the review threshold)
carries evidence: the history events and the aggregates with the largest gradient x input
attribution towards fraud (`explain_top` of each). Scores come from one inference pass over the
whole batch; the backward pass runs only over the flagged rows, so the approved majority of the
traffic costs no more than without evidence (`explain_top` 0 turns evidence off; the scores never
change).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from engine.batching import BatchLimits, BatchPlan, plan_batch
from engine.device import pick_device
from engine.errors import ModelLoadError, PrecisionUnavailable
from engine.fraud_aggregates import AGGREGATE_FEATURES, card_aggregates
from engine.fraud_features import Event, EventColumns, EventFeatures, FraudInput, featurize
from engine.fraud_model import FraudModelConfig, FraudTransformer, collate, padded_length
from engine.precision import compute_dtype, resolve_policy

# Padded events per forward pass: a 4,096-event history plus a few short ones, about 100 MiB
# of activations for the shipped 64-wide model.
DEFAULT_TOKEN_BUDGET = 16384
# Short realtime inputs: more per pass stops paying off on the CPU.
DEFAULT_MAX_BATCH = 64
# History events the model attends to: the latest 512 (and the transaction). Features are still
# computed over the whole history (velocity, novelty, travel), so older events shape every row the
# model sees; only the attention context is bounded. The shipped model was trained on the latest
# 128 events of each history, and on its 2,500 held-out test inputs a 512-event context gave the
# same decision as the full history for every input (516 of them longer than 512), AUC-PR 0.9162
# against 0.9163, while the worst single input (4,096 events) took 3.1 ms instead of 17.1 ms.
DEFAULT_CONTEXT_EVENTS = 512
# The fixed cost of one forward pass in padded events: on one CPU thread a pass costs about 1 ms
# plus 4-5 us per padded event, so a pass is worth starting when it saves ~200 events of padding.
PASS_COST_EVENTS = 200
# Evidence items per prediction: history events and aggregates.
DEFAULT_EXPLAIN_TOP = 3
PRECISION_FILE = "precision.json"


@dataclass(slots=True)
class PreparedFraud:
    """One featurised input; `n_tokens` is its cost under a lane's budget (events, transaction included)."""

    features: EventFeatures
    padded: int  # events padded to the model's attention block: the length a forward pass sees
    aggregates: np.ndarray | None = None  # (N_AGGREGATES,) float32, for a model that reads them
    history_ts: np.ndarray | None = None  # (rows - 1,) epoch seconds of the history events in the rows
    first_index: int = 0  # history index of the first row

    @property
    def n_tokens(self) -> int:
        return self.features.n_events

    @property
    def segments(self) -> tuple[int, ...]:
        return (self.padded,)


@dataclass(frozen=True, slots=True)
class EventEvidence:
    """A history event that pushed the score up: its index in the history (0 oldest) and time."""

    index: int
    timestamp: float  # epoch seconds
    weight: float  # gradient x input attribution, in logits


@dataclass(frozen=True, slots=True)
class AggregateEvidence:
    """A card aggregate that pushed the score up, with its value (engine.fraud_aggregates)."""

    name: str
    value: float
    weight: float  # gradient x input attribution of the standardised value, in logits


@dataclass(slots=True)
class FraudPrediction:
    score: float  # fraud probability in [0, 1]
    reasons: list[str]  # engine.fraud_features.REASON_CODES that fired, strongest pattern first
    events: list[EventEvidence] = field(default_factory=list)  # strongest first
    aggregates: list[AggregateEvidence] = field(default_factory=list)  # strongest first


class FraudRunner:
    """The fraud model behind the engine runner API: name, version, prepare, run, warmup."""

    def __init__(
        self,
        model: FraudTransformer,
        thresholds: dict[str, float],
        version: str,
        device: torch.device,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_batch_size: int = DEFAULT_MAX_BATCH,
        context_events: int | None = DEFAULT_CONTEXT_EVENTS,
        explain_top: int = DEFAULT_EXPLAIN_TOP,
        explain_from: float | None = None,
    ) -> None:
        self.model = model.eval()
        self.thresholds = thresholds
        self.name = _model_name(model.cfg)
        self.version = version
        self.device = device
        self.precision = "fp32"
        self.explain_top = explain_top
        # Scores at or above this get evidence (None: the model's review threshold).
        self.explain_from = float(thresholds.get("review", 0.0)) if explain_from is None else explain_from
        self.token_budget = token_budget
        self.max_batch_size = max_batch_size
        if context_events is not None and context_events < 0:
            raise ValueError("context_events must be >= 0 or None (the whole history)")
        self.context_events = context_events

    def prepare(self, item: FraudInput) -> PreparedFraud:
        """Featurise one input; raises engine.errors.InputError for one the model cannot take.

        Every event is featurised; the model then sees the latest `context_events` of them and the
        transaction (None: all).
        """
        features = featurize(item)
        aggregates = card_aggregates(item.history, item.transaction) if self.model.cfg.n_aggregates else None
        keep = None if self.context_events is None else self.context_events + 1
        if keep is not None and features.n_events > keep:
            features = EventFeatures(features.cat[-keep:], features.num[-keep:], features.reasons)
        first = len(item.history) - (features.n_events - 1)
        history_ts = np.asarray(EventColumns.of(item.history).timestamp[first:], dtype=np.float64)
        padded = padded_length(features.n_events, self.model.cfg.block_size)
        return PreparedFraud(features, padded, aggregates, history_ts, first)

    def use_precision(self, policy: str) -> None:
        """Run under `policy` ("fp32" or "bf16") from now on; the caller checked it is wanted."""
        if policy not in ("fp32", "bf16"):
            raise ValueError(f"the fraud model runs in fp32 or bf16, not {policy!r}")
        self.model = self.model.to(compute_dtype(policy))
        self.precision = policy

    @property
    def pass_limits(self) -> BatchLimits:
        """What one forward pass may hold; the batch former plans passes with it."""
        return BatchLimits(self.token_budget, self.max_batch_size)

    @property
    def pass_cost(self) -> int:
        """The fixed cost of one forward pass in padded events, for the batch former's plan."""
        return PASS_COST_EVENTS

    def run(self, batch: Sequence[PreparedFraud], plan: BatchPlan) -> list[FraudPrediction]:
        """One prediction per prepared input, in input order; the forward passes are the `plan`'s."""
        out: list[FraudPrediction | None] = [None] * len(batch)
        for forward_pass in plan:
            idx = [item for item, _ in forward_pass]
            for i, prediction in zip(idx, self._score([batch[i] for i in idx]), strict=True):
                out[i] = prediction
        return [p for p in out if p is not None]

    def predict(self, inputs: Sequence[FraudInput]) -> list[FraudPrediction]:
        """Prepare, plan and run: what a worker does with one lane batch, for evaluation and tools."""
        batch = [self.prepare(item) for item in inputs]
        return self.run(batch, plan_batch(batch, self.pass_limits, self.pass_cost))

    def warmup(self) -> None:
        """One forward pass per code path (a single block and several blocks) before serving."""
        t = 1.7e9
        history = [Event(20.0 + i, "EUR", "5411", "contactless", "DE", t + 3600.0 * i, "m", None) for i in range(100)]
        txn = Event(35.0, "EUR", "5812", "contactless", "DE", t + 3600.0 * 101, "n", None)
        self.predict([FraudInput(history, txn), FraudInput(history[:5], txn)])

    def _score(self, items: list[PreparedFraud]) -> list[FraudPrediction]:
        cat, num, mask = collate([(p.features.cat, p.features.num) for p in items], self.model.cfg.block_size)
        dtype = compute_dtype(self.precision)
        agg = None
        if self.model.cfg.n_aggregates:
            agg = torch.from_numpy(np.stack([_aggregates(p) for p in items])).to(self.device, dtype)  # (B, A)
        inputs = (cat.to(self.device), num.to(self.device, dtype), mask.to(self.device), agg)
        with torch.inference_mode():
            logits = self.model(*inputs)  # (B,)
        scores = torch.sigmoid(logits.float()).cpu().tolist()
        out = [FraudPrediction(s, list(p.features.reasons)) for s, p in zip(scores, items, strict=True)]
        flagged = [b for b, s in enumerate(scores) if s >= self.explain_from] if self.explain_top > 0 else []
        if not flagged:
            return out
        rows = torch.tensor(flagged)
        cat_f, num_f, mask_f = (t.index_select(0, rows) for t in (cat, num, mask))
        agg_f = None if agg is None else agg.index_select(0, rows.to(agg.device))
        _, event_attr, agg_attr = self.model.explain(cat_f.to(self.device), num_f.to(self.device, dtype),
                                                     mask_f.to(self.device), agg_f)
        events = event_attr.cpu().numpy()  # (F, Lp)
        aggs = None if agg_attr is None else agg_attr.cpu().numpy()  # (F, A)
        for f, b in enumerate(flagged):
            out[b].events = self._top_events(items[b], events[f])
            out[b].aggregates = [] if aggs is None else self._top_aggregates(items[b], aggs[f])
        return out

    def _top_events(self, item: PreparedFraud, attribution: np.ndarray) -> list[EventEvidence]:
        n_history = item.features.n_events - 1
        # The item's rows are the last n_events of the padded row; the very last is the transaction.
        history = attribution[len(attribution) - item.features.n_events : len(attribution) - 1]  # (n_history,)
        ts = item.history_ts if item.history_ts is not None else np.zeros(n_history)
        order = np.argsort(-history, kind="stable")[: self.explain_top]
        return [EventEvidence(item.first_index + int(j), float(ts[j]), float(history[j]))
                for j in order if history[j] > 0]

    def _top_aggregates(self, item: PreparedFraud, attribution: np.ndarray) -> list[AggregateEvidence]:
        values = _aggregates(item)
        order = np.argsort(-attribution, kind="stable")[: self.explain_top]
        return [AggregateEvidence(AGGREGATE_FEATURES[j], float(values[j]), float(attribution[j]))
                for j in order if attribution[j] > 0]


def _aggregates(item: PreparedFraud) -> np.ndarray:
    if item.aggregates is None:
        raise ValueError("this model reads card aggregates: prepare the input with its runner")
    return item.aggregates


def _model_name(cfg: FraudModelConfig) -> str:
    if not cfg.use_sequence:
        return "fraud-aggregates-mlp"
    kind = "hybrid" if cfg.n_aggregates else "transformer"
    return f"fraud-{cfg.attention}-{kind}"


def load_fraud(model_dir: str | Path, device: str = "auto", precision: str = "auto",
               context_events: int | None = DEFAULT_CONTEXT_EVENTS) -> FraudRunner:
    """The fraud runner from a directory with config.json, model.safetensors and thresholds.json.

    `precision="auto"` takes the default of `precision.json` (a policy whose accuracy gate passed)
    where this hardware has it, else fp32; an explicit policy must have passed and be available.
    """
    model_dir = Path(model_dir)
    torch_device = pick_device(device)
    gated = _gated_default(model_dir / PRECISION_FILE)
    if precision not in ("auto", "fp32", gated):
        raise PrecisionUnavailable(f"the fraud model has no passed accuracy gate for {precision!r}")
    choice = resolve_policy(precision, torch_device, default=gated)
    cfg = _read_config(model_dir)
    model = _load_weights(cfg, model_dir / "model.safetensors", torch_device)
    thresholds = _read_thresholds(model_dir / "thresholds.json")
    version = _version(model_dir / "model.safetensors")
    runner = FraudRunner(model, thresholds, version, torch_device, context_events=context_events)
    runner.use_precision(choice.policy)
    return runner


def _gated_default(path: Path) -> str:
    """The default policy of precision.json if its gate passed; fp32 without one."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return "fp32"
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    policy = str(raw.get("default", "fp32"))
    passed = bool(raw.get("gate", {}).get(policy, {}).get("passed", policy == "fp32"))
    return policy if passed and policy in ("fp32", "bf16") else "fp32"


def _read_config(model_dir: Path) -> FraudModelConfig:
    try:
        return FraudModelConfig.from_json(model_dir / "config.json")
    except (OSError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the fraud model config in {model_dir}: {exc}") from exc


def _load_weights(cfg: FraudModelConfig, path: Path, device: torch.device) -> FraudTransformer:
    with torch.device("meta"):
        model = FraudTransformer(cfg)
    try:
        state = load_file(str(path), device=str(device))
        model.load_state_dict(state, strict=True, assign=True)
    except (OSError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load fraud weights from {path}: {exc}") from exc
    return model.eval()


def _read_thresholds(path: Path) -> dict[str, float]:
    try:
        raw = json.loads(path.read_text())
        return {"review": float(raw["review"]), "decline": float(raw["decline"])}
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"cannot read fraud thresholds from {path}: {exc}") from exc


def _version(weights: Path) -> str:
    """The first 12 hex digits of the weights' SHA-256: changes exactly when the weights do."""
    try:
        return hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    except OSError as exc:
        raise ModelLoadError(f"cannot read fraud weights {weights}: {exc}") from exc
