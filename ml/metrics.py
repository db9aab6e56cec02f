"""Classification metrics as pure functions of scores (logits or probabilities) and labels.

    from ml.metrics import softmax, accuracy, top_k_accuracy, confusion_matrix, per_class_report
    probs = softmax(logits)                      # N x C
    accuracy(probs, labels)                      # == sklearn.metrics.accuracy_score
    top_k_accuracy(probs, labels, k=5)           # == sklearn.metrics.top_k_accuracy_score
    cm = confusion_matrix(probs.argmax(1), labels, num_classes=10)   # rows true, columns predicted
    per_class_report(cm)                         # == precision_recall_fscore_support(zero_division=0)
    calibration(probs, labels)                   # expected calibration error, 15 bins, + bin data

Arguments may be numpy arrays or torch tensors. Functions that only rank scores (accuracy, top-k,
confusion matrix) accept logits or probabilities alike; `calibration` and `nll` need probabilities
(use `softmax` on logits first). Tests check every number against scikit-learn's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # numpy array, torch tensor or nested lists


def as_numpy(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().float().numpy() if x.dtype.is_floating_point else x.detach().cpu().numpy()
    return np.asarray(x)


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must be N x C, got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must have shape ({scores.shape[0]},), got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}), got {labels.min()}..{labels.max()}")


def softmax(logits: ArrayLike) -> np.ndarray:
    z = as_numpy(logits).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predictions(scores: ArrayLike) -> np.ndarray:
    return as_numpy(scores).argmax(axis=1)


def accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
    scores, labels = as_numpy(scores), as_numpy(labels)
    _check(scores, labels)
    return float((scores.argmax(axis=1) == labels).mean()) if len(labels) else float("nan")


def top_k_accuracy(scores: ArrayLike, labels: ArrayLike, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores."""
    scores, labels = as_numpy(scores), as_numpy(labels)
    _check(scores, labels)
    if not len(labels):
        return float("nan")
    if k >= scores.shape[1]:
        return 1.0
    # The label is in the top k when fewer than k classes rank above it. As in scikit-learn (a stable
    # ascending sort, reversed), a class with an equal score ranks above the label when its index is higher.
    true_scores = scores[np.arange(len(labels)), labels]
    higher = (scores > true_scores[:, None]).sum(axis=1)
    tied_above = ((scores == true_scores[:, None]) & (np.arange(scores.shape[1])[None, :] > labels[:, None])).sum(
        axis=1
    )
    return float((higher + tied_above < k).mean())


def confusion_matrix(preds: ArrayLike, labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts ``cm[true, predicted]`` (rows are true classes, columns predicted), int64 C x C."""
    preds, labels = as_numpy(preds).astype(np.int64), as_numpy(labels).astype(np.int64)
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.shape} predictions but {labels.shape} labels")
    return np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def per_class_report(cm: np.ndarray) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support from a confusion matrix, plus macro averages.

    A class never predicted has precision 0 (scikit-learn's ``zero_division=0``); likewise recall 0
    for a class with no true samples and F1 0 when precision + recall is 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(np.int64),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }


def most_confused(cm: np.ndarray, classes: list[str] | None = None, top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` largest off-diagonal cells: (true, predicted, count, share of the true class)."""
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    rows = []
    support = cm.sum(axis=1)
    for flat in order:
        t, p = divmod(int(flat), cm.shape[1])
        if off[t, p] == 0:
            break
        rows.append(
            {
                "true": classes[t] if classes else t,
                "predicted": classes[p] if classes else p,
                "count": int(off[t, p]),
                "rate": float(off[t, p] / support[t]) if support[t] else 0.0,
            }
        )
    return rows


def calibration(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> dict[str, Any]:
    """Expected calibration error of the top-1 confidence, with ``n_bins`` equal-width bins.

    Bin i holds confidences in (i/n, (i+1)/n] (the first bin includes 0). ECE is the sum over bins of
    (bin count / N) * |bin accuracy - bin mean confidence|. Returns the ECE, the maximum calibration
    error and the per-bin data of a reliability diagram.
    """
    probs, labels = as_numpy(probs).astype(np.float64), as_numpy(labels)
    _check(probs, labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    bins = []
    ece, mce = 0.0, 0.0
    n = len(labels)
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        acc = float(correct[mask].mean()) if count else None
        mean_conf = float(conf[mask].mean()) if count else None
        if count:
            gap = abs(acc - mean_conf)
            ece += count / n * gap
            mce = max(mce, gap)
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "accuracy": acc,
                "confidence": mean_conf,
            }
        )
    return {"ece": float(ece), "mce": float(mce), "n_bins": n_bins, "bins": bins}


def nll(probs: ArrayLike, labels: ArrayLike, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (natural log); probabilities clipped at ``eps``."""
    probs, labels = as_numpy(probs).astype(np.float64), as_numpy(labels)
    _check(probs, labels)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], eps, None)).mean())
