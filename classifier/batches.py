"""Services for a batch of jobs: the worker's micro-batching path (one forward pass per batch).

``classification_process_batch(classification_ids=[...])`` is `services.classification_process`
for several jobs at once: one transaction marks them all running
(`lifecycle.classifications_start`: finished jobs are skipped, jobs out of attempts end failed,
a job found ``running`` is taken over), then each image is read and decoded on its own, the
model runs once (`worker.runtime.batching.predict_batch`, the bundle's plain ``scores`` pass),
and one transaction records every result (one guarded UPDATE per job). A job whose image is
missing or corrupt fails alone, with its reason; the others complete. Every change is pushed to
waiters on commit. Only then are the Grad-CAM maps of the jobs that asked for them computed (one explain
pass, classifier/explanations/heatmaps.py) and pushed in their turn: the answer never waits for them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from classifier import explanations, lifecycle
from classifier.evaluation import challenger
from classifier.evaluation import services as evaluation
from classifier.explanations import maps
from classifier.models import Classification
from worker.runtime.images import ImageRejected

if TYPE_CHECKING:
    from worker.runtime.explain import ExplainedPrediction

logger = logging.getLogger(__name__)
Status = Classification.Status
MISSING_IMAGE = "The uploaded image is missing from storage."


@transaction.atomic
def classifications_finish_many(
    *,
    rows: Sequence[Classification],
    results: dict[str, list[tuple[str, float]] | str],
    model_version: str,
    explained: dict[str, ExplainedPrediction] | None = None,
) -> list[Classification]:
    """Record the predictions (best first) or failure message of each of ``rows`` (the jobs
    `lifecycle.classifications_start` started) that has one in ``results``; returns those recorded.

    Each job is one ``UPDATE ... WHERE id = %s AND status = 'running'``: a job the sweeper gave up
    on meanwhile, or that another worker finished, is left alone and not returned. (A SELECT ...
    FOR UPDATE first cost a round trip per batch and bought nothing the guard does not.) The rows
    passed in are updated in memory too; ``bundle_version``, when `model_version_link` gave a
    subquery, becomes a deferred field (read back on first access). ``explained`` (job id -> the
    worker's explanation) is stored in the same transaction, so the members, agreement and flags
    are visible together with the result, never after it (the maps may follow:
    ``Explanation.heatmaps_status``)."""
    now = timezone.now()
    bundle_version = None
    if any(not isinstance(r, str) for r in results.values()):  # the registry row of the bundle that answered
        bundle_version = evaluation.model_version_link(
            version=model_version, bundle_dir=settings.MODEL_BUNDLE, alias=evaluation.Alias.CHAMPION
        )
    finished: list[Classification] = []
    for classification in rows:
        result = results.get(str(classification.id))
        if result is None:
            continue
        if isinstance(result, str):
            values: dict[str, object] = {"status": Status.FAILED, "error": result}
        else:
            if not result:
                raise ValueError("predictions must not be empty")
            top_label, top_p = result[0]
            values = {
                "status": Status.DONE,
                "error": "",
                "predictions": [{"label": label, "probability": round(float(p), 6)} for label, p in result],
                "top_label": top_label,
                "top_probability": min(max(float(top_p), 0.0), 1.0),
                "model_version": model_version,
                "bundle_version_id": bundle_version,
            }
        values["finished_at"] = now
        if not Classification.objects.filter(pk=classification.pk, status=Status.RUNNING).update(**values):
            continue
        for field, value in values.items():
            if isinstance(value, Subquery):
                _defer(classification, field)
            else:
                setattr(classification, field, value)
        finished.append(classification)
    explained = explained or {}
    explanations.explanations_create_many(
        pairs=[(c, explained[str(c.id)]) for c in finished if c.status == Status.DONE and str(c.id) in explained]
    )
    for classification in finished:
        lifecycle.notify(classification)
        if classification.status == Status.DONE:  # the challenger runs after the commit, off the user's path
            challenger.challenger_schedule(classification_id=classification.id)
    return finished


def _defer(classification: Classification, attname: str) -> None:
    """Make ``attname`` a deferred field of the in-memory row: the database computed its value,
    so Django reads it back on first access (one query, only if anyone asks)."""
    field = next(f for f in Classification._meta.concrete_fields if f.attname == attname)
    classification.__dict__.pop(attname, None)
    if field.is_relation and field.is_cached(classification):
        field.delete_cached_value(classification)


def classification_process_batch(*, classification_ids: Sequence[uuid.UUID | str]) -> dict[str, Classification]:
    """The worker's whole job for a batch: start all, read and decode each, one forward pass, record all.

    Returns the finished rows by id (jobs that were already finished, or were not started, are absent).
    """
    from worker.runtime.batching import predict_batch
    from worker.runtime.predictor import get_predictor

    started = lifecycle.classifications_start(classification_ids=classification_ids)
    if not started:
        return {}
    lifecycle.delay_for_tests()
    results: dict[str, list[tuple[str, float]] | str] = {}
    readable: list[Classification] = []
    images: list[bytes] = []
    for classification in started:
        try:
            with classification.image.open("rb") as f:
                images.append(f.read())
            readable.append(classification)
        except FileNotFoundError:
            results[str(classification.id)] = MISSING_IMAGE
    predictor = get_predictor(settings.MODEL_BUNDLE, device=settings.MODEL_DEVICE)
    version = predictor.version
    explained: dict[str, ExplainedPrediction] = {}
    if images:
        outputs = predict_batch(
            predictor,
            images,
            top_k=settings.PREDICTION_TOP_K,
            max_pixels=settings.MAX_IMAGE_PIXELS,
            run=lambda arrays, k: explanations.predict(predictor, arrays, top_k=k, heatmaps=False),
        )
        for classification, output in zip(readable, outputs, strict=True):
            if isinstance(output, ImageRejected):
                # The upload check runs this same decode, so this means the check and the worker disagree.
                logger.warning("classification %s refused by the worker's decode: %s", classification.id, output)
                results[str(classification.id)] = f"The image could not be read: {output}"
            else:
                results[str(classification.id)] = output.predictions
                explained[str(classification.id)] = output
    finished = classifications_finish_many(rows=started, results=results, model_version=version, explained=explained)
    # Committed and pushed: now the maps, for the jobs that asked and whose bundle can draw them.
    wanted = [
        (c, explained[str(c.id)].model_input)
        for c in finished
        if c.status == Status.DONE
        and str(c.id) in explained
        and maps.initial_status(c, explained[str(c.id)]) == maps.HeatmapsStatus.PENDING
    ]
    if wanted:
        explanations.heatmaps_compute(predictor=predictor, jobs=wanted)
    return {str(c.id): c for c in finished}
