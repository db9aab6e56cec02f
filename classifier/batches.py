"""Services for a batch of jobs: the worker's micro-batching path (one forward pass per batch).

``classification_process_batch(classification_ids=[...])`` is `services.classification_process`
for several jobs at once: one transaction marks them all running (with the same rules as
`services.classification_start`: finished jobs are skipped, jobs out of attempts end failed,
a job found ``running`` is taken over), then each image is read and decoded on its own, the
model runs once (`worker.runtime.batching.predict_batch`, the bundle's plain ``scores`` pass),
and one transaction records every result (`update_rows`: one UPDATE per row, or per set of
equal values). A job whose image is missing or corrupt fails alone, with its reason; the others
complete. Every change is pushed to waiters on
commit. Only then are the Grad-CAM maps of the jobs that asked for them computed (one explain
pass, classifier/explanations/heatmaps.py) and pushed in their turn: the answer never waits for them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from classifier import explanations, services
from classifier.evaluation import challenger
from classifier.evaluation import services as evaluation
from classifier.explanations import heatmaps
from classifier.models import Classification
from worker.runtime.images import ImageRejected

if TYPE_CHECKING:
    from worker.runtime.explain import ExplainedPrediction

logger = logging.getLogger(__name__)
Status = Classification.Status
MISSING_IMAGE = "The uploaded image is missing from storage."


def update_rows(rows: Sequence[Classification], fields: Sequence[str]) -> None:
    """Write ``fields`` of each row, in the caller's transaction: one ``UPDATE ... WHERE id IN
    (...)`` per distinct set of values (the start of a batch: status, attempt and time are
    usually the same for every job), else one per row. Django's ``bulk_update`` (one statement
    with a CASE per field) costs more in Python than it saves in round trips: 4.4 ms for one row
    and 22 ms for 16 against 0.8 and 10.7 ms one row at a time, measured on the 2-core dev
    machine against its local PostgreSQL."""
    columns = [Classification._meta.get_field(name).attname for name in fields]
    groups: dict[object, tuple[dict, list]] = {}
    for row in rows:
        values = {column: getattr(row, column) for column in columns}
        try:
            key: object = tuple(values.values())
            hash(key)
        except TypeError:  # a JSON value (the predictions): rows with those are written one by one
            key = row.pk
        groups.setdefault(key, (values, []))[1].append(row.pk)
    for values, pks in groups.values():
        Classification.objects.filter(pk__in=pks).update(**values)


@transaction.atomic
def classifications_start_many(*, classification_ids: Sequence[uuid.UUID | str]) -> list[Classification]:
    """Mark the unfinished jobs among the ids running (one transaction); return those started, in id order given."""
    rows = {str(c.id): c for c in Classification.objects.select_for_update().filter(id__in=list(classification_ids))}
    now = timezone.now()
    max_attempts = settings.CLASSIFICATION_MAX_ATTEMPTS
    started: list[Classification] = []
    for job_id in dict.fromkeys(str(i) for i in classification_ids):
        classification = rows.get(job_id)
        if classification is None or classification.status in services.FINISHED:
            continue
        if classification.attempts >= max_attempts:
            reason = classification.error or services.WORKER_STOPPED
            services._fail(classification, f"Gave up after {classification.attempts} attempts. Last problem: {reason}")
            continue
        if classification.status == Status.RUNNING and not classification.error:
            classification.error = services.WORKER_STOPPED  # the previous attempt never reported back
        classification.status = Status.RUNNING
        classification.attempts += 1
        classification.started_at = now
        started.append(classification)
    update_rows(started, ["status", "attempts", "started_at", "error"])
    for classification in started:
        services._notify(classification)
    return started


@transaction.atomic
def classifications_finish_many(
    *,
    results: dict[str, list[tuple[str, float]] | str],
    model_version: str,
    explained: dict[str, ExplainedPrediction] | None = None,
) -> list[Classification]:
    """Record each job's predictions (best first) or failure message; only running jobs change.
    ``explained`` (job id -> the worker's explanation) is stored in the same transaction, so the
    members, agreement and flags are visible together with the result, never after it (the maps
    may follow: ``Explanation.heatmaps_status``)."""
    now = timezone.now()
    rows = Classification.objects.select_for_update().filter(id__in=list(results), status=Status.RUNNING)
    bundle_version_id = None
    if any(not isinstance(r, str) for r in results.values()):  # the registry row of the bundle that answered
        bundle_version_id = evaluation.model_version_seen(
            version=model_version, bundle_dir=settings.MODEL_BUNDLE, alias=evaluation.Alias.CHAMPION
        )
    finished: list[Classification] = []
    for classification in rows:
        result = results[str(classification.id)]
        if isinstance(result, str):
            classification.status = Status.FAILED
            classification.error = result
        else:
            if not result:
                raise ValueError("predictions must not be empty")
            classification.predictions = [{"label": label, "probability": round(float(p), 6)} for label, p in result]
            classification.top_label, top_p = result[0]
            classification.top_probability = min(max(float(top_p), 0.0), 1.0)
            classification.model_version = model_version
            classification.bundle_version_id = bundle_version_id
            classification.status = Status.DONE
            classification.error = ""
        classification.finished_at = now
        finished.append(classification)
    fields = [
        "status",
        "error",
        "predictions",
        "top_label",
        "top_probability",
        "model_version",
        "bundle_version",
        "finished_at",
    ]
    update_rows(finished, fields)
    explained = explained or {}
    explanations.explanations_create_many(
        pairs=[(c, explained[str(c.id)]) for c in finished if c.status == Status.DONE and str(c.id) in explained]
    )
    for classification in finished:
        services._notify(classification)
        if classification.status == Status.DONE:  # the challenger runs after the commit, off the user's path
            challenger.challenger_schedule(classification_id=classification.id)
    return finished


def classification_process_batch(*, classification_ids: Sequence[uuid.UUID | str]) -> dict[str, Classification]:
    """The worker's whole job for a batch: start all, read and decode each, one forward pass, record all.

    Returns the finished rows by id (jobs that were already finished, or were not started, are absent).
    """
    from worker.runtime.batching import predict_batch
    from worker.runtime.predictor import get_predictor

    started = classifications_start_many(classification_ids=classification_ids)
    if not started:
        return {}
    services._test_delay()
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
    finished = classifications_finish_many(results=results, model_version=version, explained=explained)
    # Committed and pushed: now the maps, for the jobs that asked and whose bundle can draw them.
    wanted = [
        (c, explained[str(c.id)].model_input)
        for c in finished
        if c.status == Status.DONE
        and str(c.id) in explained
        and heatmaps.initial_status(c, explained[str(c.id)]) == heatmaps.HeatmapsStatus.PENDING
    ]
    if wanted:
        explanations.heatmaps_compute(predictor=predictor, jobs=wanted)
    return {str(c.id): c for c in finished}
