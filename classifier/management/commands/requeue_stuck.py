"""python manage.py requeue_stuck [--older-than SECONDS]

Re-queue classifications stuck in queued/running longer than the deadline (a worker killed
mid-task, the broker down when the upload arrived); jobs out of attempts end failed with the
reason. Celery beat runs the same service every REQUEUE_STUCK_EVERY_SECONDS.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier import services


class Command(BaseCommand):
    help = "Re-queue classifications stuck in queued/running; fail those out of attempts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=settings.CLASSIFICATION_STUCK_AFTER_SECONDS,
            help="seconds since the job was queued (or started) (default: CLASSIFICATION_STUCK_AFTER_SECONDS)",
        )

    def handle(self, *args, older_than: float, **options) -> None:
        if older_than < 0:
            raise CommandError("--older-than must not be negative")
        counts = services.classifications_requeue_stuck(older_than=timedelta(seconds=older_than))
        self.stdout.write(f"requeued {counts['requeued']}, failed {counts['failed']}")
