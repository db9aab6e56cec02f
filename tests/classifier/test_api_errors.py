"""Every error response under /api/ is JSON in the one error shape, with DEBUG on and off.

With DEBUG on, Django answers unknown URLs and uncaught exceptions with its HTML debug pages (the
URLconf's handler404/handler500 are not used), and DRF renders its errors as HTML for a browser
and as YAML on the schema view; `classifier.errors.ApiErrorShapeMiddleware` turns all of those
into the JSON shape. Pages outside /api/ keep their HTML.
"""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.classifier.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.classifier.api_error_urls")]

LIST_URL = "/api/v1/classifications/"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request):
    with override_settings(DEBUG=request.param):
        yield request.param


@pytest.fixture
def token_client() -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=UserFactory()).key}")
    return client


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].split(";")[0] == "application/json", response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    # the security headers of every response are still there
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in response
    return body["error"]


@pytest.mark.parametrize("url", ["/api/", "/api/nothing/", "/api/v1/nothing-here/", "/api/v2/classifications/"])
def test_unknown_api_urls_are_json_404(debug, url):
    response = Client(raise_request_exception=False).get(url, HTTP_ACCEPT=BROWSER_ACCEPT)
    assert_json_error(response, 404, "not_found")


def test_a_browser_asking_for_html_still_gets_json_errors(debug):
    # DRF's browsable API would render this 401 as an HTML page.
    response = Client().get(LIST_URL, HTTP_ACCEPT=BROWSER_ACCEPT)
    assert_json_error(response, 401, "not_authenticated")


def test_wrong_methods_are_json_405(debug, token_client):
    assert_json_error(token_client.put(LIST_URL, {}), 405, "method_not_allowed")
    # the schema view renders its errors as YAML unless told otherwise
    assert_json_error(token_client.post("/api/v1/schema/"), 405, "method_not_allowed")
    plain = Client().get("/api/plain/post-only/", HTTP_ACCEPT=BROWSER_ACCEPT)  # Django's bare 405
    error = assert_json_error(plain, 405, "method_not_allowed")
    assert error["message"] == "Method Not Allowed."
    assert plain["Allow"] == "POST"


def test_unhandled_errors_are_json_500(debug, token_client, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr("classifier.selectors.classification_list", boom)
    assert_json_error(token_client.get(LIST_URL, HTTP_ACCEPT=BROWSER_ACCEPT), 500, "server_error")
    plain = Client(raise_request_exception=False).get("/api/plain/raises/", HTTP_ACCEPT=BROWSER_ACCEPT)
    error = assert_json_error(plain, 500, "server_error")
    assert "RuntimeError" not in plain.content.decode()  # no traceback in the answer, DEBUG or not
    assert error["message"] == "Something went wrong on our side; please try again later."


def test_csrf_failures_are_json_403(debug):
    user = UserFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    error = assert_json_error(client.post("/api/plain/post-only/"), 403, "permission_denied")
    assert error["message"].startswith("CSRF Failed:")
    # DRF's own CSRF check on a session-authenticated API call
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(user)
    error = assert_json_error(api.post(LIST_URL, {}, HTTP_ACCEPT=BROWSER_ACCEPT), 403, "permission_denied")
    assert "CSRF" in error["message"]


def test_pages_outside_the_api_keep_html_errors(debug):
    response = Client(raise_request_exception=False).get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
