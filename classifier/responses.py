"""Headers for the images the app serves itself (uploads' figures, heatmaps, admin plots).

Never run as a page, never sniffed, never shared across origins, cached only by the browser.
"""

from __future__ import annotations

from django.http import HttpResponse, HttpResponseBase


def private_image(response: HttpResponseBase, max_age: int = 3600) -> HttpResponseBase:
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    response["Cache-Control"] = f"private, max-age={max_age}"
    return response


def png_response(data: bytes, max_age: int = 3600) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    private_image(response, max_age)
    return response
