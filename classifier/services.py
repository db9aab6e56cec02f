"""Everything that writes Classification rows. Keyword-only, typed; the web app and the worker call these.

Life of a job: ``classification_create`` stores the image and thumbnail under the job's UUID,
commits the row as ``queued`` and enqueues the task on commit. The worker calls
``classification_process``, which is ``classification_start`` (queued/running -> running, counts
the attempt), inference, then ``classification_complete`` or ``classification_fail``. A finished
job (done/failed) is never changed again, so a redelivered task is harmless. The rules of those
transitions, shared with the worker's batch path, are classifier/lifecycle.py.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from classifier import dispatch, lifecycle
from classifier.errors import ApplicationError
from classifier.evaluation import challenger
from classifier.evaluation import services as evaluation
from classifier.models import Classification
from classifier.storage import delete_files_on_commit
from worker.runtime.images import ImageRejected, prepare_upload

logger = logging.getLogger(__name__)

Status = Classification.Status
FINISHED = lifecycle.FINISHED


# Messages the upload page also shows before sending (static/js/upload.js fills in the numbers
# with the same formatting as _format_bytes), so a refusal reads the same in the browser and here.
MSG_FILE_TOO_LARGE = "The file is {size}; the limit is {limit}. Please upload a smaller image."
MSG_EMPTY_FILE = "The file is empty. Please choose an image file."


def _format_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n} bytes"


def _read_upload(upload: UploadedFile) -> bytes:
    """The upload's bytes, refusing empty and oversized files before reading them into memory."""
    limit = settings.MAX_UPLOAD_BYTES
    size = upload.size
    if size is not None and size > limit:
        raise ApplicationError(
            MSG_FILE_TOO_LARGE.format(size=_format_bytes(size), limit=_format_bytes(limit)),
            {"max_bytes": limit, "size": size},
            code="file_too_large",
        )
    upload.seek(0)
    data = upload.read(limit + 1)
    if not data:
        raise ApplicationError(MSG_EMPTY_FILE, code="empty_file")
    if len(data) > limit:
        raise ApplicationError(
            f"The file is larger than the limit of {_format_bytes(limit)}. Please upload a smaller image.",
            {"max_bytes": limit},
            code="file_too_large",
        )
    return data


def enqueue_classification(classification_id: uuid.UUID | str) -> bool:
    """Put the job on the queue. A broker that is down is logged, not raised: the row stays
    ``queued`` and the sweeper (``requeue_stuck``) sends it again later."""
    try:
        dispatch.send(dispatch.CLASSIFY, str(classification_id))
    except Exception:  # kombu raises OperationalError and friends; no upload may be lost over it
        logger.exception("could not enqueue classification %s; the sweeper will retry", classification_id)
        return False
    return True


@transaction.atomic
def classification_create(*, owner, upload: UploadedFile, heatmaps: bool = True) -> Classification:
    """Validate an uploaded image, store it and its thumbnail under the job's UUID, and queue it.
    ``heatmaps``: compute the Grad-CAM maps too, after the answer (classifier/explanations/heatmaps.py).

    Raises ApplicationError (400) with a message for the user when the file is not an image we
    accept; nothing is stored or queued then.
    """
    try:
        data = _read_upload(upload)
        try:
            # One decode for the checks and the thumbnail (a 6000x4000 PNG: 0.7 s instead of 1.8 s).
            # It is the decode the worker runs, so what passes here is classified there.
            info, thumbnail = prepare_upload(
                data,
                max_bytes=settings.MAX_UPLOAD_BYTES,
                max_pixels=settings.MAX_IMAGE_PIXELS,
                thumbnail_size=settings.THUMBNAIL_SIZE,
            )
        except ImageRejected as exc:
            raise ApplicationError(str(exc), code="invalid_image") from exc
    except ApplicationError as exc:
        # A refused file is the user's problem, not a server error: INFO, with what and why.
        logger.info(
            "upload refused (%s): user %s, file %r, %s bytes: %s",
            exc.code,
            getattr(owner, "pk", None),
            (upload.name or "")[:255],
            upload.size,
            exc.message,
        )
        raise

    classification = Classification(
        id=uuid.uuid4(),
        owner=owner,
        status=Status.QUEUED,
        image_format=info.format,
        image_width=info.width,
        image_height=info.height,
        original_filename=(upload.name or "")[:255],
        heatmaps_requested=heatmaps,
    )
    classification.last_enqueued_at = classification.created_at
    # The storage names come from upload_path/thumbnail_path: date + UUID + our own extension.
    classification.image.save(f"image.{info.format}", ContentFile(data), save=False)
    try:
        classification.thumbnail.save("thumbnail.jpg", ContentFile(thumbnail), save=False)
        classification.save(force_insert=True)
    except BaseException:
        _delete_files(classification)
        raise
    # If the transaction rolls back, the files must not stay behind either.
    transaction.on_commit(lambda: enqueue_classification(classification.id))
    return classification


def _delete_files(classification: Classification) -> None:
    for field in (classification.image, classification.thumbnail):
        if field and field.name:
            try:
                field.storage.delete(field.name)
            except OSError:
                logger.warning("could not delete %s", field.name, exc_info=True)


@transaction.atomic
def classification_delete(*, classification: Classification) -> None:
    """Delete the row, and its files once the deletion is committed."""
    files = [(f.storage, f.name) for f in (classification.image, classification.thumbnail) if f and f.name]
    classification.delete()
    delete_files_on_commit(files)


@transaction.atomic
def classification_delete_many(*, owner, ids: list[uuid.UUID]) -> int:
    """Delete those of ``ids`` that belong to ``owner`` (others' ids are ignored) and their files
    once committed; returns how many rows were deleted."""
    rows = list(Classification.objects.filter(owner=owner, id__in=ids))
    files = [(f.storage, f.name) for row in rows for f in (row.image, row.thumbnail) if f and f.name]
    Classification.objects.filter(pk__in=[row.pk for row in rows]).delete()
    delete_files_on_commit(files)
    return len(rows)


def classification_start(*, classification_id: uuid.UUID | str) -> Classification | None:
    """Mark the job running and count the attempt; None when there is nothing to do.

    A finished job is left alone (a redelivered message changes nothing). A job already
    ``running`` is taken over: its worker died or its message came back after a timeout.
    A job past CLASSIFICATION_MAX_ATTEMPTS ends failed with the reason (classifier/lifecycle.py).
    """
    started = lifecycle.classifications_start(classification_ids=[classification_id])
    return started[0] if started else None


@transaction.atomic
def classification_complete(
    *, classification_id: uuid.UUID | str, predictions: list[tuple[str, float]], model_version: str
) -> Classification | None:
    """Record the predictions (best first). Only a running job is completed; returns None otherwise."""
    classification = Classification.objects.select_for_update().filter(id=classification_id).first()
    if classification is None or classification.status != Status.RUNNING:
        return None
    if not predictions:
        raise ValueError("predictions must not be empty")
    classification.predictions = [{"label": label, "probability": round(float(p), 6)} for label, p in predictions]
    classification.top_label, top_p = predictions[0]
    classification.top_probability = min(max(float(top_p), 0.0), 1.0)
    classification.model_version = model_version
    classification.bundle_version_id = evaluation.model_version_seen(
        version=model_version, bundle_dir=settings.MODEL_BUNDLE, alias=evaluation.Alias.CHAMPION
    )
    classification.status = Status.DONE
    classification.error = ""
    classification.finished_at = timezone.now()
    classification.save()
    lifecycle.notify(classification)
    challenger.challenger_schedule(classification_id=classification.id)  # runs after the commit, off the user's path
    return classification


@transaction.atomic
def classification_fail(*, classification_id: uuid.UUID | str, message: str) -> Classification | None:
    """End a job as failed with a message a person understands. A finished job is left alone."""
    classification = Classification.objects.select_for_update().filter(id=classification_id).first()
    if classification is None or classification.status in FINISHED:
        return None
    lifecycle.fail(classification, message)
    return classification


@transaction.atomic
def classification_note_error(*, classification_id: uuid.UUID | str, message: str) -> None:
    """Remember why an attempt did not finish (the job stays unfinished and will be tried again)."""
    Classification.objects.filter(id=classification_id).exclude(status__in=FINISHED).update(error=message)


def classification_process(*, classification_id: uuid.UUID | str) -> Classification | None:
    """The worker's whole job: start, decode, predict, complete (or fail with a readable reason).

    A batch of one: the worker runs `classifier.batches.classification_process_batch`, which
    does the same for several jobs with one forward pass.
    """
    from classifier.batches import classification_process_batch

    return classification_process_batch(classification_ids=[classification_id]).get(str(classification_id))


@transaction.atomic
def classifications_requeue_stuck(*, older_than: timedelta | None = None) -> dict[str, int]:
    """Re-queue jobs stuck in queued/running past the deadline; fail those out of attempts.

    Returns counts: {"requeued": n, "failed": m}.
    """
    if older_than is None:
        older_than = timedelta(seconds=settings.CLASSIFICATION_STUCK_AFTER_SECONDS)
    deadline = timezone.now() - older_than
    stuck = list(
        Classification.objects.select_for_update(skip_locked=True).filter(
            Q(status=Status.QUEUED, last_enqueued_at__lt=deadline) | Q(status=Status.RUNNING, started_at__lt=deadline)
        )
    )
    requeued = failed = 0
    for classification in stuck:
        if lifecycle.out_of_attempts(classification):
            failed += 1
            continue
        if classification.status == Status.RUNNING and not classification.error:
            classification.error = lifecycle.WORKER_STOPPED
        classification.status = Status.QUEUED
        classification.last_enqueued_at = timezone.now()
        classification.save(update_fields=["status", "error", "last_enqueued_at"])
        transaction.on_commit(lambda cid=classification.id: enqueue_classification(cid))
        requeued += 1
    return {"requeued": requeued, "failed": failed}
