"""Heatmaps after the answer: Grad-CAM costs several times the forward pass, so nobody waits for it.

The worker stores and pushes a batch's answers first (with the members, agreement, "not sure"
and OOD, which come from the same plain forward pass), then computes the maps of the jobs that
asked for them and pushes again; the result page draws them when they arrive. A job asks at
upload (``Classification.heatmaps_requested``: the web form always, the API with
``?explain=true``) or later (``heatmaps_request``: the result page of a job that did not, and
``POST /api/v1/classifications/<id>/explanation``).

``Explanation.heatmaps_status`` says where the maps are:

- ``pending``: asked for, not stored yet (``heatmaps_requested_at`` says since when; the sweeper
  asks again for maps pending longer than ``HEATMAPS_STALE_SECONDS``, e.g. after a worker died
  between the answer and the maps);
- ``ready``; ``not_requested``; ``unavailable`` (the bundle has no explain method, or it failed:
  the answer stands, the page says so).

The functions that run the model (`heatmaps_compute`, `heatmaps_process`) run in the worker only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from classifier import dispatch
from classifier.explanations.maps import HeatmapsStatus, quantised
from classifier.models import Classification, Explanation

if TYPE_CHECKING:
    import numpy as np

    from worker.runtime.predictor import Predictor

logger = logging.getLogger(__name__)


def _notify(classification_id: uuid.UUID | str) -> None:
    from classifier import push

    transaction.on_commit(lambda: push.publish(classification_id, Classification.Status.DONE))


# ----------------------------------------------------------------------------- the worker's side
def heatmaps_compute(*, predictor: Predictor, jobs: Sequence[tuple[Classification, np.ndarray]]) -> int:
    """Grad-CAM for finished jobs whose maps are pending (one explain pass for all of them, for
    the classes of their stored top-k), stored and pushed. Returns how many were stored. An
    explain that fails marks the maps unavailable (logged); it never touches the answers."""
    from worker.runtime.explain import predict_explained

    jobs = [(c, a) for c, a in jobs if c.predictions]
    if not jobs:
        return 0
    labels = [[p["label"] for p in c.predictions] for c, _ in jobs]
    ids = [c.id for c, _ in jobs]
    try:
        if len({len(row) for row in labels}) > 1:  # rows of different lengths: one pass each
            results = [
                predict_explained(predictor, [a], top_k=len(row), labels=[row])[0]
                for (_, a), row in zip(jobs, labels, strict=True)
            ]
        else:
            results = predict_explained(predictor, [a for _, a in jobs], top_k=len(labels[0]), labels=labels)
    except Exception:
        logger.exception("Grad-CAM failed for %d job(s) of bundle %s", len(jobs), predictor.bundle_dir)
        with transaction.atomic():
            Explanation.objects.filter(classification_id__in=ids, heatmaps_status=HeatmapsStatus.PENDING).update(
                heatmaps_status=HeatmapsStatus.UNAVAILABLE
            )
            for job_id in ids:
                _notify(job_id)
        return 0
    by_id = {c.id: r for (c, _), r in zip(jobs, results, strict=True)}
    with transaction.atomic():
        rows = list(
            Explanation.objects.select_for_update().filter(
                classification_id__in=ids, heatmaps_status=HeatmapsStatus.PENDING
            )
        )
        for row in rows:
            result = by_id[row.classification_id]
            row.heatmaps = quantised(result.heatmaps)
            row.heatmaps_status = HeatmapsStatus.READY if row.heatmaps else HeatmapsStatus.UNAVAILABLE
        Explanation.objects.bulk_update(rows, ["heatmaps", "heatmaps_status"])
        for row in rows:
            _notify(row.classification_id)
    return len(rows)


def heatmaps_process(*, classification_id: uuid.UUID | str) -> Explanation | None:
    """The ``explain`` task: the maps of one finished job whose maps are pending (read its image,
    decode it as the worker did, compute, store, push). Safe to run twice."""
    from worker.runtime.images import ImageRejected, decode_for_model
    from worker.runtime.predictor import get_predictor

    explanation = (
        Explanation.objects.select_related("classification")
        .filter(classification_id=classification_id, heatmaps_status=HeatmapsStatus.PENDING)
        .first()
    )
    if explanation is None:
        return None
    classification = explanation.classification
    predictor = get_predictor(settings.MODEL_BUNDLE, device=settings.MODEL_DEVICE)
    try:
        with classification.image.open("rb") as f:
            array = decode_for_model(f.read(), predictor.input_size, max_pixels=settings.MAX_IMAGE_PIXELS)
    except (FileNotFoundError, ImageRejected) as exc:
        logger.warning("no heatmaps for %s: %s", classification_id, exc)
        Explanation.objects.filter(pk=explanation.pk).update(heatmaps_status=HeatmapsStatus.UNAVAILABLE)
        _notify(classification_id)
        return None
    heatmaps_compute(predictor=predictor, jobs=[(classification, array)])
    explanation.refresh_from_db()
    return explanation


# ----------------------------------------------------------------------------- asking for them
def _enqueue(classification_id: uuid.UUID | str) -> None:
    try:
        dispatch.send(dispatch.EXPLAIN, str(classification_id))
    except Exception:  # the broker is down: the sweeper asks again later
        logger.exception("could not enqueue the heatmaps of %s; the sweeper will retry", classification_id)


@transaction.atomic
def heatmaps_request(*, classification: Classification) -> str | None:
    """Ask for the maps of one of the caller's jobs; returns the maps' status afterwards (None:
    the job has no explanation yet). Idempotent: maps that are ready or being computed are left
    alone (unless pending past ``HEATMAPS_STALE_SECONDS``); a job still queued or running gets
    them computed right after its answer."""
    if classification.status in (Classification.Status.QUEUED, Classification.Status.RUNNING):
        if not classification.heatmaps_requested:
            Classification.objects.filter(pk=classification.pk).update(heatmaps_requested=True)
            classification.heatmaps_requested = True
        explanation = Explanation.objects.filter(classification=classification).first()
        if explanation is None:
            return HeatmapsStatus.PENDING  # the worker computes them after the answer
    else:
        explanation = Explanation.objects.select_for_update().filter(classification=classification).first()
    if explanation is None:
        return None
    stale = timezone.now() - timedelta(seconds=settings.HEATMAPS_STALE_SECONDS)
    status = explanation.heatmaps_status
    if status == HeatmapsStatus.NOT_REQUESTED or (
        status == HeatmapsStatus.PENDING and (explanation.heatmaps_requested_at or stale) <= stale
    ):
        Explanation.objects.filter(pk=explanation.pk).update(
            heatmaps_status=HeatmapsStatus.PENDING, heatmaps_requested_at=timezone.now()
        )
        transaction.on_commit(lambda: _enqueue(classification.id))
        return HeatmapsStatus.PENDING
    return status


@transaction.atomic
def heatmaps_requeue_stale(*, older_than: timedelta | None = None) -> int:
    """The sweeper's part: ask again for maps pending longer than ``HEATMAPS_STALE_SECONDS``."""
    if older_than is None:
        older_than = timedelta(seconds=settings.HEATMAPS_STALE_SECONDS)
    deadline = timezone.now() - older_than
    stale = list(
        Explanation.objects.select_for_update(skip_locked=True)
        .filter(heatmaps_status=HeatmapsStatus.PENDING, heatmaps_requested_at__lt=deadline)
        .values_list("classification_id", flat=True)
    )
    if stale:
        Explanation.objects.filter(classification_id__in=stale).update(heatmaps_requested_at=timezone.now())
        for job_id in stale:
            transaction.on_commit(lambda cid=job_id: _enqueue(cid))
    return len(stale)
