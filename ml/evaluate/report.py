"""Metrics of probabilities against labels, and the report folder: report.json, report.md, predictions.npz, PNGs."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ml import metrics, plots
from ml.evaluate.data import describe_split


# ============================================================================= metrics and report
def evaluate_probs(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Every metric of the report, as JSON-ready Python values."""
    probs, labels = metrics.as_numpy(probs).astype(np.float64), metrics.as_numpy(labels).astype(np.int64)
    c = len(classes)
    if probs.shape[1] != c:
        raise ValueError(f"{probs.shape[1]} probability columns but {c} classes")
    preds = probs.argmax(axis=1)
    cm = metrics.confusion_matrix(preds, labels, c)
    per = metrics.per_class_report(cm)
    cal = metrics.calibration(probs, labels)
    k = min(5, c)
    return {
        "n": int(len(labels)),
        "accuracy": metrics.accuracy(probs, labels),
        f"top{k}": metrics.top_k_accuracy(probs, labels, k=k),
        "macro_precision": per["macro_precision"],
        "macro_recall": per["macro_recall"],
        "macro_f1": per["macro_f1"],
        "ece": cal["ece"],
        "mce": cal["mce"],
        "nll": metrics.nll(probs, labels),
        "per_class": [
            {
                "class": name,
                "precision": float(per["precision"][i]),
                "recall": float(per["recall"][i]),
                "f1": float(per["f1"][i]),
                "support": int(per["support"][i]),
            }
            for i, name in enumerate(classes)
        ],
        "most_confused": metrics.most_confused(cm, list(classes), top=10),
        "confusion_matrix": cm.tolist(),
        "calibration_bins": cal["bins"],
        "classes": list(classes),
    }


def summary_line(result: dict[str, Any]) -> str:
    top = next((k for k in result if k.startswith("top") and k[3:].isdigit()), "top5")
    return (
        f"accuracy {100 * result['accuracy']:.2f}% | {top} {100 * result.get(top, float('nan')):.2f}% | "
        f"macro F1 {100 * result['macro_f1']:.2f}% | ECE {100 * result['ece']:.2f}% | NLL {result['nll']:.4f} | n {result['n']}"
    )


def _markdown(report: dict[str, Any]) -> str:
    r = report
    top = next(k for k in r if k.startswith("top") and k[3:].isdigit())
    lines = [
        f"# Evaluation: {r.get('title', '')}".rstrip(),
        "",
        f"Data: {r['data']['description']}" + (" · flip TTA" if r.get("tta") else ""),
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {100 * r['accuracy']:.2f}% |",
        f"| {top} accuracy | {100 * r[top]:.2f}% |",
        f"| macro precision | {100 * r['macro_precision']:.2f}% |",
        f"| macro recall | {100 * r['macro_recall']:.2f}% |",
        f"| macro F1 | {100 * r['macro_f1']:.2f}% |",
        f"| expected calibration error (15 bins) | {100 * r['ece']:.2f}% |",
        f"| negative log-likelihood | {r['nll']:.4f} |",
        f"| images | {r['n']} |",
        "",
    ]
    if r.get("ensemble"):
        e = r["ensemble"]
        lines += ["## Ensemble members", "", "| member | accuracy | macro F1 |", "|---|---|---|"]
        for m in e["members"]:
            lines.append(f"| {m['name']} | {100 * m['accuracy']:.2f}% | {100 * m['macro_f1']:.2f}% |")
        lines.append(f"| **mean probability** | **{100 * r['accuracy']:.2f}%** | **{100 * r['macro_f1']:.2f}%** |")
        mv = e["majority_vote"]
        lines += [f"| majority vote | {100 * mv['accuracy']:.2f}% | {100 * mv['macro_f1']:.2f}% |", ""]
    if r.get("prediction_set"):
        s = r["prediction_set"]
        fitted = s.get("fitted_coverage")
        lines += [
            "## Answer sets",
            "",
            "The bundle's answer sets (the classes it cannot rule out; `ml.conformal`), fitted for "
            + (f"{100 * fitted:g}%" if fitted else "an unstated")
            + " coverage on its own held-out images, measured on these:",
            "",
            f"- held the true class for **{100 * s['coverage']:.2f}%** of the {s['n']} images, "
            f"{s['mean_size']:.3f} classes per set",
            f"- one class: {100 * s['by_size']['1']['share']:.1f}% of the sets; two: "
            f"{100 * s['by_size']['2']['share']:.1f}%; three or more: {100 * s['by_size']['3+']['share']:.1f}%",
            "",
        ]
    lines += ["## Per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for row in r["per_class"]:
        lines.append(
            f"| {row['class']} | {100 * row['precision']:.1f}% | {100 * row['recall']:.1f}% | {100 * row['f1']:.1f}% | {row['support']} |"
        )
    lines += [
        "",
        "## Most confused (true → predicted)",
        "",
        "| true | predicted | count | share of true class |",
        "|---|---|---|---|",
    ]
    for row in r["most_confused"]:
        lines.append(f"| {row['true']} | {row['predicted']} | {row['count']} | {100 * row['rate']:.1f}% |")
    lines += [""]
    figures = [
        f
        for f in ("confusion_matrix.png", "reliability.png", "misclassified.png", "training_curves.png")
        if f in r.get("figures", [])
    ]
    lines += [f"![{f[:-4].replace('_', ' ')}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _write_figures(
    out: Path,
    result: dict[str, Any],
    probs: np.ndarray,
    labels: np.ndarray,
    images: np.ndarray | None,
    metrics_csvs: Sequence[tuple[str, str | Path]],
) -> list[str]:
    classes = result["classes"]
    figures = []
    plots.confusion_matrix(np.array(result["confusion_matrix"]), classes, out / "confusion_matrix.png")
    figures.append("confusion_matrix.png")
    plots.reliability(
        {"bins": result["calibration_bins"], "ece": result["ece"], "n_bins": len(result["calibration_bins"])},
        out / "reliability.png",
    )
    figures.append("reliability.png")
    if images is not None:
        plots.misclassified(images, labels, probs, classes, out / "misclassified.png")
        figures.append("misclassified.png")
    runs = [(label, Path(p)) for label, p in metrics_csvs if Path(p).is_file()]
    if runs:
        plots.training_curves(runs, out / "training_curves.png")
        figures.append("training_curves.png")
    return figures


def write_report(
    out_dir: str | Path,
    result: dict[str, Any],
    *,
    probs: np.ndarray,
    labels: np.ndarray,
    images: np.ndarray | None = None,
    data: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    metrics_csvs: Sequence[tuple[str, str | Path]] = (),
    title: str = "",
    tta: bool = False,
    extra: dict[str, Any] | None = None,
    command: str | None = None,
    plots_enabled: bool = True,
) -> dict[str, Any]:
    """Write report.json, report.md, predictions.npz and (unless ``plots_enabled`` is False) the figures;
    returns the full report dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[str] = []
    if plots_enabled:
        figures = _write_figures(out, result, probs, labels, images, metrics_csvs)
    np.savez_compressed(out / "predictions.npz", probs=np.asarray(probs, dtype=np.float32), labels=np.asarray(labels))
    data = dict(data or {})
    if "description" not in data and "split" in data:
        data["description"] = describe_split(data)
    report = {
        "title": title,
        **result,
        "tta": tta,
        "data": data,
        "model": model or {},
        "figures": figures,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command or shlex.join(["python", "-m", "ml", *sys.argv[1:]]),
        **(extra or {}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    return report
