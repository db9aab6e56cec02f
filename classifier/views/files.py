"""Owner-only files: the uploaded image and its thumbnail (staff may see any, for the admin), and
the favicon redirect. Uploads are never served from a public media URL."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.templatetags.static import static
from django.views.decorators.http import require_GET

from classifier import selectors
from classifier.errors import ApplicationError
from classifier.models import Classification

# Content types for the formats the service accepts (image_format is the canonical extension).
IMAGE_CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "avif": "image/avif",
    "heic": "image/heic",
}

# Formats every current browser can show in an <img> (TIFF and HEIC get the JPEG thumbnail).
BROWSER_IMAGE_FORMATS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "avif"}


def own_classification(request: HttpRequest, id: UUID) -> Classification:
    """The user's own classification, or 404 (never 403: other users' ids must look absent)."""
    try:
        return selectors.classification_get(user=request.user, id=id)
    except ApplicationError as exc:  # NotFoundError for unknown ids and other users' ids
        raise Http404("No such classification.") from exc


def viewable_classification(request: HttpRequest, id: UUID) -> Classification:
    """Like `own_classification`, but staff may see any row (the admin shows thumbnails)."""
    if request.user.is_staff:
        # selectors.classification_get is owner-only even for staff; the admin's thumbnails need this.
        classification = Classification.objects.filter(pk=id).first()
        if classification is None:
            raise Http404("No such classification.")
        return classification
    return own_classification(request, id)


def _stream(field: FieldFile, content_type: str, filename: str) -> FileResponse:
    if not field or not field.name:
        raise Http404("No such file.")
    try:
        handle = field.storage.open(field.name, "rb")
    except (FileNotFoundError, OSError) as exc:
        raise Http404("No such file.") from exc
    response = FileResponse(handle, content_type=content_type, filename=filename)
    # The bytes are the user's: never let a browser run them as a page or guess another type.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    # Browsers ask for /favicon.ico on pages that do not name an icon (the admin, Swagger UI).
    return redirect(static("img/favicon.svg"), permanent=True)


@login_required
@require_GET
def image(request: HttpRequest, id: UUID) -> FileResponse:
    classification = viewable_classification(request, id)
    content_type = IMAGE_CONTENT_TYPES.get(classification.image_format.lower(), "application/octet-stream")
    return _stream(classification.image, content_type, f"{classification.id}.{classification.image_format}")


@login_required
@require_GET
def thumbnail(request: HttpRequest, id: UUID) -> FileResponse:
    classification = viewable_classification(request, id)
    return _stream(classification.thumbnail, "image/jpeg", f"{classification.id}-thumbnail.jpg")
