"""Content-Security-Policy header (Django 5 has no built-in CSP support).

The site's own pages keep every script and style in static files, so they get a strict
same-origin policy with no inline code at all. Two third-party UIs need inline styles
(not scripts): the Django admin (style attributes, data: thumbnails), Swagger UI (a
<style> block, data: icons) and DRF's browsable API (style attributes); paths matching ``CSP_RELAXED_STYLE_PATHS`` get those two
allowances and nothing more. A response that already carries a policy (the owner-only image
views send ``default-src 'none'; sandbox``) keeps its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

STRICT_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

RELAXED_STYLE_ADDITIONS = {
    "style-src": ["'unsafe-inline'"],
    "img-src": ["data:"],
}

# The admin, Swagger UI (/api/v1/docs/) and DRF's browsable API (HTML views of /api/ URLs).
DEFAULT_RELAXED_STYLE_PATHS = [r"^/admin/", r"^/api/"]


def build_policy(directives: dict[str, list[str]]) -> str:
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def relaxed(directives: dict[str, list[str]]) -> dict[str, list[str]]:
    merged = {name: list(sources) for name, sources in directives.items()}
    for name, extra in RELAXED_STYLE_ADDITIONS.items():
        merged[name] = [*merged.get(name, []), *extra]
    return merged


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        directives = getattr(settings, "CSP_DIRECTIVES", STRICT_POLICY)
        self.strict = build_policy(directives)
        self.relaxed = build_policy(relaxed(directives))
        paths = getattr(settings, "CSP_RELAXED_STYLE_PATHS", DEFAULT_RELAXED_STYLE_PATHS)
        self.relaxed_paths = [re.compile(p) for p in paths]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            is_relaxed = any(p.search(request.path) for p in self.relaxed_paths)
            response["Content-Security-Policy"] = self.relaxed if is_relaxed else self.strict
        return response
