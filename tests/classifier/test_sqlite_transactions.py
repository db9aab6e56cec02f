"""The embedded default's SQLite: transactions that read and then write wait for each other.

Two threads (the web's and an in-process task's, or two of a test's helpers) that each read and
then write in one transaction: begun DEFERRED, the one that writes second fails at once with
"database is locked"; begun IMMEDIATE (webapp.settings.base), it waits for the first to commit.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_read_then_write_transactions_both_commit():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only (PostgreSQL takes row locks and waits)")
    jobs = [ClassificationFactory(), ClassificationFactory()]
    errors: list[BaseException] = []

    def read_then_write(job: Classification, start: float, hold: float) -> None:
        time.sleep(start)
        try:
            with transaction.atomic():
                assert Classification.objects.filter(pk=job.pk).exists()  # the read
                time.sleep(hold)  # the other transaction begins and reads meanwhile
                Classification.objects.filter(pk=job.pk).update(error=f"written by {threading.get_ident()}")
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=read_then_write, args=(jobs[0], 0.0, 0.4)),
        threading.Thread(target=read_then_write, args=(jobs[1], 0.1, 0.0)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert all(Classification.objects.get(pk=job.pk).error.startswith("written by") for job in jobs)
