"""python manage.py import_report [BUNDLE_DIR]

Import a model bundle's evaluation report (manifest.json and report/) into the admin's
"Evaluation reports"; BUNDLE_DIR defaults to settings.MODEL_BUNDLE, the bundle the workers use.
Re-importing a version updates its row.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.errors import ApplicationError
from classifier.reports import services


class Command(BaseCommand):
    help = "Import a model bundle's evaluation report (default: the bundle in use, settings.MODEL_BUNDLE)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("bundle_dir", nargs="?", help="bundle folder (default: settings.MODEL_BUNDLE)")

    def handle(self, *args, bundle_dir: str | None, **options) -> None:
        try:
            report = services.evaluation_report_import(bundle_dir=bundle_dir or settings.MODEL_BUNDLE)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        figures = ", ".join(report.images.values_list("name", flat=True).order_by("name")) or "none"
        accuracy = "-" if report.accuracy is None else f"{100 * report.accuracy:.2f}%"
        self.stdout.write(
            f"imported {report.version} ({report.name}): accuracy {accuracy}, n {report.n if report.n is not None else '-'}, "
            f"figures: {figures}, text files: {', '.join(report.documents) or 'none'}"
        )
