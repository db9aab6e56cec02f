"""Storage helpers shared by the services."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.core.files.storage import Storage
from django.db import transaction

logger = logging.getLogger(__name__)


def delete_files_on_commit(files: Iterable[tuple[Storage, str]]) -> None:
    """Delete stored files once the current transaction commits (never when it rolls back, so a
    failed write loses no file that a row still names). A file that cannot be deleted is logged."""
    files = list(files)

    def remove() -> None:
        for storage, name in files:
            try:
                storage.delete(name)
            except OSError:
                logger.warning("could not delete %s", name, exc_info=True)

    transaction.on_commit(remove)
