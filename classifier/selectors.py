"""Everything that reads Classification rows. Users only ever see their own rows through these."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from classifier.errors import ApplicationError, NotFoundError
from classifier.models import Classification


def classification_list(*, user, filters: dict[str, Any] | None = None) -> QuerySet[Classification]:
    """The user's own classifications, newest first.

    ``filters``: ``status``, ``label`` (top label, case-insensitive exact), ``q`` (part of the
    file name, case-insensitive), ``created_after`` (inclusive) and ``created_before`` (exclusive),
    both aware datetimes.
    """
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
    q = filters.get("q")
    if q:
        qs = qs.filter(original_filename__icontains=q)
    if filters.get("created_after"):
        qs = qs.filter(created_at__gte=filters["created_after"])
    if filters.get("created_before"):
        qs = qs.filter(created_at__lt=filters["created_before"])
    return qs


def classification_label_choices(*, user) -> list[str]:
    """The classes a history filter offers: the model bundle's classes in manifest order, then any
    other top label among the user's rows (from an older model version), sorted."""
    from worker.runtime.manifest import BundleError, read_manifest  # torch-free

    try:
        classes = [str(c) for c in read_manifest(settings.MODEL_BUNDLE).classes]
    except (BundleError, OSError):
        classes = []
    known = set(classes)
    used = Classification.objects.filter(owner=user).exclude(top_label="").values_list("top_label", flat=True)
    return classes + sorted(set(used.distinct()) - known)


def classification_get(*, user, id: uuid.UUID | str) -> Classification:
    """One of the user's own classifications. Any other id (someone else's, unknown, malformed)
    is NotFoundError (404), also for staff: the admin is where staff see everything."""
    try:
        # With its explanation (one query; the model-input PNG is loaded only where it is served).
        return (
            Classification.objects.select_related("explanation")
            .defer("explanation__model_input")
            .get(owner=user, id=id)
        )
    except (Classification.DoesNotExist, ValidationError, ValueError, TypeError) as exc:
        # ValidationError/ValueError: a malformed UUID; it names no row, so it is "not found" too.
        raise NotFoundError("No such classification.") from exc


def classification_status_counts(*, user, ids: Iterable[uuid.UUID | str]) -> Counter[str]:
    """How many of these (own) classifications are in each status now, e.g. {"done": 5, "failed": 1}."""
    rows = Classification.objects.filter(owner=user, id__in=list(ids)).values_list("status", flat=True)
    return Counter(rows)
