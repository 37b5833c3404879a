"""Thresholds chosen without defect images: from the scores of held-out normal images, at a false-alarm rate the
user picks, with the uncertainty that a finite number of normal images leaves.

A threshold at the ``k``-th largest of ``n`` normal scores lets ``k - 1`` of them through as false alarms; for a new
normal image (exchangeable with the held-out ones) the probability to score above the ``k``-th largest of ``n`` is
Beta(k, n + 1 - k) distributed (order statistics of uniform ranks), so its mean is ``k / (n + 1)`` and a 90 %
interval comes from the Beta quantiles. With 20 normal images the best a 1 % target can honestly promise is
"somewhere below about 14 %": the interval says so, where anomalib's fallback (the maximum normal score, anomalib
issues #2433, #3357) says nothing.

The test-set F1-optimal threshold (``metrics.f1_optimal_threshold``) stays beside it: it needs defect images and
is chosen on the very images it is judged on, an upper bound of what a threshold can do.
"""

import math

import numpy as np
from scipy.stats import beta

INTERVAL = 0.9


def normal_threshold(normal_scores: np.ndarray, false_alarm_rate: float) -> dict[str, float]:
    """The threshold that at most ``false_alarm_rate`` of normal scores exceed: the ``k``-th largest score with
    ``k = max(1, floor(rate * (n + 1)))``; returns it with n, k and the false-alarm rate to expect for new normal
    images (mean and a 90 % interval)."""
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), e.g. 0.01 for 1 %, got {false_alarm_rate}")
    n = len(scores)
    if n == 0:
        raise ValueError("No normal scores to choose a threshold from: hold out some good images (--holdout).")
    k = max(1, math.floor(false_alarm_rate * (n + 1)))
    low, high = beta.ppf([(1 - INTERVAL) / 2, (1 + INTERVAL) / 2], k, n + 1 - k)
    # a value just above the k-th largest score: scores >= threshold are anomalous, so that one is let through
    threshold = float(np.nextafter(scores[n - k], np.inf))
    return {"threshold": threshold, "false_alarm_rate": false_alarm_rate, "n": n, "k": k,
            "expected_rate": k / (n + 1), "expected_rate_low": float(low), "expected_rate_high": float(high)}


def describe(result: dict[str, float], what: str = "image") -> str:
    """One line for notebooks and the command line."""
    return (f"{what} threshold {result['threshold']:.4g} from {result['n']} normal {what}s at a target false-alarm "
            f"rate of {result['false_alarm_rate']:.1%}: expect {result['expected_rate']:.1%} on new normal "
            f"{what}s ({INTERVAL:.0%} interval {result['expected_rate_low']:.1%} to "
            f"{result['expected_rate_high']:.1%})")


def decision_quality(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and false-alarm rate of ``scores >= threshold`` against ``labels``."""
    labels = np.asarray(labels).ravel().astype(bool)
    predicted = np.asarray(scores).ravel() >= threshold
    true_positive = float((predicted & labels).sum())
    precision = true_positive / predicted.sum() if predicted.any() else float("nan")
    recall = true_positive / labels.sum() if labels.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    false_alarms = float((predicted & ~labels).sum() / (~labels).sum()) if (~labels).any() else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "false_alarm_rate": false_alarms}
