"""Temperature scaling and calibration error for the triage classifier.

A model's top probability should mean what it says: of the notes it calls ESI 2 with 0.8, about 80 %
should be ESI 2. Temperature scaling (Guo et al., 2017) divides every logit by one number T fitted to
minimise the negative log-likelihood on validation notes; it never changes a window's predicted level,
only how sure the model says it is. The expected calibration error (ECE) is the gap between confidence
and accuracy, averaged over equal-width confidence bins and weighted by each bin's share of notes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

ECE_BINS = 15
# T is searched in log space within these bounds: beyond them a model is broken, not miscalibrated.
T_MIN, T_MAX = 0.05, 20.0


def fit_temperature(logits: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]) -> float:
    """The T > 0 that minimises the mean NLL of softmax(logits / T) on these (validation) rows."""
    x = torch.as_tensor(logits, dtype=torch.float64)  # (N, C)
    y = torch.as_tensor(labels, dtype=torch.long)  # (N,)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return float(min(max(math.exp(float(log_t.item())), T_MIN), T_MAX))


def softmax(logits: npt.NDArray[np.float64], temperature: float = 1.0) -> npt.NDArray[np.float64]:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def expected_calibration_error(probs: npt.NDArray[np.float64], labels: npt.NDArray[np.int64],
                               bins: int = ECE_BINS) -> float:
    """Top-label ECE over `bins` equal-width confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        rows = (confidence > low) & (confidence <= high)
        if rows.any():
            total += float(rows.mean()) * abs(float(confidence[rows].mean()) - float(correct[rows].mean()))
    return total


def nll(probs: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]) -> float:
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def calibration_report(logits: npt.NDArray[np.float64], labels: npt.NDArray[np.int64],
                       temperature: float) -> dict[str, float]:
    """ECE and NLL before (T = 1) and after temperature scaling, on these rows."""
    before, after = softmax(logits), softmax(logits, temperature)
    return {
        "ece_before": round(expected_calibration_error(before, labels), 4),
        "ece_after": round(expected_calibration_error(after, labels), 4),
        "nll_before": round(nll(before, labels), 4),
        "nll_after": round(nll(after, labels), 4),
    }


def as_logit_matrix(rows: Sequence[Sequence[float]]) -> npt.NDArray[np.float64]:
    return np.asarray([list(r) for r in rows], dtype=np.float64)
