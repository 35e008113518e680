"""Serving the fraud model: prepare one `FraudInput`, score a batch along the plan it is given.

The worker calls `prepare` off the inference thread (featurisation and reason codes, CPU only) and
`run` on a lane batch with the forward passes `engine.batching.plan_batch` cut for it under the
runner's `pass_limits`, so one 4,096-event history does not pad a hundred short ones to its length.
A fraud input is one segment: its events padded to the attention block.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.batching import BatchLimits, BatchPlan, plan_batch
from engine.device import pick_device
from engine.errors import ModelLoadError, PrecisionUnavailable
from engine.fraud_features import Event, EventFeatures, FraudInput, featurize
from engine.fraud_model import FraudModelConfig, FraudTransformer, collate, padded_length

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


@dataclass(slots=True)
class PreparedFraud:
    """One featurised input; `n_tokens` is its cost under a lane's budget (events, transaction included)."""

    features: EventFeatures
    padded: int  # events padded to the model's attention block: the length a forward pass sees

    @property
    def n_tokens(self) -> int:
        return self.features.n_events

    @property
    def segments(self) -> tuple[int, ...]:
        return (self.padded,)


@dataclass(slots=True)
class FraudPrediction:
    score: float  # fraud probability in [0, 1]
    reasons: list[str]  # engine.fraud_features.REASON_CODES that fired, strongest pattern first


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
    ) -> None:
        self.model = model.eval()
        self.thresholds = thresholds
        self.name = f"fraud-{model.cfg.attention}-transformer"
        self.version = version
        self.device = device
        self.precision = "fp32"
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
        keep = None if self.context_events is None else self.context_events + 1
        if keep is not None and features.n_events > keep:
            features = EventFeatures(features.cat[-keep:], features.num[-keep:], features.reasons)
        return PreparedFraud(features, padded_length(features.n_events, self.model.cfg.block_size))

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
        scores = [0.0] * len(batch)
        for forward_pass in plan:
            idx = [item for item, _ in forward_pass]
            for i, score in zip(idx, self._score([batch[i].features for i in idx]), strict=True):
                scores[i] = score
        return [FraudPrediction(score, list(p.features.reasons)) for score, p in zip(scores, batch, strict=True)]

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

    @torch.inference_mode()
    def _score(self, features: list[EventFeatures]) -> list[float]:
        cat, num, mask = collate([(f.cat, f.num) for f in features], self.model.cfg.block_size)
        logits = self.model(cat.to(self.device), num.to(self.device), mask.to(self.device))  # (B,)
        return torch.sigmoid(logits.float()).cpu().tolist()


def load_fraud(model_dir: str | Path, device: str = "auto", precision: str = "auto",
               context_events: int | None = DEFAULT_CONTEXT_EVENTS) -> FraudRunner:
    """The fraud runner from a directory with config.json, model.safetensors and thresholds.json."""
    model_dir = Path(model_dir)
    if precision not in ("auto", "fp32"):
        raise PrecisionUnavailable(f"the fraud model has passed its accuracy gate in fp32 only, not {precision!r}")
    torch_device = pick_device(device)
    cfg = _read_config(model_dir)
    model = _load_weights(cfg, model_dir / "model.safetensors", torch_device)
    thresholds = _read_thresholds(model_dir / "thresholds.json")
    version = _version(model_dir / "model.safetensors")
    return FraudRunner(model, thresholds, version, torch_device, context_events=context_events)


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
