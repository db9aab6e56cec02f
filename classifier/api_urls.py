"""URLs of the REST API, mounted at /api/v1/ under the namespace "api"."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from classifier import api

app_name = "api"

urlpatterns = [
    path("classifications/", api.ClassificationCollectionApi.as_view(), name="classification-list"),
    path("classifications/<str:classification_id>/", api.ClassificationItemApi.as_view(), name="classification-detail"),
    path("auth/token/", api.TokenObtainApi.as_view(), name="token-obtain"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
