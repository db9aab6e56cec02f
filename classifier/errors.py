"""One error type for the domain and one JSON shape for every API error.

Every error the API returns looks like::

    {"error": {"code": "invalid_image", "message": "a sentence a person can act on", "details": {...}}}

``api_exception_handler`` is DRF's EXCEPTION_HANDLER; ``json_404``/``json_500`` are the root URLconf's
handlers, so URLs under /api/ that match no view answer in the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A domain error with a message for people; ``extra`` carries machine-readable details."""

    def __init__(
        self, message: str, extra: dict[str, Any] | None = None, *, code: str = "invalid", status_code: int = 400
    ):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        self.code = code
        self.status_code = status_code


class NotFoundError(ApplicationError):
    def __init__(self, message: str = "Not found.", extra: dict[str, Any] | None = None):
        super().__init__(message, extra, code="not_found", status_code=404)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}


_MESSAGES = {
    "invalid": "The request is not valid; see details.",
}


def _first_message(detail: Any) -> str | None:
    """The first human message inside a DRF ValidationError detail, prefixed with its field."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            if inner:
                return inner if key == "non_field_errors" else f"{key}: {inner}"
    elif isinstance(detail, list):
        for value in detail:
            inner = _first_message(value)
            if inner:
                return inner
    elif detail:
        return str(detail)
    return None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.extra), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("request_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        # Anything unexpected: log it with the traceback, answer in the same shape.
        logger.exception("unhandled API error", exc_info=exc)
        return Response(
            error_body("server_error", "Something went wrong on our side; please try again later."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        message = _first_message(exc.detail) or _MESSAGES["invalid"]
        response.data = error_body("invalid", message, exc.detail)
    else:
        detail = exc.detail
        code = exc.get_codes() if not isinstance(detail, dict | list) else exc.default_code
        details: dict[str, Any] = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            details["retry_after_seconds"] = int(exc.wait)
        response.data = error_body(
            str(code), str(detail) if not isinstance(detail, dict | list) else str(exc.default_detail), details
        )
    return response


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def json_404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)


def json_500(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(
            error_body("server_error", "Something went wrong on our side; please try again later."), status=500
        )
    return defaults.server_error(request)
