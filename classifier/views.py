"""HTML pages: sign-up, upload, result, history, delete, and the owner-only image/thumbnail views.

Views stay thin: reads go through `classifier.selectors`, writes through `classifier.services`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import TooManyFilesSent
from django.core.paginator import Paginator
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import Resolver404, resolve, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classifier import explanations, selectors, services
from classifier.demo import demo_classify, demo_throttle_wait
from classifier.errors import ApplicationError
from classifier.forms import (
    ACCEPTED_TYPES,
    DemoForm,
    HistoryFilterForm,
    SignUpForm,
    UploadForm,
    max_files_per_upload,
)
from classifier.models import Classification
from classifier.throttling import upload_throttle_wait
from worker.runtime.images import ACCEPTED_FORMATS_TEXT, MSG_NOT_IMAGE

HISTORY_PAGE_SIZE = 20

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


# --- helpers -------------------------------------------------------------------------------


def _own_classification(request: HttpRequest, id: UUID) -> Classification:
    """The user's own classification, or 404 (never 403: other users' ids must look absent)."""
    try:
        return selectors.classification_get(user=request.user, id=id)
    except ApplicationError as exc:  # NotFoundError for unknown ids and other users' ids
        raise Http404("No such classification.") from exc


def _viewable_classification(request: HttpRequest, id: UUID) -> Classification:
    """Like `_own_classification`, but staff may see any row (the admin shows thumbnails)."""
    if request.user.is_staff:
        # selectors.classification_get is owner-only even for staff; the admin's thumbnails need this.
        classification = Classification.objects.filter(pk=id).first()
        if classification is None:
            raise Http404("No such classification.")
        return classification
    return _own_classification(request, id)


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


def _duration(start: datetime | None, end: datetime | None) -> timedelta | None:
    return end - start if start and end else None


# The CSV export (issue 12) lives in the API; the history page links to it only once it exists.
EXPORT_CSV_PATH = "/api/v1/classifications/export.csv"


def _export_url() -> str | None:
    try:
        match = resolve(EXPORT_CSV_PATH)
    except Resolver404:
        return None
    return None if match.url_name == "classification-detail" else EXPORT_CSV_PATH


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


_STATUS_WORDS = {
    Classification.Status.DONE: "classified",
    Classification.Status.FAILED: "failed",
    Classification.Status.RUNNING: "being classified",
    Classification.Status.QUEUED: "queued for classification",
}


def _upload_summary(total: int, counts: dict[str, int]) -> str:
    """ "6 images classified." or "6 images uploaded: 4 classified, 1 failed, 1 queued for classification." """
    parts = [(counts[status], words) for status, words in _STATUS_WORDS.items() if counts.get(status)]
    if len(parts) == 1 and parts[0][0] == total:
        return f"{total} images {parts[0][1]}."
    return f"{total} images uploaded: " + ", ".join(f"{n} {words}" for n, words in parts) + "."


# --- pages ---------------------------------------------------------------------------------


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    # Browsers ask for /favicon.ico on pages that do not name an icon (the admin, Swagger UI).
    return redirect(static("img/favicon.svg"), permanent=True)


def _render_home(request: HttpRequest, context: dict | None = None, status: int = 200) -> HttpResponse:
    context = {"demo_form": DemoForm(), "limits": _upload_limits(), **(context or {})}
    return render(request, "classifier/home.html", context, status=status)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("classifier:upload")
    return _render_home(request)


@require_http_methods(["GET", "POST"])
def demo(request: HttpRequest) -> HttpResponse:
    """Classify one image for anyone, synchronously, storing nothing (classifier.demo)."""
    if request.method == "GET":
        return redirect(reverse("classifier:home") + "#demo")
    if (wait := demo_throttle_wait(request)) is not None:
        seconds = math.ceil(wait)
        response = _render_home(request, {"demo_throttled_seconds": seconds}, status=429)
        response["Retry-After"] = str(seconds)
        return response
    try:
        form = DemoForm(request.POST, request.FILES)
    except TooManyFilesSent:
        return _render_home(request, {"demo_error": "Send one image at a time."}, status=400)
    if not form.is_valid():
        return _render_home(request, {"demo_form": form}, status=400)
    upload_file = form.cleaned_data["image"]
    try:
        result = demo_classify(upload=upload_file)
    except ApplicationError as exc:
        context = {"demo_form": form, "demo_error": exc.message, "demo_filename": upload_file.name}
        return _render_home(request, context, status=400)
    context = {"demo_result": result, "demo_filename": upload_file.name}
    return _render_home(request, context)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("classifier:upload")
    form = SignUpForm(request.POST) if request.method == "POST" else SignUpForm()
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_username()}. Upload an image to classify it.")
        return redirect("classifier:upload")
    status = 400 if request.method == "POST" else 200
    return render(request, "registration/signup.html", {"form": form}, status=status)


def _upload_limits() -> dict[str, object]:
    """The server's limits and messages, put on the upload page for the checks upload.js makes
    before sending (the server still makes every check itself)."""
    limit = settings.MAX_UPLOAD_BYTES
    return {
        "max_bytes": limit,
        "max_size": services._format_bytes(limit),
        "max_files": max_files_per_upload(),
        "accept": ACCEPTED_TYPES,
        "formats": ACCEPTED_FORMATS_TEXT,
        "msg_too_large": services.MSG_FILE_TOO_LARGE,
        "msg_empty": services.MSG_EMPTY_FILE,
        "msg_not_image": MSG_NOT_IMAGE,
        "msg_too_many": f"Too many files: upload at most {max_files_per_upload()} at a time.",
    }


def _render_upload(request: HttpRequest, context: dict, status: int = 200) -> HttpResponse:
    return render(request, "classifier/upload.html", {**context, "limits": _upload_limits()}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and (wait := upload_throttle_wait(request)) is not None:
        seconds = math.ceil(wait)
        context = {"form": UploadForm(), "throttled_seconds": seconds}
        response = _render_upload(request, context, status=429)
        response["Retry-After"] = str(seconds)
        return response
    if request.method == "POST":
        try:
            form = UploadForm(request.POST, request.FILES)
        except TooManyFilesSent:
            # Django stops reading the body past DATA_UPLOAD_MAX_NUMBER_FILES; say so on the form.
            context = {
                "form": UploadForm(),
                "upload_error": f"Too many files: upload at most {max_files_per_upload()} at a time.",
            }
            return _render_upload(request, context, status=400)
    else:
        form = UploadForm()
    rejected: list[tuple[str, str]] = []
    if request.method == "POST" and form.is_valid():
        created: list[Classification] = []
        for upload_file in form.cleaned_data["images"]:
            try:
                created.append(services.classification_create(owner=request.user, upload=upload_file))
            except ApplicationError as exc:
                rejected.append((upload_file.name or "(unnamed file)", exc.message))
        if created:
            for name, message in rejected:
                messages.error(request, f"{name}: {message}")
            if len(created) == 1:
                return redirect("classifier:result", id=created[0].id)
            # Worded by the statuses now: in-process mode has already classified them.
            counts = selectors.classification_status_counts(user=request.user, ids=[c.id for c in created])
            notify = messages.warning if counts.get(Classification.Status.FAILED) else messages.success
            notify(request, _upload_summary(len(created), counts))
            return redirect("classifier:history")
        # Nothing accepted: stay on the form and say why, file by file.
    status = 400 if request.method == "POST" else 200
    return _render_upload(request, {"form": form, "rejected": rejected}, status=status)


@login_required
@require_GET
def result(request: HttpRequest, id: UUID) -> HttpResponse:
    classification = _own_classification(request, id)
    finished = classification.status in (Classification.Status.DONE, Classification.Status.FAILED)
    explanation = explanations.explanation_of(classification)
    if explanation is not None and explanation.heatmaps_status == explanation.HeatmapsStatus.NOT_REQUESTED:
        # The owner is looking at the page of a job uploaded without maps (the API's default): draw them now.
        explanations.heatmaps_request(classification=classification)
        explanation.refresh_from_db()
    context = {
        "c": classification,
        "finished": finished,
        "predictions": classification.predictions[:5],
        "wait_time": _duration(classification.created_at, classification.started_at),
        "run_time": _duration(classification.started_at, classification.finished_at),
        "api_url": reverse("api:classification-detail", kwargs={"classification_id": classification.id}),
        # The original where browsers can show it (a larger picture), else the JPEG thumbnail.
        "display_url": reverse(
            "classifier:image" if classification.image_format in BROWSER_IMAGE_FORMATS else "classifier:thumbnail",
            kwargs={"id": classification.id},
        ),
        "explanation": explanations.explanation_summary(classification, explanation),
    }
    return render(request, "classifier/result.html", context)


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    labels = selectors.classification_label_choices(user=request.user)
    filter_form = HistoryFilterForm(request.GET or None, labels=labels)
    filters = filter_form.filters()
    queryset = selectors.classification_list(user=request.user, filters=filters)
    page = Paginator(queryset, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    export_url = _export_url()
    context = {
        "page": page,
        "filter_form": filter_form,
        "filtered": bool(filters),
        "query": query.urlencode(),
        "export_url": f"{export_url}?{query.urlencode()}" if export_url and query else export_url,
    }
    return render(request, "classifier/history.html", context)


@login_required
@require_POST
def bulk_delete(request: HttpRequest) -> HttpResponse:
    """Delete the selected rows of the history page (ids of other users' rows are ignored)."""
    ids = []
    for value in request.POST.getlist("ids"):
        try:
            ids.append(UUID(value))
        except ValueError:
            continue
    next_url = _safe_next(request, reverse("classifier:history"))
    if not ids:
        messages.error(request, "Select at least one classification to delete.")
        return redirect(next_url)
    deleted = services.classification_delete_many(owner=request.user, ids=ids)
    messages.success(request, f"Deleted {deleted} classification{'s' if deleted != 1 else ''}.")
    return redirect(next_url)


@login_required
@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, id: UUID) -> HttpResponse:
    classification = _own_classification(request, id)
    next_url = _safe_next(request, reverse("classifier:history"))
    if request.method == "POST":
        name = classification.original_filename or str(classification.id)
        services.classification_delete(classification=classification)
        messages.success(request, f"Deleted {name}.")
        return redirect(next_url)
    return render(request, "classifier/delete.html", {"c": classification, "next": next_url})


# --- files ---------------------------------------------------------------------------------


@login_required
@require_GET
def image(request: HttpRequest, id: UUID) -> FileResponse:
    classification = _viewable_classification(request, id)
    content_type = IMAGE_CONTENT_TYPES.get(classification.image_format.lower(), "application/octet-stream")
    return _stream(classification.image, content_type, f"{classification.id}.{classification.image_format}")


@login_required
@require_GET
def thumbnail(request: HttpRequest, id: UUID) -> FileResponse:
    classification = _viewable_classification(request, id)
    return _stream(classification.thumbnail, "image/jpeg", f"{classification.id}-thumbnail.jpg")
