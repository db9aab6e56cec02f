"""Live pages: the camera page, and the event stream of job updates (result and history pages).

``GET /live/`` is the camera page (static/js/camera.js): frames go to ``POST /api/v1/frames/``
(`classifier.live_api`), which stores nothing.

``GET /classifications/events?id=<uuid>&id=...`` (session login) streams server-sent events for
the caller's own jobs among the ids (`classifier.waiter.job_event_stream`); static/js/live.js
reads it, and polls the API instead where EventSource is missing or keeps failing.
"""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from classifier.waiter import iterate_in_thread, job_event_stream

MAX_WATCHED_IDS = 100


def _ids(request: HttpRequest) -> list[str] | None:
    raw = request.GET.getlist("id")
    if not raw or len(raw) > MAX_WATCHED_IDS:
        return None
    try:
        return sorted({str(uuid.UUID(value)) for value in raw})
    except ValueError:
        return None


@login_required
@require_GET
async def job_events(request: HttpRequest):
    ids = _ids(request)
    if ids is None:
        return HttpResponseBadRequest(f"Give 1 to {MAX_WATCHED_IDS} job ids as ?id=<uuid>.", content_type="text/plain")
    user = await request.auser()
    stream = job_event_stream(request, user, ids)
    if not isinstance(request, ASGIRequest):  # WSGI: a thread per stream, but events still flow one by one
        stream = iterate_in_thread(stream)
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not buffer the stream
    return response


@login_required
@require_GET
def camera(request: HttpRequest) -> HttpResponse:
    return render(request, "classifier/live.html")
