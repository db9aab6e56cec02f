"""The "About the model" page: what the running model knows, how often it is right on held-out
images, and when not to trust it (classifier.model_card), with the pictures of its export. Public:
visitors decide from it whether to upload at all."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from classifier.model_card import FIGURE_FILES, figure_path, model_card


@require_GET
def about_model(request: HttpRequest) -> HttpResponse:
    card = model_card()
    return render(request, "classifier/model.html", {"card": card}, status=200 if card else 503)


@require_GET
def model_figure(request: HttpRequest, name: str) -> FileResponse:
    """One of the bundle's report pictures (only the fixed list in classifier.model_card). The page
    links it with ``?v=<version>``, so a re-exported bundle's picture is a new URL and this one may
    be cached."""
    if name not in FIGURE_FILES:
        raise Http404("No such picture of the model.")
    path = figure_path(Path(settings.MODEL_BUNDLE), name)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise Http404("This model bundle has no such picture.") from exc
    response = FileResponse(handle, content_type="image/png")
    response["Cache-Control"] = "public, max-age=86400"
    return response
