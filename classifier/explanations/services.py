"""Storing what the worker computed: ``predict`` (one pass of the bundle's ``scores`` for a batch,
or of ``explain`` with ``heatmaps=True``, falling back to plain predictions) and
``explanation_create`` / ``explanations_create_many`` (in the transaction that completes the jobs;
the heatmaps follow, classifier/explanations/heatmaps.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from django.db import transaction
from django.utils import timezone

from classifier.explanations.maps import initial_status, quantised
from classifier.models import Classification, Explanation
from worker.runtime.pictures import model_input_png

if TYPE_CHECKING:  # the web process never imports torch; only the worker calls predict()
    from worker.runtime.explain import ExplainedPrediction
    from worker.runtime.predictor import Predictor

logger = logging.getLogger(__name__)


def predict(
    predictor: Predictor, images: list[np.ndarray], top_k: int, *, heatmaps: bool = False
) -> list[ExplainedPrediction]:
    """The predictions of a batch with the members, agreement, "not sure" and OOD (one pass of the
    bundle's ``scores``; ``heatmaps=True``: of ``explain``, with the Grad-CAM maps). An
    explanation that fails never fails the jobs: the plain predictions are returned then (logged),
    and the page says no explanation is available."""
    from worker.runtime.explain import ExplainedPrediction, predict_explained

    try:
        return predict_explained(predictor, images, top_k=top_k, heatmaps=heatmaps)
    except Exception:  # a broken explain method must not cost the users their predictions
        logger.exception("explain failed for bundle %s; predicting without it", predictor.bundle_dir)
        tops = predictor.predict(images, top_k=top_k)
        return [
            ExplainedPrediction(predictions=top, model_input=image, num_classes=len(predictor.classes))
            for top, image in zip(tops, images, strict=True)
        ]


def _explanation(classification: Classification, result: ExplainedPrediction) -> Explanation:
    status = initial_status(classification, result)
    return Explanation(
        classification=classification,
        layer=result.layer[:255],
        heatmaps=quantised(result.heatmaps),
        heatmaps_status=status,
        heatmaps_requested_at=timezone.now() if status == Explanation.HeatmapsStatus.PENDING else None,
        model_input=model_input_png(result.model_input),
        members=result.members or [],
        agree=result.agree,
        uncertain=result.uncertain,
        uncertain_threshold=result.thresholds.get("uncertain"),
        ood_score=result.ood_score,
        ood=result.ood,
        ood_threshold=result.thresholds.get("ood"),
        prediction_set=result.prediction_set,
        prediction_set_coverage=result.set_coverage,
        superclass=(result.superclass or "")[:64],
        num_classes=result.num_classes,
    )


@transaction.atomic
def explanation_create(*, classification: Classification, result: ExplainedPrediction) -> Explanation:
    """Store the explanation of a completed classification (replacing an older one)."""
    [explanation] = explanations_create_many(pairs=[(classification, result)])
    return explanation


@transaction.atomic
def explanations_create_many(*, pairs: list[tuple[Classification, ExplainedPrediction]]) -> list[Explanation]:
    """Store the explanations of a batch of completed classifications (replacing older ones) with
    one statement: an INSERT whose conflicts on the job update the row (PostgreSQL and SQLite)."""
    if not pairs:
        return []
    return Explanation.objects.bulk_create(
        [_explanation(c, r) for c, r in pairs],
        update_conflicts=True,
        unique_fields=["classification"],
        update_fields=_REPLACED_FIELDS,
    )


# Every column an explanation's replacement writes: all but its own id and its job.
_REPLACED_FIELDS = [
    f.name for f in Explanation._meta.concrete_fields if not f.primary_key and f.name != "classification"
]
