"""HTML side of feedback: the result page's form posts here (works without JavaScript)."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from classifier import selectors
from classifier.errors import ApplicationError, NotFoundError
from classifier.evaluation import feedback as feedback_services


@login_required
@require_http_methods(["GET", "POST"])
def feedback(request: HttpRequest, id: UUID) -> HttpResponse:
    """GET: the feedback box on its own page. POST: ``action=correct``, ``action=wrong`` (with
    ``label``, or none for "I don't know") or ``action=delete``, then back to the result page."""
    try:
        classification = selectors.classification_get(user=request.user, id=id)
    except ApplicationError as exc:  # other users' ids look absent
        raise Http404("No such classification.") from exc
    if request.method == "GET":
        return render(request, "classifier/feedback.html", {"c": classification})
    action = request.POST.get("action")
    try:
        if action == "correct":
            feedback_services.feedback_set(user=request.user, classification=classification, correct=True)
            messages.success(request, "Thanks: recorded that the answer is right.")
        elif action == "wrong":
            label = request.POST.get("label", "").strip()
            if label:
                feedback_services.feedback_set(user=request.user, classification=classification, label=label)
                messages.success(request, f"Thanks: recorded that this is a {label}.")
            else:
                feedback_services.feedback_set(user=request.user, classification=classification, correct=False)
                messages.success(request, "Thanks: recorded that the answer is wrong.")
        elif action == "delete":
            try:
                feedback_services.feedback_delete(user=request.user, classification=classification)
            except NotFoundError:
                pass  # already gone: the page shows no feedback either way
            messages.success(request, "Your feedback was withdrawn.")
        else:
            messages.error(request, "Choose whether the answer is right or wrong.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("classifier:result", id=classification.id)
