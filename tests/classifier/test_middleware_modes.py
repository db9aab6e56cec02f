"""The middleware stack runs in the server's mode: under ASGI no middleware is sync-only, so
Django adapts nothing (no thread per request for the stack), and each of ours behaves the same
in both modes: static files, the CSP header, the API's error shape."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient, Client

STATIC = "classifier.middleware.StaticFilesMiddleware"


@pytest.fixture
def production_stack(settings):
    """The production middleware list (whitenoise's place taken by our async-capable subclass)."""
    stack = list(settings.MIDDLEWARE)
    stack.insert(stack.index("django.middleware.security.SecurityMiddleware") + 1, STATIC)
    settings.MIDDLEWARE = stack
    settings.WHITENOISE_USE_FINDERS = True  # serve static/ without collectstatic
    settings.WHITENOISE_AUTOREFRESH = False
    return stack


def test_under_asgi_django_adapts_no_middleware(production_stack, settings, caplog):
    settings.DEBUG = True  # Django logs each adaptation only then
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler()  # loads the middleware for async requests
    adapted = [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]
    assert adapted == []


@pytest.mark.parametrize("mode", ["wsgi", "asgi"])
def test_static_files_are_served_in_both_modes(production_stack, mode):
    get = Client().get if mode == "wsgi" else async_to_sync(AsyncClient().get)
    response = get("/static/css/app.css")
    assert response.status_code == 200
    assert b"{" in b"".join(response.streaming_content)  # the stylesheet itself
    assert response["Content-Type"].startswith("text/css")


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["wsgi", "asgi"])
def test_api_errors_keep_their_shape_in_both_modes(production_stack, mode):
    get = Client().get if mode == "wsgi" else async_to_sync(AsyncClient().get)
    response = get("/api/v1/no-such-endpoint/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"
    assert "Content-Security-Policy" in response
