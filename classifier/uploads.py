"""Several images in one request: the API's batch upload (classifier.batch_api) and the upload form.

``classifications_create_many`` runs `services.classification_create` for each file, in one
transaction (one commit for the batch; the worker's micro-batching then takes the queued jobs
together). Each file is checked on its own: a file that is not an image we accept is refused with
its reason and the others go on, so one bad file loses nothing else. Only a failure of the
database or the storage aborts the whole batch, and then the files already written are removed.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from classifier import services
from classifier.errors import ApplicationError
from classifier.models import Classification

Outcome = Classification | ApplicationError


def classifications_create_many(*, owner, uploads: Sequence[UploadedFile], heatmaps: bool) -> list[Outcome]:
    """One outcome per upload, in order: the queued job, or the ApplicationError saying why the
    file was refused. The jobs are queued when the transaction commits."""
    outcomes: list[Outcome] = []
    with transaction.atomic():
        try:
            for upload in uploads:
                try:
                    outcomes.append(services.classification_create(owner=owner, upload=upload, heatmaps=heatmaps))
                except ApplicationError as exc:
                    outcomes.append(exc)
        except BaseException:
            for outcome in outcomes:  # rolled back: their rows are gone, their files must go too
                if isinstance(outcome, Classification):
                    services._delete_files(outcome)
            raise
    return outcomes
