"""One error type for the domain and one JSON shape for every API error.

Every error the API returns looks like::

    {"error": {"code": "invalid_image", "message": "a sentence a person can act on", "details": {...}}}

``api_exception_handler`` is DRF's EXCEPTION_HANDLER; ``json_404``/``json_500`` are the root URLconf's
handlers, so URLs under /api/ that match no view answer in the same shape. Those handlers are not
used with DEBUG on (Django then answers its HTML debug pages), and DRF renders errors with the
negotiated renderer (HTML for a browser, YAML for the schema view), so `ApiErrorShapeMiddleware`
makes sure of it: every error response under /api/ leaves as JSON in this shape, DEBUG on or off.
``csrf_failure`` (CSRF_FAILURE_VIEW) says why a CSRF check failed, in the same shape under /api/.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import csrf, defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from classifier.middleware import ResponseMiddleware

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


# The upload API takes one image per request (classifier.api); more files are refused with this code.
ONE_IMAGE_PER_REQUEST = "one_image_per_request"


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
    if isinstance(exc, TooManyFilesSent):  # past DATA_UPLOAD_MAX_NUMBER_FILES Django stops reading
        refusal = getattr(context.get("view"), "too_many_files", None)  # a view that takes several files says how many
        if refusal is not None:
            error = refusal()
            return Response(error_body(error.code, error.message, error.extra), status=error.status_code)
        return Response(
            error_body(
                ONE_IMAGE_PER_REQUEST,
                "Send one image per request; this request carries too many files. Upload each image in its own request.",
            ),
            status=status.HTTP_400_BAD_REQUEST,
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


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if _wants_json(request):
        # The words DRF's SessionAuthentication uses for the same failure.
        return JsonResponse(error_body("permission_denied", f"CSRF Failed: {reason}"), status=403)
    return csrf.csrf_failure(request, reason=reason)


# Codes for error statuses that reach ApiErrorShapeMiddleware without a body in our shape; DRF's
# names where DRF has an exception for the status.
_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
}
_STATUS_MESSAGES = {
    404: "Not found.",
    500: "Something went wrong on our side; please try again later.",
}


def _is_error_body(data: Any) -> bool:
    return isinstance(data, dict) and set(data) == {"error"} and isinstance(data["error"], dict)


class ApiErrorShapeMiddleware(ResponseMiddleware):
    """Every error response (status >= 400) under /api/ is JSON in the one error shape.

    A response that is already JSON is left alone. Otherwise the body is replaced: by the error
    body a DRF response carries (rendered as HTML or YAML for the client that asked), else by one
    made from the status (Django's debug 404 and 500 pages, a bare 405, a CSRF or 400 page).
    Headers set by other middleware (Allow, Vary, security headers) are kept.
    """

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code < 400 or not _wants_json(request) or response.streaming:
            return response
        if response.get("Content-Type", "").split(";")[0].strip() == "application/json":
            return response
        data = getattr(response, "data", None)
        if not _is_error_body(data):
            status_code = response.status_code
            try:
                phrase = HTTPStatus(status_code).phrase
            except ValueError:
                phrase = "Error"
            code = _STATUS_CODES.get(status_code, "server_error" if status_code >= 500 else "error")
            data = error_body(code, _STATUS_MESSAGES.get(status_code, f"{phrase}."))
        response.content = json.dumps(data).encode()
        response["Content-Type"] = "application/json"
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        return response
