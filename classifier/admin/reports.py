"""Admin for evaluation reports: a read-only page per bundle version with the confusion-matrix heat
map, per-class table, most-confused pairs, calibration bins, the stored figures (served to staff
only, never from /media/) and the report's text files (markdown rendered and sanitised; logs and config as plain text). Writes go through classifier.reports.services.
"""

from __future__ import annotations

import json
import logging
import uuid

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.safestring import mark_safe

from classifier.errors import ApplicationError, NotFoundError
from classifier.models import EvaluationReport
from classifier.reports import selectors, services
from classifier.reports.markdown import render_markdown
from classifier.responses import private_image

logger = logging.getLogger(__name__)


RAW_JSON_LIMIT = 200_000  # characters of report.json shown raw (a CIFAR-100 report has about 200k)


def _truncated(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... (truncated: {len(text)} characters in all)"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def import_bundle_in_use(request: HttpRequest) -> EvaluationReport | None:
    """Import settings.MODEL_BUNDLE's report and say so in a message; None (and an error message) on failure."""
    try:
        report = services.evaluation_report_import(bundle_dir=settings.MODEL_BUNDLE)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return None
    messages.success(request, f"Imported the evaluation report of {report.version} from {report.source_path}.")
    return report


def bundle_in_use_version() -> str | None:
    """The version in MODEL_BUNDLE's manifest (a small JSON read), or None when it cannot be read."""
    from worker.runtime.manifest import BundleError, read_manifest  # torch-free

    try:
        return read_manifest(settings.MODEL_BUNDLE).version
    except (BundleError, OSError):
        return None


@admin.register(EvaluationReport)
class EvaluationReportAdmin(admin.ModelAdmin):
    list_display = (
        "version",
        "name",
        "accuracy_display",
        "top5_display",
        "macro_f1_display",
        "ece_display",
        "n",
        "created_at",
    )
    list_filter = ("name", ("created_at", admin.DateFieldListFilter), "split")
    search_fields = ("version", "name", "split")
    fieldsets = (
        (None, {"fields": ("name", "version", "members", "created_at", "imported_at", "source_path")}),
        (
            "Headline metrics",
            {
                "fields": (
                    "accuracy_display",
                    "top5_display",
                    "macro_f1_display",
                    "ece_display",
                    "nll_display",
                    "n",
                    "split",
                )
            },
        ),
    )
    readonly_fields = (
        "name",
        "version",
        "created_at",
        "imported_at",
        "source_path",
        "members",
        "accuracy_display",
        "top5_display",
        "macro_f1_display",
        "ece_display",
        "nll_display",
        "n",
        "split",
    )
    change_form_template = "admin/classifier/evaluationreport/change_form.html"

    # Rows come from bundles only: no add form, and the page is read-only.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: EvaluationReport | None = None) -> bool:
        return False

    def can_import(self, request: HttpRequest) -> bool:
        return request.user.has_perm("classifier.add_evaluationreport")

    @admin.display(description="Accuracy", ordering="accuracy")
    def accuracy_display(self, obj: EvaluationReport) -> str:
        return _percent(obj.accuracy)

    @admin.display(description="Top-5", ordering="top5")
    def top5_display(self, obj: EvaluationReport) -> str:
        return _percent(obj.top5)

    @admin.display(description="Macro F1", ordering="macro_f1")
    def macro_f1_display(self, obj: EvaluationReport) -> str:
        return _percent(obj.macro_f1)

    @admin.display(description="ECE", ordering="ece")
    def ece_display(self, obj: EvaluationReport) -> str:
        return _percent(obj.ece)

    @admin.display(description="NLL", ordering="nll")
    def nll_display(self, obj: EvaluationReport) -> str:
        return "-" if obj.nll is None else f"{obj.nll:.4f}"

    @admin.display(description="Members")
    def members(self, obj: EvaluationReport) -> str:
        members = obj.manifest.get("members") or []
        return ", ".join(str(m.get("arch", "?")) for m in members if isinstance(m, dict)) or "-"

    def delete_model(self, request: HttpRequest, obj: EvaluationReport) -> None:
        services.evaluation_report_delete(report=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[EvaluationReport]) -> None:
        for report in queryset:
            services.evaluation_report_delete(report=report)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        extra = [
            path(
                "import-bundle-in-use/",
                self.admin_site.admin_view(self.import_view),
                name="{}_{}_import".format(*info),
            ),
            path(
                "<uuid:report_id>/figures/<str:name>.png",
                self.admin_site.admin_view(self.figure_view, cacheable=True),
                name="{}_{}_figure".format(*info),
            ),
        ]
        return extra + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        # Opening the list imports the bundle in use once, if its version has no row yet: one small
        # JSON read and one indexed query per page view.
        if request.method == "GET" and self.can_import(request):
            version = bundle_in_use_version()
            if version is not None and selectors.evaluation_report_for_version(version=version) is None:
                import_bundle_in_use(request)
        extra_context = {
            **(extra_context or {}),
            "import_url": reverse("admin:classifier_evaluationreport_import") if self.can_import(request) else None,
            "model_bundle_url": reverse("admin:classifier_classification_model_bundle"),
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None):
        report = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if report is not None and self.has_view_permission(request, report):
            details = selectors.evaluation_report_details(report=report)
            for figure in details["figures"]:
                figure["url"] = reverse(
                    "admin:classifier_evaluationreport_figure", kwargs={"report_id": report.id, "name": figure["name"]}
                )
            figure_urls = {f"{figure['name']}.png": figure["url"] for figure in details["figures"]}
            # Markdown files are shown rendered (sanitised); logs, YAML and CSV stay plain text.
            for doc in details["documents"]:
                markdown = doc["name"].endswith(".md")
                urls = dict(figure_urls)
                parts = doc["name"].split("/")
                if len(parts) == 3 and parts[0] == "studies":  # studies/<study>/report.md: its own figures
                    prefix = f"{parts[1]}_"
                    urls |= {
                        f"{f['name'].removeprefix(prefix)}.png": f["url"]
                        for f in details["figures"]
                        if f["name"].startswith(prefix)
                    }
                doc["html"] = mark_safe(render_markdown(doc["text"], image_urls=urls)) if markdown else None
            extra_context.update(
                details=details,
                manifest_json=json.dumps(report.manifest, indent=2, sort_keys=True, default=str),
                report_json=_truncated(json.dumps(report.report, indent=2, default=str), RAW_JSON_LIMIT),
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """POST: import the bundle in use (settings.MODEL_BUNDLE), then show its report."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.can_import(request):
            raise PermissionDenied
        report = import_bundle_in_use(request)
        if report is None:
            return HttpResponseRedirect(reverse("admin:classifier_evaluationreport_changelist"))
        return HttpResponseRedirect(reverse("admin:classifier_evaluationreport_change", args=[report.pk]))

    def figure_view(self, request: HttpRequest, report_id: uuid.UUID, name: str) -> FileResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            image = selectors.evaluation_report_image_get(report_id=report_id, name=name)
            handle = image.file.storage.open(image.file.name, "rb")
        except (NotFoundError, OSError) as exc:
            raise Http404("No such figure.") from exc
        return private_image(FileResponse(handle, content_type="image/png"))
