"""URLs of the REST API, mounted at /api/v1/ under the namespace "api"."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from classifier import api, explanations

app_name = "api"

urlpatterns = [
    path("classifications/", api.ClassificationCollectionApi.as_view(), name="classification-list"),
    path("classifications/<str:classification_id>/", api.ClassificationItemApi.as_view(), name="classification-detail"),
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
    path("auth/token/", api.TokenObtainApi.as_view(), name="token-obtain"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: the CSP allows no inline scripts.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]
