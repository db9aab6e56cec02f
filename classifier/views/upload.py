"""The pages before a job exists: home (with the no-account demo), sign-up and upload."""

from __future__ import annotations

import math

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import TooManyFilesSent
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from classifier import selectors, services
from classifier.demo import DemoImage, demo_classify, demo_prepare, demo_throttle_wait
from classifier.errors import ApplicationError
from classifier.forms import ACCEPTED_TYPES, DemoForm, SignUpForm, UploadForm, max_files_per_upload
from classifier.models import Classification
from classifier.throttling import upload_throttle_wait
from classifier.uploads import classifications_create_many
from worker.runtime.images import ACCEPTED_FORMATS_TEXT, MSG_NOT_IMAGE

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


def _render_home(request: HttpRequest, context: dict | None = None, status: int = 200) -> HttpResponse:
    context = {"demo_form": DemoForm(), "limits": _upload_limits(), **(context or {})}
    return render(request, "classifier/home.html", context, status=status)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("classifier:upload")
    return _render_home(request)


def _demo_prepare(request: HttpRequest) -> HttpResponse | tuple[str, DemoImage]:
    """The demo's synchronous part: the throttle, the form and the upload check; an answer page
    when the request stops here, else the file's name and the image for the worker."""
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
        return upload_file.name, demo_prepare(upload=upload_file)
    except ApplicationError as exc:
        context = {"demo_form": form, "demo_error": exc.message, "demo_filename": upload_file.name}
        return _render_home(request, context, status=exc.status_code)


@require_http_methods(["GET", "POST"])
async def demo(request: HttpRequest) -> HttpResponse:
    """Classify one image for anyone, during the request, storing nothing (classifier.demo): the
    checks run on a thread, the worker's answer is awaited without holding one."""
    if request.method == "GET":
        return redirect(reverse("classifier:home") + "#demo")
    prepared = await sync_to_async(_demo_prepare)(request)
    if isinstance(prepared, HttpResponse):
        return prepared
    filename, image = prepared
    try:
        context, status = {"demo_result": await demo_classify(image), "demo_filename": filename}, 200
    except ApplicationError as exc:
        context, status = {"demo_error": exc.message, "demo_filename": filename}, exc.status_code
    return await sync_to_async(_render_home)(request, context, status)


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


def _images_sent(request: HttpRequest) -> int:
    """How many images the form carries: each spends one unit of the upload budgets."""
    try:
        return len(request.FILES.getlist("images"))
    except TooManyFilesSent:
        return 1  # refused below, with its own message


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and (wait := upload_throttle_wait(request, cost=_images_sent(request))) is not None:
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
        files = form.cleaned_data["images"]
        outcomes = classifications_create_many(owner=request.user, uploads=files, heatmaps=True)
        created = [o for o in outcomes if isinstance(o, Classification)]
        rejected = [
            (f.name or "(unnamed file)", o.message)
            for f, o in zip(files, outcomes, strict=True)
            if isinstance(o, ApplicationError)
        ]
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
