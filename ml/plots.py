"""Report figures (matplotlib, Agg backend: no display needed). Each function writes one PNG.

from ml import plots
plots.confusion_matrix(cm, classes, "report/confusion_matrix.png")
plots.reliability(metrics.calibration(probs, labels), "report/reliability.png")
plots.misclassified(images, labels, probs, classes, "report/misclassified.png")
plots.training_curves([("resnet20", "runs/<run>/metrics.csv")], "report/training_curves.png")
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_matrix(cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Heatmap coloured by the share of each true class (row), annotated with counts up to 20 classes.

    Colouring by row share keeps a rare class's errors visible; the numbers are the raw counts.
    """
    cm = np.asarray(cm)
    c = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    annotate = c <= 20
    side = 7.0 if c <= 12 else 9.0 if c <= 20 else 14.0
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    # with many classes each error cell is a small share: a square-root scale keeps them visible
    norm = matplotlib.colors.PowerNorm(0.5, vmin=0.0, vmax=1.0) if c > 20 else matplotlib.colors.Normalize(0.0, 1.0)
    im = ax.imshow(share, cmap="Blues", norm=norm)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of the true class" + (" (square-root scale)" if c > 20 else ""))
    tick_size = 9 if c <= 12 else 7 if c <= 20 else 4
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(classes, rotation=45 if c <= 20 else 90, ha="right" if c <= 20 else "center", fontsize=tick_size)
    ax.set_yticklabels(classes, fontsize=tick_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if annotate:
        font = 8 if c <= 12 else 6
        for t in range(c):
            for p in range(c):
                if cm[t, p]:
                    ax.text(
                        p,
                        t,
                        str(int(cm[t, p])),
                        ha="center",
                        va="center",
                        fontsize=font,
                        color="white" if share[t, p] > 0.5 else "black",
                    )
    total = cm.sum()
    acc = np.trace(cm) / total if total else float("nan")
    ax.set_title(title or f"Confusion matrix ({int(total)} images, accuracy {100 * acc:.2f}%)")
    return _save(fig, path)


def reliability(calibration: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, counts below."""
    bins = calibration["bins"]
    lower = np.array([b["lower"] for b in bins])
    width = np.array([b["upper"] - b["lower"] for b in bins])
    counts = np.array([b["count"] for b in bins])
    acc = np.array([b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["confidence"] is not None else 0.0 for b in bins])
    has = counts > 0
    fig, (ax, axc) = plt.subplots(
        2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08}
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.bar(lower[has], acc[has], width=width[has], align="edge", color="#4c72b0", edgecolor="white", label="accuracy")
    gap_bottom = np.minimum(acc, conf)[has]
    ax.bar(
        lower[has],
        np.abs(conf - acc)[has],
        bottom=gap_bottom,
        width=width[has],
        align="edge",
        color="#dd8452",
        alpha=0.5,
        edgecolor="#dd8452",
        label="gap to mean confidence",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=9)
    ax.set_title(
        title
        or f"Reliability diagram: ECE {100 * calibration['ece']:.2f}% ({calibration['n_bins']} bins, top-1 confidence)"
    )
    axc.bar(lower, counts, width=width, align="edge", color="#55a868", edgecolor="white")
    if has.any() and counts[has].max() > 20 * counts[has].min():  # a well-trained model piles up near 1.0
        axc.set_yscale("log")
    axc.set_xlabel("confidence (top-1 probability)")
    axc.set_ylabel("images")
    return _save(fig, path)


def misclassified(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    max_images: int = 36,
) -> Path:
    """Grid of confident mistakes: each tile shows the image, true -> predicted and confidence.

    The tiles take each true class's most confident mistakes in turn (round robin), so one
    dominant confusion (truck -> automobile) does not fill the whole grid.
    """
    images, labels, probs = np.asarray(images), np.asarray(labels), np.asarray(probs)
    preds = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    all_wrong = np.flatnonzero(preds != labels)
    by_class = [
        w[np.argsort(-conf[w], kind="stable")] for w in (all_wrong[labels[all_wrong] == c] for c in range(len(classes)))
    ]
    depth = max((len(w) for w in by_class), default=0)
    picked = [w[r] for r in range(depth) for w in by_class if r < len(w)][:max_images]
    wrong = np.array(picked, dtype=np.int64)
    cols = max(1, min(6, len(wrong)))
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.25 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):
        ax.imshow(images[i].transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(f"{classes[labels[i]]} → {classes[preds[i]]}\n{100 * conf[i]:.0f}%", fontsize=8)
    if len(wrong) == 0:
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(
        f"Confident mistakes, round robin over true classes ({len(wrong)} of {len(all_wrong)}): true → predicted, confidence",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)


def read_metrics_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a training ``metrics.csv`` as float arrays (empty cells become NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    out = {}
    for key in rows[0]:
        values = []
        for r in rows:
            try:
                values.append(float(r[key]))
            except (TypeError, ValueError):
                values.append(float("nan"))
        out[key] = np.array(values)
    return out


def training_curves(runs: Sequence[tuple[str, str | Path]], path: str | Path) -> Path:
    """Loss and accuracy against epoch, train (dashed) and validation (solid), one colour per run."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    last_epoch = 1
    for k, (label, csv_path) in enumerate(runs):
        cols = read_metrics_csv(csv_path)
        if "epoch" not in cols or not len(cols["epoch"]):
            continue
        last_epoch = max(last_epoch, int(np.nanmax(cols["epoch"])))
        colour = colours[k % len(colours)]
        epoch = cols["epoch"]
        prefix = f"{label}: " if len(runs) > 1 else ""
        for key, style, name in (("train_loss", "--", "train"), ("val_loss", "-", "val")):
            if key in cols and np.isfinite(cols[key]).any():
                ax_loss.plot(
                    epoch, cols[key], style, color=colour, marker="." if len(epoch) < 40 else None, label=prefix + name
                )
        for key, style, name in (("train_acc", "--", "train"), ("val_acc", "-", "val")):
            if key in cols and np.isfinite(cols[key]).any():
                ax_acc.plot(
                    epoch,
                    100 * cols[key],
                    style,
                    color=colour,
                    marker="." if len(epoch) < 40 else None,
                    label=prefix + name,
                )
        if "val_acc" in cols and np.isfinite(cols["val_acc"]).any():
            best = int(np.nanargmax(cols["val_acc"]))
            ax_acc.annotate(
                f"best val {100 * cols['val_acc'][best]:.2f}%",
                (epoch[best], 100 * cols["val_acc"][best]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
                color=colour,
            )
    from matplotlib.ticker import MaxNLocator

    ax_loss.set_title("Cross-entropy loss")
    ax_acc.set_title("Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        if last_epoch <= 15:  # few epochs: one tick each, and room around a lone point
            ax.set_xticks(range(1, last_epoch + 1))
            ax.set_xlim(0.5, last_epoch + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(y=0.1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_acc.set_ylabel("%")
    fig.tight_layout()
    return _save(fig, path)


def score_histogram(
    groups: dict[str, np.ndarray],
    path: str | Path,
    threshold: float | None = None,
    xlabel: str = "score",
    title: str = "",
) -> Path:
    """Overlaid histograms of a score for a few groups of images, with the decision threshold."""
    fig, ax = plt.subplots(figsize=(7, 4))
    values = [np.asarray(v, dtype=np.float64) for v in groups.values() if len(v)]
    lo = min(v.min() for v in values) if values else 0.0
    hi = max(v.max() for v in values) if values else 1.0
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
    for label, v in groups.items():
        if len(v):
            ax.hist(np.asarray(v, dtype=np.float64), bins=bins, alpha=0.55, density=True, label=f"{label} ({len(v)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=9)
    ax.set_title(title)
    return _save(fig, path)
