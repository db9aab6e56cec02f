"""Content-Security-Policy header (Django 5 has no built-in CSP support), and the two pieces
that let every middleware of the stack run in the server's mode.

Under ASGI one sync-only middleware turns the whole stack below it sync: Django runs it on a
thread made for the request and hops back to the event loop for the async views (two thread
hops and a thread per request, about 2 ms of an upload's answer here). `ResponseMiddleware` is
a base for middleware that only rewrites the response (CSP, the API's error shape): it runs
in-line in either mode. `StaticFilesMiddleware` is WhiteNoise's middleware made async-capable
the same way (WhiteNoise 6 is sync-only): static files are still served by WhiteNoise.

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

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware

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


class BothModes:
    """Mixin for middleware that runs in the mode of the handler it wraps: ``_call`` under WSGI
    (or below a sync middleware), the coroutine ``_acall`` under ASGI. Call `_follow` in __init__."""

    sync_capable = True
    async_capable = True
    async_mode = False

    def _follow(self, get_response: Callable) -> None:
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        return self._acall(request) if self.async_mode else self._call(request)


class ResponseMiddleware(BothModes):
    """Middleware that only looks at the response: ``process_response(request, response)``, a
    plain (non-blocking) function, called in-line under WSGI and ASGI alike."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self._follow(get_response)

    def _call(self, request: HttpRequest) -> HttpResponse:
        return self.process_response(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self.process_response(request, await self.get_response(request))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        raise NotImplementedError


class StaticFilesMiddleware(BothModes, WhiteNoiseMiddleware):
    """WhiteNoise, async-capable: a static file is answered at once (the lookup is a dict, or a
    stat under autorefresh in development); anything else goes on in the server's mode."""

    def __init__(self, get_response: Callable) -> None:
        WhiteNoiseMiddleware.__init__(self, get_response)
        self._follow(get_response)

    def _call(self, request: HttpRequest) -> HttpResponse:
        return WhiteNoiseMiddleware.__call__(self, request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        static_file = self.find_file(path) if self.autorefresh else self.files.get(path)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)


class ContentSecurityPolicyMiddleware(ResponseMiddleware):
    def __init__(self, get_response: Callable) -> None:
        super().__init__(get_response)
        directives = getattr(settings, "CSP_DIRECTIVES", STRICT_POLICY)
        self.strict = build_policy(directives)
        self.relaxed = build_policy(relaxed(directives))
        paths = getattr(settings, "CSP_RELAXED_STYLE_PATHS", DEFAULT_RELAXED_STYLE_PATHS)
        self.relaxed_paths = [re.compile(p) for p in paths]

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if "Content-Security-Policy" not in response:
            is_relaxed = any(p.search(request.path) for p in self.relaxed_paths)
            response["Content-Security-Policy"] = self.relaxed if is_relaxed else self.strict
        return response
