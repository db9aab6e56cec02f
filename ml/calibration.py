"""Calibration and the honest "not sure": a temperature, an uncertainty threshold, an OOD threshold.

All functions take the members' (TTA-averaged) logits M x N x C as numpy arrays, the way
`ml.export.Ensemble.scores` returns them, and reproduce the module's arithmetic: each member's
logits are divided by the temperature and softmaxed, and the ensemble averages the probabilities.

- ``fit_temperature(member_logits, labels)``: the one temperature T minimising the ensemble's NLL
  (golden-section search on log T; the NLL of a softmax is unimodal in 1/T for one member and in
  practice for a mean of a few).
- ``uncertain_threshold(probs, labels, target)``: the smallest top probability t at which the
  answers at or above t are at least ``target`` right; answers below t are flagged uncertain.
- ``ood_threshold(scores, max_flagged)``: the score above which at most ``max_flagged`` of
  in-distribution images lie.
- ``half_split(labels, seed)``: a seeded, stratified split of the validation images in two halves
  (fit on one, report on the other).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ml import metrics
from ml.data import stratified_split


def ensemble_probs(member_logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Mean over members of softmax(logits / T): N x C float64."""
    z = np.asarray(member_logits, dtype=np.float64) / temperature
    z = z - z.max(axis=2, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=2, keepdims=True)
    return p.mean(axis=0)


def energy(member_logits: np.ndarray) -> np.ndarray:
    """The OOD score: the members' mean energy -logsumexp(logits) (higher = less like the training data)."""
    z = np.asarray(member_logits, dtype=np.float64)
    m = z.max(axis=2, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=2, keepdims=True)))[..., 0]
    return -lse.mean(axis=0)


def fit_temperature(
    member_logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0, iters: int = 60
) -> float:
    """The temperature in [lo, hi] that minimises the ensemble's negative log-likelihood."""
    labels = np.asarray(labels)
    if not len(labels):
        raise ValueError("fitting a temperature needs labelled images")

    def loss(log_t: float) -> float:
        return metrics.nll(ensemble_probs(member_logits, math.exp(log_t)), labels)

    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = loss(d)
    return float(math.exp((a + b) / 2))


def half_split(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, report) indices: a seeded stratified split of the images in two halves (per class,
    the report half gets floor(n/2), the fit half the rest)."""
    labels = np.asarray(labels)
    per_class = int(np.bincount(labels).min()) // 2 if len(labels) else 0
    if per_class < 1:
        raise ValueError("every class needs at least two validation images to split them in halves")
    fit, report = stratified_split(labels, per_class, seed)
    return np.sort(fit), np.sort(report)


def selective(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy of the answers at or above ``threshold`` (kept) and below it (flagged), and the share flagged."""
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels)
    flagged = conf < threshold
    return {
        "n": int(len(conf)),
        "share_flagged": float(flagged.mean()) if len(conf) else float("nan"),
        "accuracy_above": float(correct[~flagged].mean()) if (~flagged).any() else None,
        "accuracy_below": float(correct[flagged].mean()) if flagged.any() else None,
        "accuracy_all": float(correct.mean()) if len(conf) else None,
    }


def uncertain_threshold(probs: np.ndarray, labels: np.ndarray, target: float = 0.97) -> float:
    """The smallest threshold t (one of the top probabilities) at which the answers with top
    probability >= t are at least ``target`` right; the largest top probability when none is."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    order = np.argsort(-conf, kind="mergesort")  # most confident first
    conf_sorted, correct_sorted = conf[order], correct[order]
    accuracy_kept = np.cumsum(correct_sorted) / np.arange(1, len(conf) + 1)  # keeping the first i+1
    ok = np.nonzero(accuracy_kept >= target)[0]
    if not len(ok):
        return float(conf_sorted[0])
    # keeping everything down to position i means a threshold of conf_sorted[i]; ties of that value
    # are kept too, so check the accuracy at the last position holding that value
    for i in ok[::-1]:
        last = np.searchsorted(-conf_sorted, -conf_sorted[i], side="right") - 1
        if accuracy_kept[last] >= target:
            return float(conf_sorted[i])
    return float(conf_sorted[0])


def ood_threshold(in_scores: np.ndarray, max_flagged: float = 0.05) -> float:
    """The (1 - max_flagged) quantile of in-distribution scores: a score above it is flagged."""
    return float(np.quantile(np.asarray(in_scores, dtype=np.float64), 1.0 - max_flagged))
