"""HTML pages: sign-up, upload, result, history, delete, and the owner-only image/thumbnail views.

Views stay thin: reads go through `classifier.selectors`, writes through `classifier.services`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from uuid import UUID

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import TooManyFilesSent
from django.core.paginator import Paginator
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods

from classifier import explanations, selectors, services
from classifier.errors import ApplicationError
from classifier.forms import HistoryFilterForm, SignUpForm, UploadForm, max_files_per_upload
from classifier.models import Classification
from classifier.throttling import upload_throttle_wait

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
}


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


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


# --- pages ---------------------------------------------------------------------------------


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    # Browsers ask for /favicon.ico on pages that do not name an icon (the admin, Swagger UI).
    return redirect(static("img/favicon.svg"), permanent=True)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("classifier:upload")
    return render(request, "classifier/home.html")


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


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and (wait := upload_throttle_wait(request)) is not None:
        seconds = math.ceil(wait)
        context = {"form": UploadForm(), "throttled_seconds": seconds}
        response = render(request, "classifier/upload.html", context, status=429)
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
            return render(request, "classifier/upload.html", context, status=400)
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
            messages.success(request, f"{len(created)} images queued for classification.")
            return redirect("classifier:history")
        # Nothing accepted: stay on the form and say why, file by file.
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "rejected": rejected}
    return render(request, "classifier/upload.html", context, status=status)


@login_required
@require_GET
def result(request: HttpRequest, id: UUID) -> HttpResponse:
    classification = _own_classification(request, id)
    finished = classification.status in (Classification.Status.DONE, Classification.Status.FAILED)
    context = {
        "c": classification,
        "finished": finished,
        "predictions": classification.predictions[:5],
        "wait_time": _duration(classification.created_at, classification.started_at),
        "run_time": _duration(classification.started_at, classification.finished_at),
        "api_url": reverse("api:classification-detail", kwargs={"classification_id": classification.id}),
        "explanation": explanations.explanation_summary(classification, explanations.explanation_of(classification)),
    }
    return render(request, "classifier/result.html", context)


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    filter_form = HistoryFilterForm(request.GET or None)
    filters = filter_form.filters()
    queryset = selectors.classification_list(user=request.user, filters=filters)
    page = Paginator(queryset, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "filter_form": filter_form,
        "filtered": bool(filters),
        "query": query.urlencode(),
    }
    return render(request, "classifier/history.html", context)


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
