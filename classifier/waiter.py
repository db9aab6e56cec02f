"""Waiting for jobs without holding a thread: the API's ``wait`` and the pages' event streams.

Both subscribe to `classifier.push` first, then read the rows (the API's ``wait`` skips that
read when the push stream covers the time since its view read or wrote the job: `push.mark`),
then sleep on the subscription; a published update wakes them at once, and a slow re-check
(``API_WAIT_POLL_SECONDS``) covers a lost message. Everything here is ``async``: under ASGI (gunicorn with uvicorn workers) a
waiting client costs a coroutine, not a worker thread. The wrapped view and the database reads
run through `classifier.db_threads.call`: on threads that keep their connection under ASGI.

* `waiting_view` wraps a DRF view: the view runs as usual (auth, throttles, validation, create)
  and answers at once; if the caller asked to ``wait`` and the job is not finished, the wrapper
  awaits it and swaps the fresh row into the (not yet rendered) response.
* `job_event_stream` is the body of a ``text/event-stream`` response: one ``job`` event per
  change of each watched job (the API's JSON for it: its status, and the heatmaps that follow a
  finished job's answer), ``: keepalive`` comments, and ``end`` when every watched job has
  settled (finished, no heatmaps pending; or after ``LIVE_STREAM_SECONDS``: EventSource
  reconnects then).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.conf import settings
from rest_framework.utils.encoders import JSONEncoder

from classifier import db_threads, push
from classifier.models import Classification

FINISHED = {Classification.Status.DONE.value, Classification.Status.FAILED.value}


def _status(job_id: str) -> str | None:
    return Classification.objects.filter(id=job_id).values_list("status", flat=True).first()


async def wait_until_finished(
    job_id: str, timeout: float, request=None, *, seen: tuple[str, push.Mark] | None = None
) -> str | None:
    """Return the job's status once it is finished (or deleted: None), or when ``timeout`` passes.

    ``seen``: the status the caller read (or wrote) after taking the `push.mark`; when the
    subscription covers the time since the mark, it stands for the first read of the row.
    A pushed status that is not final (``running``) says the job is alive: the wait goes on
    without reading the row; only a quiet ``API_WAIT_POLL_SECONDS`` re-reads it (a lost message)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with await push.subscribe([job_id], since=seen[1] if seen else None) as sub:
        if seen is not None and sub.covered:
            status = seen[0]
        else:
            status = await db_threads.call(request, _status, job_id)
        while status is not None and status not in FINISHED:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            message = await sub.next(min(remaining, settings.API_WAIT_POLL_SECONDS))
            if message is not None:
                if message[1] in FINISHED:
                    return message[1]
                continue
            status = await db_threads.call(request, _status, job_id)
        return status


def wait_seconds(request) -> float:
    """The request's ``?wait=`` in seconds, capped by API_MAX_WAIT_SECONDS; 0 when absent or not a number."""
    try:
        wait = float(request.GET.get("wait") or 0)
    except ValueError:
        return 0.0
    return min(wait, settings.API_MAX_WAIT_SECONDS) if wait > 0 else 0.0


def _fresh(request, job_id: str) -> dict | None:
    from classifier import selectors
    from classifier.api import ClassificationOutputSerializer
    from classifier.errors import ApplicationError

    try:
        classification = selectors.classification_get(user=request.user, id=job_id)
    except ApplicationError:
        return None  # deleted meanwhile: answer with what the view saw
    return ClassificationOutputSerializer(classification, context={"request": request}).data


def waiting_view(view: Callable) -> Callable:
    """An async view around a DRF view that implements ``?wait=<seconds>`` by push."""

    async def wrapper(request, *args: Any, **kwargs: Any):
        mark = push.mark()  # before the view reads or writes the job: see classifier.push
        response = await db_threads.call(request, view, request, *args, **kwargs)
        wait = wait_seconds(request)
        data = getattr(response, "data", None)
        if (
            not wait
            or response.status_code not in (200, 202)
            or not isinstance(data, dict)
            or "id" not in data
            or data.get("status") in FINISHED
        ):
            return response
        # The DRF view authenticated the request: request.user is the caller now.
        seen = (data["status"], mark) if data.get("status") else None  # no status in the body: read the row
        await wait_until_finished(str(data["id"]), wait, request, seen=seen)
        fresh = await db_threads.call(request, _fresh, request, str(data["id"]))
        if fresh is not None:
            response.data = fresh  # rendered later by the handler, so the body follows
        elif getattr(response, "waiter_fills_body", False):  # the view left the body to us; the job is gone
            from classifier.errors import error_body

            response.status_code = 404
            response.data = error_body("not_found", "This classification was deleted while the request waited for it.")
        return response

    # cls/initkwargs (read by drf-spectacular), csrf_exempt (DRF checks CSRF for sessions itself).
    wrapper.__dict__.update(view.__dict__)
    wrapper.__name__ = getattr(view, "__name__", "waiting_view")
    wrapper.__doc__ = view.__doc__
    return wrapper


# ----------------------------------------------------------------------------- server-sent events
def settled(data: dict) -> bool:
    """The job is finished and nothing more is on its way (no heatmaps pending after the answer)."""
    explanation = data.get("explanation") or {}
    return data.get("status") in FINISHED and explanation.get("heatmaps_status") != "pending"


def _state(data: dict) -> tuple[str, str | None]:
    return data.get("status"), (data.get("explanation") or {}).get("heatmaps_status")


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, cls=JSONEncoder, separators=(',', ':'))}\n\n"


def _rows(request, user, ids: list[str]) -> dict[str, dict]:
    from classifier import selectors
    from classifier.api import ClassificationOutputSerializer

    rows = selectors.classification_list(user=user).filter(id__in=ids)
    return {str(c.id): ClassificationOutputSerializer(c, context={"request": request}).data for c in rows}


async def job_event_stream(request, user, ids: list[str], *, duration: float | None = None) -> AsyncIterator[str]:
    """Events for the user's own jobs among ``ids`` (others' ids are ignored, like unknown ones)."""
    duration = settings.LIVE_STREAM_SECONDS if duration is None else duration
    keepalive = settings.API_WAIT_POLL_SECONDS
    deadline = time.monotonic() + duration
    async with await push.subscribe(ids) as sub:
        yield f"retry: {settings.LIVE_RETRY_MS}\n\n"
        rows = await db_threads.call(request, _rows, request, user, ids)
        seen: dict[str, tuple] = {}
        pending: set[str] = set()
        for job_id, data in rows.items():
            seen[job_id] = _state(data)
            yield sse("job", data)
            if not settled(data):
                pending.add(job_id)
        while pending and time.monotonic() < deadline:
            message = await sub.next(min(keepalive, deadline - time.monotonic()))
            check = [message[0]] if message is not None and message[0] in pending else sorted(pending)
            if message is None:
                yield ": keepalive\n\n"
            fresh = await db_threads.call(request, _rows, request, user, check)
            for job_id, data in fresh.items():
                if _state(data) != seen.get(job_id) or message is not None:
                    seen[job_id] = _state(data)
                    yield sse("job", data)
                if settled(data):
                    pending.discard(job_id)
            for job_id in set(check) - set(fresh):  # deleted meanwhile
                pending.discard(job_id)
        if not pending:
            yield sse("end", {"finished": sorted(seen)})


def iterate_in_thread(stream: AsyncIterator[str]) -> Iterator[str]:
    """The async stream as a plain iterator, for WSGI servers (Django's runserver, the test live
    server): each event is sent as it comes, on a private event loop in the request's thread.
    (Django itself would collect the whole async stream first, so nothing would arrive until the end.)"""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(stream.aclose())
        loop.close()
