"""A URLconf for tests/classifier/test_api_errors.py: the real URLs plus plain Django views under /api/.

Today every view under /api/ is a DRF view, whose errors the exception handler shapes; these stand
for anything else mounted there later (a plain view, a third-party app) and for failures outside
any view (Django's CSRF middleware, the debug pages).
"""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_POST

from webapp.urls import handler404, handler500  # noqa: F401
from webapp.urls import urlpatterns as project_urlpatterns


def raises(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug in a plain view")


@require_POST
def post_only(request: HttpRequest) -> HttpResponse:  # CSRF-protected: not a DRF view
    return HttpResponse("posted")


urlpatterns = [
    path("api/plain/raises/", raises),
    path("api/plain/post-only/", post_only),
    *project_urlpatterns,
]
