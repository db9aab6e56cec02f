"""Explanations of predictions: storing what the worker computed, and serving it to the owner.

The worker (``classifier.batches.classification_process_batch``) calls ``predict`` for a batch
(worker/runtime/explain.py runs the bundle's ``scores`` method) and ``explanation_create`` in
the transaction that completes the jobs, then ``heatmaps_compute`` (the bundle's ``explain``:
Grad-CAM) for the jobs that asked for maps, after their answers are out (heatmaps.py). Pages and
the API only read the stored rows:

- ``explanation_of(classification)``: the row or None (a job from before explanations, or not done);
- ``explanation_summary(explanation, ...)``: the JSON-ready dict of the API and the templates
  (heatmap URLs, members, "3 of 3 members agree", uncertain, ood);
- ``HeatmapApi`` and ``ModelInputApi``: owner-only PNGs under the API (token or session; another
  user's id is 404, like the image).

Maps are stored small: at the cam layer's resolution (7x7 for the fast net), quantised to 0-255
against their own peak, in a JSON field; the PNG is rendered on request.
"""

from __future__ import annotations

from classifier.explanations.api import (
    ExplanationFieldsSerializer,
    ExplanationRequestApi,
    HeatmapApi,
    ModelInputApi,
)
from classifier.explanations.feature_maps import feature_maps
from classifier.explanations.heatmaps import (
    heatmaps_compute,
    heatmaps_process,
    heatmaps_request,
    heatmaps_requeue_stale,
)
from classifier.explanations.selectors import (
    OOD_MESSAGE,
    agreement_text,
    explanation_of,
    explanation_summary,
    heatmap_labels,
)
from classifier.explanations.services import explanation_create, explanations_create_many, predict

__all__ = [
    "OOD_MESSAGE",
    "ExplanationFieldsSerializer",
    "ExplanationRequestApi",
    "HeatmapApi",
    "ModelInputApi",
    "agreement_text",
    "explanation_create",
    "explanation_of",
    "explanation_summary",
    "explanations_create_many",
    "feature_maps",
    "heatmap_labels",
    "heatmaps_compute",
    "heatmaps_process",
    "heatmaps_request",
    "heatmaps_requeue_stale",
    "predict",
]
