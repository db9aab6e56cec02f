"""URLs of the REST API, mounted at /api/v1/ under the namespace "api"."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from classifier import api, batch_api, explanations, live_api, model_api
from classifier.evaluation import api as evaluation_api
from classifier.waiter import waiting_view

app_name = "api"

urlpatterns = [
    path("classifications/", waiting_view(api.ClassificationCollectionApi.as_view()), name="classification-list"),
    path(
        "classifications/batch/",
        batch_api.batch_waiting_view(batch_api.ClassificationBatchApi.as_view()),
        name="classification-batch",
    ),
    path("classifications/export.csv", evaluation_api.ClassificationExportApi.as_view(), name="classification-export"),
    path(
        "classifications/<str:classification_id>/",
        waiting_view(api.ClassificationItemApi.as_view()),
        name="classification-detail",
    ),
    path(
        "classifications/<str:classification_id>/feedback/",
        evaluation_api.FeedbackApi.as_view(),
        name="classification-feedback",
    ),
    path("frames/", live_api.frame_view(live_api.FrameApi.as_view()), name="frame-classify"),
    path(
        "classifications/<str:classification_id>/explanation/",
        explanations.ExplanationRequestApi.as_view(),
        name="classification-explanation",
    ),
    path(
        "classifications/<str:classification_id>/heatmap.png",
        explanations.HeatmapApi.as_view(),
        name="classification-heatmap",
    ),
    path(
        "classifications/<str:classification_id>/model-input.png",
        explanations.ModelInputApi.as_view(),
        name="classification-model-input",
    ),
    path("model/", model_api.ModelCardApi.as_view(), name="model"),
    path("auth/token/", api.TokenObtainApi.as_view(), name="token-obtain"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: the CSP allows no inline scripts.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]
