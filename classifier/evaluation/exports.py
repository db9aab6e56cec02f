"""Streaming CSV exports of classifications: rows are written as the database cursor yields them
(``QuerySet.iterator``), so 10,000 or a million rows never sit in memory at once."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.db.models import JSONField, OuterRef, QuerySet, Subquery
from django.http import StreamingHttpResponse

from classifier.evaluation.models import Feedback
from classifier.models import Classification, Explanation

CHUNK_SIZE = 2000
HEADER = [
    "id",
    "original_filename",
    "status",
    "top_label",
    "top_probability",
    "predictions",
    "answer_set",
    "model_version",
    "queued_at",
    "started_at",
    "finished_at",
    "error",
    "feedback_correct",
    "feedback_label",
]
STAFF_HEADER = ["owner", *HEADER]
# The columns read from the table (the feedback comes from a subquery in the same SELECT).
EXPORT_FIELDS = (
    "id",
    "original_filename",
    "status",
    "top_label",
    "top_probability",
    "predictions",
    "model_version",
    "created_at",
    "started_at",
    "finished_at",
    "error",
)
# A spreadsheet runs a cell that starts with one of these as a formula; file names come from users.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """A file-like object whose write returns the line: csv.writer then yields strings."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def with_feedback(queryset: QuerySet[Classification]) -> QuerySet[Classification]:
    """Annotate each row with its owner's feedback (correct, label) and its answer set, in the same query."""
    mine = Feedback.objects.filter(classification=OuterRef("pk"), user=OuterRef("owner"))
    explanation = Explanation.objects.filter(classification=OuterRef("pk"))
    return queryset.annotate(
        feedback_correct=Subquery(mine.values("correct")[:1]),
        feedback_label=Subquery(mine.values("label")[:1]),
        answer_set=Subquery(explanation.values("prediction_set")[:1], output_field=JSONField()),
    )


def _row(c: Classification, staff: bool) -> list[Any]:
    predictions = ";".join(f"{p.get('label')}:{float(p.get('probability', 0)):.6f}" for p in c.predictions or [])
    correct = getattr(c, "feedback_correct", None)
    row = [
        str(c.id),
        c.original_filename,
        c.status,
        c.top_label,
        "" if c.top_probability is None else f"{c.top_probability:.6f}",
        predictions,
        ";".join(getattr(c, "answer_set", None) or []),  # the classes the model could not rule out
        c.model_version,
        c.created_at.isoformat(),
        c.started_at.isoformat() if c.started_at else "",
        c.finished_at.isoformat() if c.finished_at else "",
        c.error,
        "" if correct is None else ("true" if correct else "false"),
        getattr(c, "feedback_label", None) or "",
    ]
    if staff:
        row.insert(0, c.owner.get_username())
    return [_cell(v) for v in row]


def csv_lines(queryset: QuerySet[Classification], *, staff: bool = False) -> Iterator[str]:
    """The header, then one CSV line per row, read from the cursor in chunks."""
    writer = csv.writer(_Echo())
    yield writer.writerow(STAFF_HEADER if staff else HEADER)
    queryset = with_feedback(queryset).select_related(None)  # the list's explanation join is not exported
    if staff:
        queryset = queryset.select_related("owner")
    fields = ("owner", *EXPORT_FIELDS) if staff else EXPORT_FIELDS
    for c in queryset.only(*fields).iterator(chunk_size=CHUNK_SIZE):
        yield writer.writerow(_row(c, staff))


def csv_response(queryset: QuerySet[Classification], filename: str, *, staff: bool = False) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_lines(queryset, staff=staff), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
