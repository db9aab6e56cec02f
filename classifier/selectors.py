"""Everything that reads Classification rows. Users only ever see their own rows through these."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from classifier.errors import ApplicationError, NotFoundError
from classifier.models import Classification


def classification_list(*, user, filters: dict[str, Any] | None = None) -> QuerySet[Classification]:
    """The user's own classifications, newest first. ``filters``: ``status`` and ``label`` (top label)."""
    filters = filters or {}
    qs = (
        Classification.objects.filter(owner=user)
        .select_related("explanation")
        .defer("explanation__model_input")
        .order_by("-created_at", "-id")
    )
    status = filters.get("status")
    if status:
        if status not in Classification.Status.values:
            raise ApplicationError(
                f"Unknown status {status!r}; use one of: {', '.join(Classification.Status.values)}.",
                {"status": status},
            )
        qs = qs.filter(status=status)
    label = filters.get("label")
    if label:
        qs = qs.filter(top_label__iexact=label)
    return qs


def classification_get(*, user, id: uuid.UUID | str) -> Classification:
    """One of the user's own classifications. Any other id (someone else's, unknown, malformed)
    is NotFoundError (404), also for staff: the admin is where staff see everything."""
    try:
        return Classification.objects.get(owner=user, id=id)
    except (Classification.DoesNotExist, ValidationError, ValueError, TypeError) as exc:
        # ValidationError/ValueError: a malformed UUID; it names no row, so it is "not found" too.
        raise NotFoundError("No such classification.") from exc
