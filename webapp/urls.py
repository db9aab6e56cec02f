"""Root URLs: admin, the REST API under /api/v1/, accounts, and the HTML pages of the classifier app."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("classifier.api_urls", namespace="api")),
    path("accounts/", include("django.contrib.auth.urls")),  # login, logout, password change/reset
    path("", include("classifier.urls")),
]

# URLs under /api/ that match nothing answer in the API's JSON error shape; other pages get HTML.
handler404 = "classifier.errors.json_404"
handler500 = "classifier.errors.json_500"
