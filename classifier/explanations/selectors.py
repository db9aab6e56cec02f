"""Reading stored explanations: ``explanation_of``, ``explanation_summary`` (the JSON-ready dict of
the API and the templates), ``heatmap_labels``, ``agreement_text``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from classifier.models import Classification, Explanation

OOD_MESSAGE = "This doesn't look like any of the {n} classes I know."


def heatmap_labels(heatmaps: dict[str, Any] | None) -> list[str]:
    """The classes that have a stored map, best first (rows from before "labels" keep dict order)."""
    heatmaps = heatmaps or {}
    maps = heatmaps.get("maps") or {}
    return [label for label in heatmaps.get("labels") or list(maps) if label in maps]


def explanation_of(classification: Classification) -> Explanation | None:
    try:
        return classification.explanation
    except Explanation.DoesNotExist:
        return None


def agreement_text(agree: int | None, members: list[dict]) -> str:
    if agree is None or not members:
        return ""
    n = len(members)
    if n == 1:
        return "One model (no ensemble to agree or disagree)."
    if agree == n:
        return f"{'Both' if n == 2 else f'All {n}'} members agree." if n <= 3 else f"{agree} of {n} members agree."
    return f"{agree} of {n} members agree."


def prediction_set_summary(labels: list[str] | None, coverage: float | None) -> dict[str, Any] | None:
    """The stored prediction set as the API and the pages show it: the labels, the coverage and a
    sentence ("At 95% coverage it could be “cat” or “dog”."); None when the job has no set."""
    if not labels:
        return None
    level = f"{100 * coverage:g}%" if coverage else "the bundle's"
    quoted = [f"“{label}”" for label in labels]
    if len(quoted) == 1:
        text = f"At {level} coverage only {quoted[0]} fits."
    else:
        text = f"At {level} coverage it could be {', '.join(quoted[:-1])} or {quoted[-1]}."
    return {"labels": list(labels), "size": len(labels), "coverage": coverage, "text": text}


def explanation_summary(
    classification: Classification, explanation: Explanation | None, request: HttpRequest | None = None
) -> dict[str, Any] | None:
    """The explanation as the API and the result page show it; None when the job has none."""
    if explanation is None:
        return None

    def url(name: str, query: str = "") -> str:
        path = reverse(name, kwargs={"classification_id": classification.id}) + query
        return request.build_absolute_uri(path) if request is not None else path

    from urllib.parse import urlencode

    heatmaps = [
        {"label": label, "url": url("api:classification-heatmap", "?" + urlencode({"class": label}))}
        for label in heatmap_labels(explanation.heatmaps)
    ]
    members = explanation.members or []
    return {
        "available": bool(heatmaps),
        "heatmaps_status": explanation.heatmaps_status,
        "request_url": url("api:classification-explanation"),
        "method": "grad-cam" if heatmaps else None,
        "layer": explanation.layer or None,
        "class": heatmaps[0]["label"] if heatmaps else None,
        "heatmap_url": heatmaps[0]["url"] if heatmaps else None,
        "heatmaps": heatmaps,
        "map_size": (explanation.heatmaps or {}).get("size"),
        "model_input_url": url("api:classification-model-input"),  # always stored with the row
        "members": members,
        "agreement": {
            "agree": explanation.agree,
            "members": len(members),
            "text": agreement_text(explanation.agree, members),
        }
        if members
        else None,
        "uncertain": explanation.uncertain,
        "uncertain_threshold": explanation.uncertain_threshold,
        "ood_score": explanation.ood_score,
        "ood": explanation.ood,
        "ood_threshold": explanation.ood_threshold,
        "prediction_set": prediction_set_summary(explanation.prediction_set, explanation.prediction_set_coverage),
        "superclass": explanation.superclass or None,
        "ood_message": OOD_MESSAGE.format(n=explanation.num_classes or "the") if explanation.ood else "",
    }
