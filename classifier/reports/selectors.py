"""Everything that reads EvaluationReport rows, and the display data of one report for the admin."""

from __future__ import annotations

import math
import uuid
from typing import Any

from django.core.exceptions import ValidationError

from classifier.errors import NotFoundError
from classifier.models import EvaluationReport, EvaluationReportImage

SHADES = 10  # heat-map buckets: CSS classes cm-1 ... cm-10 in static/css/admin-reports.css

FIGURE_ALT = {
    EvaluationReportImage.Name.CONFUSION_MATRIX: "Confusion matrix plot: true classes in rows, predicted in columns",
    EvaluationReportImage.Name.RELIABILITY: "Reliability diagram: accuracy against confidence per confidence bin",
    EvaluationReportImage.Name.MISCLASSIFIED: "Grid of misclassified validation images with true and predicted labels",
    EvaluationReportImage.Name.TRAINING_CURVES: "Training curves: loss and accuracy per epoch",
    EvaluationReportImage.Name.ABLATION_ACCURACY: "Bar chart: validation accuracy per ablation condition, mean and std over seeds",
    EvaluationReportImage.Name.ABLATION_KNOCKOUT: "Line chart: validation accuracy against the share of feature maps zeroed",
    EvaluationReportImage.Name.COMPARISON_ACCURACY: "Bar chart: validation accuracy per model, mean and std over seeds",
    EvaluationReportImage.Name.COMPARISON_TRANSFER: "Transfer learning: accuracy per condition and validation curves",
}


def _documents(report: EvaluationReport) -> list[dict[str, Any]]:
    """The report's text files as ``{"name", "text"}``; the admin renders the markdown ones."""
    documents = report.documents if isinstance(report.documents, dict) else {}
    return [{"name": name, "text": str(text)} for name, text in documents.items()]


def evaluation_report_for_version(*, version: str) -> EvaluationReport | None:
    return EvaluationReport.objects.filter(version=version).first()


def evaluation_report_image_get(*, report_id: uuid.UUID | str, name: str) -> EvaluationReportImage:
    """One stored figure; NotFoundError for an unknown report, a name off the whitelist or a missing figure."""
    if name not in EvaluationReportImage.Name.values:
        raise NotFoundError("No such figure.")
    try:
        return EvaluationReportImage.objects.get(report_id=report_id, name=name)
    except (EvaluationReportImage.DoesNotExist, ValidationError, ValueError) as exc:
        raise NotFoundError("No such figure.") from exc


def _shade(share: float) -> int:
    """0 for an empty cell, else 1..SHADES in proportion to the share of the row."""
    return 0 if share <= 0 else min(SHADES, max(1, math.ceil(share * SHADES)))


def confusion_heatmap(matrix: Any, classes: list[str]) -> list[dict[str, Any]] | None:
    """Rows of the confusion matrix (true class) with each cell's count, share of the row and shade.

    None when ``matrix`` is not a square list of non-negative integers matching ``classes``.
    """
    c = len(classes)
    if not isinstance(matrix, list) or len(matrix) != c or c == 0:
        return None
    rows = []
    for i, (label, counts) in enumerate(zip(classes, matrix, strict=True)):
        if not isinstance(counts, list) or len(counts) != c:
            return None
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in counts):
            return None
        total = sum(counts)
        cells = []
        for j, count in enumerate(counts):
            share = count / total if total else 0.0
            cells.append(
                {
                    "count": count,
                    "percent": 100 * share,
                    "shade": _shade(share),
                    "diagonal": i == j,
                    "predicted": classes[j],
                }
            )
        correct = counts[i]
        rows.append(
            {"label": label, "cells": cells, "total": total, "recall": 100 * correct / total if total else None}
        )
    return rows


def _dict_rows(value: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of a list of dicts that carry every key in ``keys`` (malformed rows are skipped)."""
    if not isinstance(value, list):
        return []
    return [row for row in value if isinstance(row, dict) and all(k in row for k in keys)]


def _percent(value: Any) -> float | None:
    return 100 * value if isinstance(value, int | float) and not isinstance(value, bool) else None


def evaluation_report_details(*, report: EvaluationReport) -> dict[str, Any]:
    """What the admin's report page shows, from the stored JSON (tolerant of missing parts)."""
    data = report.report or {}
    classes = data.get("classes") or report.manifest.get("classes") or []
    classes = [str(c) for c in classes] if isinstance(classes, list) else []
    per_class = [
        {
            "class": row["class"],
            "precision": _percent(row["precision"]),
            "recall": _percent(row["recall"]),
            "f1": _percent(row["f1"]),
            "support": row["support"],
        }
        for row in _dict_rows(data.get("per_class"), ("class", "precision", "recall", "f1", "support"))
    ]
    most_confused = [
        {**row, "percent": _percent(row.get("rate"))}
        for row in _dict_rows(data.get("most_confused"), ("true", "predicted", "count"))
    ]
    calibration = [
        {
            **row,
            "accuracy_percent": _percent(row.get("accuracy")),
            "confidence_percent": _percent(row.get("confidence")),
        }
        for row in _dict_rows(data.get("calibration_bins"), ("lower", "upper", "count"))
        if row["count"]
    ]
    stored = {image.name: image for image in report.images.all()}
    figures = [
        {"name": name, "label": label, "alt": FIGURE_ALT[name]}
        for name, label in EvaluationReportImage.Name.choices
        if name in stored
    ]
    return {
        "classes": classes,
        "confusion": confusion_heatmap(data.get("confusion_matrix"), classes),
        "per_class": per_class,
        "most_confused": most_confused,
        "calibration": calibration,
        "figures": figures,
        "documents": _documents(report),
        "has_report": bool(data),
    }
