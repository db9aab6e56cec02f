"""The pages of jobs: the result page, the history (filters, pages, bulk delete) and delete."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classifier import explanations, selectors, services
from classifier.forms import HistoryFilterForm
from classifier.models import Classification
from classifier.views.files import BROWSER_IMAGE_FORMATS, own_classification

HISTORY_PAGE_SIZE = 20


def _duration(start: datetime | None, end: datetime | None) -> timedelta | None:
    return end - start if start and end else None


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


@login_required
@require_GET
def result(request: HttpRequest, id: UUID) -> HttpResponse:
    classification = own_classification(request, id)
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
    context = {
        "page": page,
        "filter_form": filter_form,
        "filtered": bool(filters),
        "query": query.urlencode(),
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
    classification = own_classification(request, id)
    next_url = _safe_next(request, reverse("classifier:history"))
    if request.method == "POST":
        name = classification.original_filename or str(classification.id)
        services.classification_delete(classification=classification)
        messages.success(request, f"Deleted {name}.")
        return redirect(next_url)
    return render(request, "classifier/delete.html", {"c": classification, "next": next_url})
