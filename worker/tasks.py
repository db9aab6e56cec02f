"""Celery tasks: take an id, call a service. No business logic here (classifier/services.py has it)."""

from __future__ import annotations

import base64
import logging

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from classifier import batches, explanations, frames, services
from worker import batch_queue
from worker.celery import app

logger = logging.getLogger(__name__)

# Errors worth retrying: the database went away for a moment (restart, failover, network).
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


class ClassifyTask(Task):
    def on_retry(self, exc, task_id, args, kwargs, einfo) -> None:
        """Remember why this attempt is being retried (the next attempt shows it as the last problem)."""
        classification_id = kwargs.get("classification_id") or (args[0] if args else None)
        try:
            services.classification_note_error(
                classification_id=classification_id, message=f"a temporary error, retried: {exc.__class__.__name__}"
            )
        except Exception:  # the database may still be down; the retry itself will tell
            logger.warning("could not note the retry of classification %s", classification_id)

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """The failure hook: whatever went wrong ends the job as failed with a readable reason,
        so a bad job never loops. Retries of transient errors do not come here."""
        classification_id = kwargs.get("classification_id") or (args[0] if args else None)
        if classification_id is None:
            return
        if isinstance(exc, SoftTimeLimitExceeded):
            message = "Classification took too long and was stopped."
        elif isinstance(exc, TRANSIENT_ERRORS):
            message = "The database was unavailable for too long; please upload the image again."
        else:
            message = "An internal error stopped the classification; the operators have been notified."
        logger.error("classification %s failed: %r", classification_id, exc)
        try:
            services.classification_fail(classification_id=classification_id, message=message)
        except Exception:  # the database may be what failed; the sweeper finishes the job later
            logger.exception("could not record the failure of classification %s", classification_id)


# The model tasks (classify, explain): acked after the work, under the classification time
# limits, retried with backoff when the database went away for a moment.
MODEL_TASK = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": settings.CLASSIFY_SOFT_TIME_LIMIT,
    "time_limit": settings.CLASSIFY_TIME_LIMIT,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}


@app.task(bind=True, base=ClassifyTask, max_retries=8, **MODEL_TASK)
def classify(self, classification_id: str) -> str | None:
    """Classify one uploaded image, with whatever else is queued (worker/batch_queue.py: up to
    WORKER_BATCH_SIZE jobs, one forward pass). Safe to run twice: a finished job is left as it is."""
    batch = batch_queue.take_batch(self, classification_id)
    try:
        finished = batches.classification_process_batch(classification_ids=batch.ids)
    except BaseException:
        batch.requeue()  # the other jobs run again; this one is retried or failed by the hooks
        raise
    batch.ack()
    classification = finished.get(str(classification_id))
    return classification.status if classification is not None else None


@app.task(ignore_result=True, max_retries=5, **MODEL_TASK)
def explain(classification_id: str) -> None:
    """Compute the Grad-CAM maps a finished job was asked for later (classifier/explanations/heatmaps.py).
    Safe to run twice: maps that are no longer pending are left as they are."""
    explanations.heatmaps_process(classification_id=classification_id)


@app.task(acks_late=False, ignore_result=True, soft_time_limit=10, time_limit=15)
def classify_frame(frame_id: str, image_b64: str) -> None:
    """Classify one live camera frame and push the answer (classifier/frames.py). Nothing is stored;
    a lost frame is simply not answered (the page sends the next one)."""
    frames.frame_answer(frame_id=frame_id, data=base64.b64decode(image_b64))


@app.task(acks_late=True, soft_time_limit=60, time_limit=90)
def requeue_stuck() -> dict[str, int]:
    """Periodic (celery beat): re-queue jobs stuck in queued/running; fail those out of attempts."""
    counts = services.classifications_requeue_stuck()
    counts["heatmaps"] = explanations.heatmaps_requeue_stale()
    if any(counts.values()):
        logger.warning("requeue_stuck: %s", counts)
    return counts


@app.task(acks_late=True, soft_time_limit=settings.CLASSIFY_SOFT_TIME_LIMIT, time_limit=settings.CLASSIFY_TIME_LIMIT)
def challenge(classification_id: str) -> str | None:
    """Run the challenger bundle on a job the champion finished (queue CHALLENGER_QUEUE)."""
    from classifier.evaluation import challenger

    shadow = challenger.challenger_process(classification_id=classification_id)
    return shadow.top_label if shadow is not None else None
