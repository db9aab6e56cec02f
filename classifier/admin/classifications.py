"""Admin: staff see every classification (read-only predictions), with thumbnails, filters and search."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from classifier.evaluation.admin import export_selected_csv
from classifier.models import Classification
from classifier.reports.selectors import evaluation_report_for_version
from worker.runtime.manifest import BundleError, read_manifest

logger = logging.getLogger(__name__)


def _thumbnail_img(obj: Classification, size: int) -> str:
    """The stored thumbnail as inline data: no public media URL is ever needed."""
    if not obj.thumbnail:
        return "-"
    try:
        with obj.thumbnail.open("rb") as f:
            data = f.read()
    except OSError:
        return "(missing)"
    return format_html(
        '<img src="data:image/jpeg;base64,{}" alt="thumbnail" style="max-width:{}px;max-height:{}px">',
        base64.b64encode(data).decode(),
        size,
        size,
    )


@admin.register(Classification)
class ClassificationAdmin(admin.ModelAdmin):
    list_display = (
        "thumbnail_small",
        "id",
        "owner",
        "status",
        "top_label",
        "confidence",
        "model_version",
        "created_at",
        "started_at",
        "finished_at",
    )
    list_display_links = ("thumbnail_small", "id")
    list_filter = ("status", "top_label", "model_version", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "owner__username", "top_label", "original_filename")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    list_per_page = 50
    actions = [export_selected_csv]  # streams CSV (classifier.evaluation.exports)
    readonly_fields = (
        "id",
        "owner",
        "thumbnail_large",
        "image",
        "image_format",
        "image_width",
        "image_height",
        "original_filename",
        "thumbnail",
        "predictions_table",
        "explanation_panel",
        "predictions",
        "top_label",
        "top_probability",
        "model_version",
        "attempts",
        "created_at",
        "last_enqueued_at",
        "started_at",
        "finished_at",
    )
    fieldsets = (
        (None, {"fields": ("id", "owner", "status", "error")}),
        ("Image", {"fields": ("thumbnail_large", "original_filename", "image_format", "image_width", "image_height")}),
        (
            "Prediction",
            {"fields": ("predictions_table", "top_label", "top_probability", "model_version", "attempts")},
        ),
        ("Explanation", {"fields": ("explanation_panel",)}),
        ("Times", {"fields": ("created_at", "last_enqueued_at", "started_at", "finished_at")}),
        ("Storage", {"classes": ("collapse",), "fields": ("image", "thumbnail", "predictions")}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are created by uploads, through the service

    @admin.display(description="Thumbnail")
    def thumbnail_small(self, obj: Classification) -> str:
        return _thumbnail_img(obj, 48)

    @admin.display(description="Thumbnail")
    def thumbnail_large(self, obj: Classification) -> str:
        return _thumbnail_img(obj, 128)

    @admin.display(description="Confidence", ordering="top_probability")
    def confidence(self, obj: Classification) -> str:
        return "-" if obj.top_probability is None else f"{obj.top_probability:.1%}"

    @admin.display(description="Top-k predictions")
    def predictions_table(self, obj: Classification) -> str:
        if not obj.predictions:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td></tr>",
            ((p.get("label", "?"), f"{float(p.get('probability', 0)):.2%}") for p in obj.predictions),
        )
        return format_html("<table><tr><th>Label</th><th>Probability</th></tr>{}</table>", rows)

    @admin.display(description="Explanation")
    def explanation_panel(self, obj: Classification) -> str:
        from classifier.admin.explanations import explanation_panel

        return explanation_panel(obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Classification]:
        return super().get_queryset(request).select_related("owner")

    def get_urls(self):
        from classifier.admin.explanations import feature_maps_view

        extra = [
            path(
                "model-bundle/",
                self.admin_site.admin_view(self.model_bundle_view),
                name="classifier_classification_model_bundle",
            ),
            path(
                "<uuid:id>/feature-maps/",
                self.admin_site.admin_view(lambda request, id: feature_maps_view(self, request, id)),
                name="classifier_classification_feature_maps",
            ),
        ]
        return extra + super().get_urls()

    def model_bundle_view(self, request: HttpRequest) -> TemplateResponse:
        """The manifest (version, members, metrics, command) of the bundle the workers use."""
        bundle = current_bundle_summary()
        report = evaluation_report_for_version(version=bundle["version"]) if "version" in bundle else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Model bundle in use",
            "opts": self.model._meta,
            "bundle": bundle,
            "report_url": reverse("admin:classifier_evaluationreport_change", args=[report.pk]) if report else None,
            "reports_url": reverse("admin:classifier_evaluationreport_changelist"),
        }
        return TemplateResponse(request, "admin/classifier/model_bundle.html", context)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {
            **(extra_context or {}),
            "model_bundle_url": reverse("admin:classifier_classification_model_bundle"),
        }
        return super().changelist_view(request, extra_context)


def current_bundle_summary() -> dict:
    """The manifest of the bundle in use (MODEL_BUNDLE), for the admin index; never raises."""
    path = Path(settings.MODEL_BUNDLE)
    try:
        manifest = read_manifest(path)
    except (BundleError, OSError) as exc:
        return {"path": str(path), "error": str(exc)}
    report = path / "report" / "report.json"
    return {
        "path": str(path),
        "name": manifest.name,
        "version": manifest.version,
        "classes": len(manifest.classes),
        "members": [m.get("arch", "?") for m in manifest.members],
        "metrics": json.dumps(manifest.metrics, indent=2, sort_keys=True, default=str),
        "created_at": manifest.created_at,
        "command": manifest.command,
        "report": report.read_text()[:20000] if report.is_file() else "",
    }
