"""The challenger: a second bundle (MODEL_BUNDLE_CHALLENGER) run on the champion's finished jobs.

`challenger_schedule` (called when a job completes) enqueues `challenger_process` once the
champion's result is committed, on its own queue, so it never delays a user's answer; the
shadow predictions it stores are compared with the champion's in the admin.
"""

from __future__ import annotations

import logging
import time
import uuid

from django.conf import settings
from django.db import transaction

from classifier import dispatch
from classifier.evaluation.models import ShadowPrediction
from classifier.evaluation.services import Alias, model_version_seen
from classifier.models import Classification

logger = logging.getLogger(__name__)


def _enqueue_challenger(classification_id: str) -> None:
    try:
        dispatch.send(dispatch.CHALLENGE, classification_id, queue=settings.CHALLENGER_QUEUE)
    except Exception:  # a broker problem must never touch the champion's result
        logger.exception("could not enqueue the challenger for classification %s", classification_id)


def challenger_schedule(*, classification_id: uuid.UUID | str) -> None:
    """With MODEL_BUNDLE_CHALLENGER set, run the challenger on this job once the champion's
    result is committed (never before, never in the user's way)."""
    if settings.MODEL_BUNDLE_CHALLENGER:
        transaction.on_commit(lambda: _enqueue_challenger(str(classification_id)), robust=True)


def challenger_process(*, classification_id: uuid.UUID | str) -> ShadowPrediction | None:
    """Run MODEL_BUNDLE_CHALLENGER on a job the champion finished; store its top-k. Idempotent:
    a job it already predicted, an unfinished job or the champion's own bundle do nothing (None)."""
    from worker.runtime.images import ImageRejected, decode_for_model
    from worker.runtime.predictor import get_predictor

    bundle = settings.MODEL_BUNDLE_CHALLENGER
    if not bundle:
        return None
    classification = Classification.objects.filter(id=classification_id, status=Classification.Status.DONE).first()
    if classification is None:
        return None
    predictor = get_predictor(bundle, device=settings.MODEL_DEVICE)
    version_id = model_version_seen(version=predictor.version, bundle_dir=bundle, alias=Alias.CHALLENGER)
    if version_id is None or version_id == classification.bundle_version_id:
        return None
    existing = ShadowPrediction.objects.filter(classification=classification, model_version_id=version_id).first()
    if existing is not None:
        return existing
    try:
        with classification.image.open("rb") as f:
            data = f.read()
        array = decode_for_model(data, predictor.input_size, max_pixels=settings.MAX_IMAGE_PIXELS)
    except (OSError, ImageRejected):
        logger.warning("challenger: could not read the image of classification %s", classification_id)
        return None
    start = time.perf_counter()
    [top] = predictor.predict([array], top_k=settings.PREDICTION_TOP_K)
    seconds = time.perf_counter() - start
    shadow, _ = ShadowPrediction.objects.get_or_create(
        classification=classification,
        model_version_id=version_id,
        defaults={
            "predictions": [{"label": label, "probability": round(float(p), 6)} for label, p in top],
            "top_label": top[0][0],
            "top_probability": min(max(float(top[0][1]), 0.0), 1.0),
            "inference_seconds": seconds,
        },
    )
    return shadow
