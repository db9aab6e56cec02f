"""``POST /api/v1/classifications/batch/``: several images in one request (repeated multipart field
``images``, at most ``DATA_UPLOAD_MAX_NUMBER_FILES``), one job each.

For a client with many images this saves a request, an authentication and a commit per image
(`classifier.uploads.classifications_create_many`), and the worker takes the jobs together in its
micro-batches. Each file is judged on its own: the answer lists one result per file, in the
order sent, with the job or the reason the file was refused, so one bad file loses nothing else.
202 when at least one image was accepted; 400 ``no_image_accepted`` (the same per-file results in
``details``) when none was. Each image spends one unit of the caller's upload budgets, per user
and per client IP, as a single upload does (`classifier.throttling`).

``?wait=<s>`` answers once every accepted job has finished, or when the time is up, with the rows
as they are then; like the single upload's, the wait is served by push without holding a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import TooManyFilesSent
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier import db_threads, push, selectors, waiter
from classifier.api import ERROR_RESPONSE, UPLOAD_ERRORS, ClassificationOutputSerializer, CreateQuerySerializer
from classifier.errors import ApplicationError, error_body
from classifier.forms import max_files_per_upload
from classifier.models import Classification
from classifier.throttling import UploadIPThrottle, UploadUserThrottle
from classifier.uploads import classifications_create_many

FIELD = "images"


def too_many_files() -> ApplicationError:
    limit = max_files_per_upload()
    return ApplicationError(
        f"Too many files: send at most {limit} images per request, in the field '{FIELD}'.",
        {"max_files": limit},
        code="too_many_files",
    )


def _files(request: Request) -> list:
    """The request's image files; refuses files under any other field (they would be dropped
    without a word) and more files than the server reads."""
    try:
        files = request.FILES
    except TooManyFilesSent as exc:
        raise too_many_files() from exc
    others = sorted(name for name in files if name != FIELD)
    if others:
        raise ApplicationError(
            f"Send the images in the field '{FIELD}' (repeat it for each image); this request has files "
            f"under {', '.join(repr(n) for n in others)}. Nothing was stored.",
            {"fields": others},
            code="unexpected_file_field",
        )
    return files.getlist(FIELD)


class ItemErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField()


class BatchItemSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="position of the file in the request, from 0")
    filename = serializers.CharField()
    classification = ClassificationOutputSerializer(allow_null=True, help_text="the job, when the file was accepted")
    error = ItemErrorSerializer(allow_null=True, help_text="why the file was refused")


class BatchOutputSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    refused = serializers.IntegerField()
    results = BatchItemSerializer(many=True)


def _items(outcomes: list[Classification | ApplicationError], names: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "filename": name,
            "classification": outcome if isinstance(outcome, Classification) else None,
            "error": None
            if isinstance(outcome, Classification)
            else {"code": outcome.code, "message": outcome.message, "details": outcome.extra},
        }
        for i, (outcome, name) in enumerate(zip(outcomes, names, strict=True))
    ]


def batch_body(items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    accepted = sum(item["classification"] is not None for item in items)
    body = {"accepted": accepted, "refused": len(items) - accepted, "results": items}
    return BatchOutputSerializer(body, context={"request": request}).data


class ClassificationBatchApi(APIView):
    """POST several images (repeated multipart field ``images``); one job each."""

    parser_classes = [MultiPartParser, FormParser]
    # When the body is read before the view runs (a session's CSRF check), classifier.errors asks this.
    too_many_files = staticmethod(too_many_files)

    class BatchInputSerializer(serializers.Serializer):
        images = serializers.ListField(
            child=serializers.FileField(allow_empty_file=True, use_url=False),
            allow_empty=False,
            error_messages={"empty": "Send at least one image in the field 'images'."},
        )

    def get_throttles(self):
        # One unit of each upload budget per image (at least one, so an empty request counts too).
        cost = len(_files(self.request))
        return [UploadUserThrottle(cost), UploadIPThrottle(cost)]

    @extend_schema(
        operation_id="classifications_create_batch",
        description=(
            f"Upload several images (repeat the multipart field `{FIELD}`, at most "
            "DATA_UPLOAD_MAX_NUMBER_FILES, 20 by default) and queue one classification each. Each file "
            "is judged on its own: `results` holds one entry per file, in the order sent, with the job "
            "(`classification`) or why it was refused (`error`). 202 when at least one image was "
            "accepted; 400 `no_image_accepted` (the per-file results in `details.results`) when none "
            "was. Each image spends one unit of the upload budgets, as a single upload does."
        ),
        request={"multipart/form-data": BatchInputSerializer},
        parameters=[CreateQuerySerializer],
        responses={
            202: BatchOutputSerializer,
            400: OpenApiResponse(
                ERROR_RESPONSE,
                description="No image accepted, no image sent, too many files, or files under another field",
            ),
            **UPLOAD_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        query = CreateQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        files = _files(request)
        serializer = self.BatchInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcomes = classifications_create_many(
            owner=request.user, uploads=files, heatmaps=query.validated_data["explain"]
        )
        accepted = [o for o in outcomes if isinstance(o, Classification)]
        if settings.CELERY_TASK_ALWAYS_EAGER:  # in-process mode ran the jobs on commit: answer those rows
            for classification in accepted:
                classification.refresh_from_db()
        items = _items(outcomes, [f.name or "" for f in files])
        if not accepted:
            first = next(item["error"]["message"] for item in items)
            message = f"None of the {len(items)} images was accepted. The first refused: {first}"
            return Response(
                error_body("no_image_accepted", message, {"results": batch_body(items, request)["results"]}),
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(batch_body(items, request), status=status.HTTP_202_ACCEPTED)


def _fresh(request, body: dict[str, Any]) -> dict[str, Any]:
    """The answer again, with each accepted job as it is now (a job deleted meanwhile keeps what
    the view saw)."""
    ids = [item["classification"]["id"] for item in body["results"] if item["classification"]]
    rows = selectors.classification_list(user=request.user).filter(id__in=ids)
    now = {str(c.id): ClassificationOutputSerializer(c, context={"request": request}).data for c in rows}
    results = []
    for item in body["results"]:
        job = item["classification"]
        results.append({**item, "classification": now.get(str(job["id"]), job)} if job else dict(item))
    return {**body, "results": results}


def batch_waiting_view(view: Callable) -> Callable:
    """An async view around the batch view that implements ``?wait=<seconds>`` by push: it awaits
    every accepted job that is not finished yet, within one deadline."""

    async def wrapper(request, *args: Any, **kwargs: Any):
        mark = push.mark()  # before the view writes the jobs: see classifier.push
        response = await db_threads.call(request, view, request, *args, **kwargs)
        wait = waiter.wait_seconds(request)
        if not wait or response.status_code != status.HTTP_202_ACCEPTED:
            return response
        pending = [
            (str(job["id"]), job["status"])
            for item in response.data["results"]
            if (job := item["classification"]) and job["status"] not in waiter.FINISHED
        ]
        if not pending:
            return response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        for job_id, seen in pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await waiter.wait_until_finished(job_id, remaining, request, seen=(seen, mark))
        response.data = await db_threads.call(request, _fresh, request, response.data)
        return response

    wrapper.__dict__.update(view.__dict__)
    wrapper.__name__ = getattr(view, "__name__", "batch_waiting_view")
    wrapper.__doc__ = view.__doc__
    return wrapper
