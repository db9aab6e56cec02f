"""Management commands."""

from __future__ import annotations

import io
from datetime import timedelta
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from classifier import dispatch
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory

pytestmark = pytest.mark.django_db


def test_requeue_stuck_command(media_root, django_capture_on_commit_callbacks, settings):
    settings.CLASSIFICATION_MAX_ATTEMPTS = 2
    old = timezone.now() - timedelta(minutes=30)
    stuck = ClassificationFactory(status=Classification.Status.RUNNING, started_at=old, attempts=1)
    spent = ClassificationFactory(status=Classification.Status.RUNNING, started_at=old, attempts=2)
    recent = ClassificationFactory()
    out = io.StringIO()
    with mock.patch("classifier.dispatch.send") as send:
        with django_capture_on_commit_callbacks(execute=True):
            call_command("requeue_stuck", "--older-than", "600", stdout=out)
    assert out.getvalue().strip() == "requeued 1, failed 1"
    send.assert_called_once_with(dispatch.CLASSIFY, str(stuck.id))
    spent.refresh_from_db()
    recent.refresh_from_db()
    assert spent.status == Classification.Status.FAILED and "2 attempts" in spent.error
    assert recent.status == Classification.Status.QUEUED


def test_requeue_stuck_refuses_negative_age():
    with pytest.raises(CommandError, match="negative"):
        call_command("requeue_stuck", "--older-than", "-1")


def test_deadline_check(settings):
    from classifier.apps import check_job_deadlines

    assert check_job_deadlines() == []
    settings.CLASSIFICATION_STUCK_AFTER_SECONDS = settings.CLASSIFY_TIME_LIMIT
    assert [e.id for e in check_job_deadlines()] == ["classifier.E001"]
