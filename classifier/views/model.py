"""The "About the model" page: what the running model knows, how often it is right on held-out
images, and when not to trust it (classifier.model_card). Public: visitors decide from it whether
to upload at all."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from classifier.model_card import model_card


@require_GET
def about_model(request: HttpRequest) -> HttpResponse:
    card = model_card()
    return render(request, "classifier/model.html", {"card": card}, status=200 if card else 503)
