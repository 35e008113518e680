"""Temperature scaling recovers a known temperature and never changes a predicted level."""

from __future__ import annotations

import numpy as np

from training.calibration import calibration_report, expected_calibration_error, fit_temperature, softmax


def _sampled(true_t: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, 5))
    probs = softmax(logits, true_t)
    labels = np.array([rng.choice(5, p=p) for p in probs])
    return logits, labels


def test_fit_recovers_the_temperature_labels_were_drawn_with() -> None:
    for true_t in (0.5, 1.0, 2.5):
        logits, labels = _sampled(true_t)
        assert abs(fit_temperature(logits, labels) - true_t) / true_t < 0.1


def test_an_overconfident_model_gets_a_lower_error_and_the_same_levels() -> None:
    logits, labels = _sampled(2.5)
    t = fit_temperature(logits, labels)
    report = calibration_report(logits, labels, t)
    assert report["ece_after"] < report["ece_before"] / 2
    assert report["nll_after"] < report["nll_before"]
    assert (softmax(logits, t).argmax(axis=1) == softmax(logits).argmax(axis=1)).all()


def test_ece_of_a_perfectly_calibrated_two_bin_case() -> None:
    probs = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10)
    labels = np.array([0] * 9 + [1] + [0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, labels) < 1e-9
