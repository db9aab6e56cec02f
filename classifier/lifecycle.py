"""The rules of a job's life, shared by the one-job services (classifier/services.py), the
worker's batch path (classifier/batches.py) and the sweeper: which jobs may start, when a job has
had its attempts, how a job ends failed, and how every change reaches its waiters.

- queued or running -> running: ``classifications_start`` (one transaction for any number of
  jobs; counts the attempt). A finished job (done/failed) is never changed again, so a
  redelivered task is harmless; a job found ``running`` is taken over (its worker died or its
  message came back after a timeout); a job out of attempts ends failed with the last reason.
- -> failed: ``fail``, with a message a person can act on.
- every change is pushed to the job's waiters once its transaction commits (``notify``,
  classifier/push.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from classifier import push
from classifier.models import Classification

Status = Classification.Status
FINISHED = (Status.DONE, Status.FAILED)
# The reason recorded when an attempt ended without the task saying why (the process was killed,
# ran out of memory or hit the hard time limit).
WORKER_STOPPED = "the worker process stopped before finishing (killed, out of memory or over the time limit)"


def notify(classification: Classification) -> None:
    """Push the job's new status to its waiters once this transaction commits (classifier.push)."""
    job_id, status = classification.id, classification.status
    transaction.on_commit(lambda: push.publish(job_id, status))


def fail(classification: Classification, message: str) -> None:
    """End the job failed with ``message`` (saved and pushed); the caller holds its row lock."""
    classification.status = Status.FAILED
    classification.error = message
    classification.finished_at = timezone.now()
    classification.save(update_fields=["status", "error", "finished_at"])
    notify(classification)


def out_of_attempts(classification: Classification) -> bool:
    """Whether the job has had CLASSIFICATION_MAX_ATTEMPTS; if so it is ended failed, with the last reason."""
    if classification.attempts < settings.CLASSIFICATION_MAX_ATTEMPTS:
        return False
    reason = classification.error or WORKER_STOPPED
    fail(classification, f"Gave up after {classification.attempts} attempts. Last problem: {reason}")
    return True


def update_rows(rows: Sequence[Classification], fields: Sequence[str]) -> None:
    """Write ``fields`` of each row, in the caller's transaction: one ``UPDATE ... WHERE id IN
    (...)`` per distinct set of values (the start of a batch: status, attempt and time are
    usually the same for every job). Django's ``bulk_update`` (one statement with a CASE per
    field) costs more in Python than it saves in round trips: 4.4 ms for one row and 22 ms for
    16 against 0.8 and 10.7 ms one row at a time, measured on the 2-core dev machine against its
    local PostgreSQL."""
    columns = [Classification._meta.get_field(name).attname for name in fields]
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault(tuple(getattr(row, column) for column in columns), []).append(row.pk)
    for values, pks in groups.items():
        Classification.objects.filter(pk__in=pks).update(**dict(zip(columns, values, strict=True)))


@transaction.atomic
def classifications_start(*, classification_ids: Sequence[uuid.UUID | str]) -> list[Classification]:
    """Mark the unfinished jobs among the ids running (one transaction); return those started, in
    the order of the ids given (each once)."""
    rows = {str(c.id): c for c in Classification.objects.select_for_update().filter(id__in=list(classification_ids))}
    now = timezone.now()
    started: list[Classification] = []
    for job_id in dict.fromkeys(str(i) for i in classification_ids):
        classification = rows.get(job_id)
        if classification is None or classification.status in FINISHED or out_of_attempts(classification):
            continue
        if classification.status == Status.RUNNING and not classification.error:
            classification.error = WORKER_STOPPED  # the previous attempt never reported back
        classification.status = Status.RUNNING
        classification.attempts += 1
        classification.started_at = now
        started.append(classification)
    update_rows(started, ["status", "attempts", "started_at", "error"])
    for classification in started:
        notify(classification)
    return started


def delay_for_tests() -> None:
    """Test-only: WORKER_TEST_DELAY_SECONDS is defined only in webapp.settings.test, so that the
    end-to-end tests can stop a worker mid-task."""
    delay = getattr(settings, "WORKER_TEST_DELAY_SECONDS", 0.0)
    if delay:
        time.sleep(delay)
