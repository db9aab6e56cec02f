"""Admin of the evaluation package: model versions with their live evaluation and drift, the
feedback list, the operations page, and the CSV export action of the classification list.

Figures are PNGs drawn on request (classifier.evaluation.plots) and served by admin views, so
only staff reach them; nothing is written to storage.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from classifier.errors import NotFoundError
from classifier.evaluation import exports, plots, selectors, services
from classifier.evaluation.models import Feedback, ModelVersion, ShadowPrediction
from classifier.reports.selectors import confusion_heatmap
from classifier.responses import png_response

DEFAULT_DRIFT_DAYS = 30
DEFAULT_OPERATIONS_DAYS = 14


def _days(request: HttpRequest, default: int) -> int:
    try:
        return max(1, min(int(request.GET.get("days", default)), 366))
    except ValueError:
        return default


@admin.action(description="Export the selected classifications as CSV")
def export_selected_csv(modeladmin, request: HttpRequest, queryset: QuerySet):
    """Staff export (ClassificationAdmin action); streams like the users' export."""
    filename = f"classifications-admin-{timezone.localdate():%Y%m%d}.csv"
    return exports.csv_response(queryset.order_by("-created_at", "-id"), filename, staff=True)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = (
        "version",
        "name",
        "alias",
        "feedback_count",
        "live_accuracy",
        "offline_accuracy",
        "registered_at",
        "first_used_at",
        "last_used_at",
    )
    list_filter = ("alias", "name")
    search_fields = ("version", "name", "checksum")
    readonly_fields = (
        "name",
        "version",
        "alias",
        "checksum",
        "source_path",
        "created_at",
        "registered_at",
        "first_used_at",
        "last_used_at",
    )
    fields = readonly_fields
    change_form_template = "admin/classifier/modelversion/change_form.html"
    change_list_template = "admin/classifier/modelversion/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from bundles a worker or the web app has seen

    def has_change_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelVersion]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _feedback=Count("classifications__feedback", distinct=True),
                _right=Count(
                    "classifications__feedback", filter=Q(classifications__feedback__correct=True), distinct=True
                ),
            )
        )

    @admin.display(description="Feedback", ordering="_feedback")
    def feedback_count(self, obj: ModelVersion) -> int:
        return obj._feedback

    @admin.display(description="Accuracy on feedback")
    def live_accuracy(self, obj: ModelVersion) -> str:
        return "-" if not obj._feedback else f"{obj._right / obj._feedback:.1%} of {obj._feedback}"

    @admin.display(description="Offline accuracy")
    def offline_accuracy(self, obj: ModelVersion) -> str:
        value = (obj.offline or {}).get("accuracy", (obj.metrics or {}).get("accuracy"))
        return "-" if not isinstance(value, int | float) else f"{value:.2%}"

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        extra = [
            path(
                "operations/", self.admin_site.admin_view(self.operations_view), name="{}_{}_operations".format(*info)
            ),
            path(
                "operations.png",
                self.admin_site.admin_view(self.operations_png_view),
                name="{}_{}_operations_png".format(*info),
            ),
            path(
                "<int:pk>/drift.png", self.admin_site.admin_view(self.drift_png_view), name="{}_{}_drift".format(*info)
            ),
        ]
        return extra + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        if request.method == "GET":
            services.model_versions_sync_configured()  # the web app "sees" the configured bundles
        extra_context = {
            **(extra_context or {}),
            "operations_url": reverse("admin:classifier_modelversion_operations"),
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None):
        version = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if version is not None and self.has_view_permission(request, version):
            extra_context.update(self.evaluation_context(request, version))
        return super().change_view(request, object_id, form_url, extra_context)

    def evaluation_context(self, request: HttpRequest, version: ModelVersion) -> dict:
        days = _days(request, DEFAULT_DRIFT_DAYS)
        live = selectors.live_evaluation(version=version)
        heatmap = confusion_heatmap(live["confusion"], live["classes"]) if live["labelled"] else None
        comparison = None
        champion = selectors.model_version_by_alias(ModelVersion.Alias.CHAMPION)
        challenger = selectors.model_version_by_alias(ModelVersion.Alias.CHALLENGER)
        if champion and challenger and version.pk in (champion.pk, challenger.pk) and champion.pk != challenger.pk:
            comparison = selectors.champion_vs_challenger(champion=champion, challenger=challenger)
        return {
            "live": live,
            "heatmap": heatmap,
            "comparison": comparison,
            "drift": selectors.drift(version=version, days=days),
            "drift_days": days,
            "drift_png_url": reverse("admin:classifier_modelversion_drift", kwargs={"pk": version.pk})
            + f"?days={days}",
        }

    def drift_png_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            version = selectors.model_version_get(pk=pk)
        except NotFoundError as exc:
            raise Http404("No such model version.") from exc
        drift = selectors.drift(version=version, days=_days(request, DEFAULT_DRIFT_DAYS))
        return png_response(plots.drift_png(drift, title=version.version), max_age=60)

    def operations_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        days = _days(request, DEFAULT_OPERATIONS_DAYS)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Operations: the last {days} days",
            "opts": self.model._meta,
            "ops": selectors.operations(days=days),
            "days": days,
            "png_url": reverse("admin:classifier_modelversion_operations_png") + f"?days={days}",
        }
        return TemplateResponse(request, "admin/classifier/modelversion/operations.html", context)

    def operations_png_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return png_response(
            plots.operations_png(selectors.operations(days=_days(request, DEFAULT_OPERATIONS_DAYS))), max_age=60
        )


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ("classification", "user", "correct", "label", "predicted", "version", "updated_at")
    list_filter = ("correct", "label", "classification__bundle_version")
    search_fields = ("classification__id", "user__username", "label")
    list_select_related = ("classification", "user", "classification__bundle_version")
    readonly_fields = ("classification", "user", "correct", "label", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # feedback comes from the users who own the jobs

    def has_change_permission(self, request: HttpRequest, obj: Feedback | None = None) -> bool:
        return False

    @admin.display(description="Predicted", ordering="classification__top_label")
    def predicted(self, obj: Feedback) -> str:
        return obj.classification.top_label

    @admin.display(description="Model version")
    def version(self, obj: Feedback) -> str:
        return obj.classification.model_version


@admin.register(ShadowPrediction)
class ShadowPredictionAdmin(admin.ModelAdmin):
    """What the challenger said about each job (never shown to users)."""

    list_display = ("classification", "model_version", "top_label", "top_probability", "champion_label", "created_at")
    list_filter = ("model_version", "top_label")
    search_fields = ("classification__id",)
    list_select_related = ("classification", "model_version")
    readonly_fields = (
        "classification",
        "model_version",
        "predictions",
        "top_label",
        "top_probability",
        "inference_seconds",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ShadowPrediction | None = None) -> bool:
        return False

    @admin.display(description="Champion's answer", ordering="classification__top_label")
    def champion_label(self, obj: ShadowPrediction) -> str:
        return obj.classification.top_label
