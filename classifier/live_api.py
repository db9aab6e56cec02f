"""REST API for live frames: ``POST /api/v1/frames/`` classifies one image and stores nothing.

The DRF view authenticates, throttles (scope ``frame``) and reads the upload; `frame_view`, the
async wrapper the URL points at, then awaits the worker's pushed answer
(`classifier.frames.frame_classify`), holding no thread while it waits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from classifier import frames
from classifier.api import ERROR_RESPONSE, PredictionSerializer
from classifier.errors import ApplicationError
from classifier.explanations.api import PredictionSetSerializer


class FrameApi(APIView):
    """POST one camera frame (multipart field ``image``); get its top classes. Nothing is stored."""

    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "frame"

    class FrameInputSerializer(serializers.Serializer):
        image = serializers.FileField(allow_empty_file=True, use_url=False)

    class FrameOutputSerializer(serializers.Serializer):
        predictions = PredictionSerializer(many=True)
        prediction_set = PredictionSetSerializer(
            allow_null=True, help_text="the classes the model cannot rule out (null for a bundle without answer sets)"
        )
        model_version = serializers.CharField()

    @extend_schema(
        operation_id="frames_classify",
        request={"multipart/form-data": FrameInputSerializer},
        responses={
            200: FrameOutputSerializer,
            400: OpenApiResponse(ERROR_RESPONSE, description="Not an image we can read, empty or too large"),
            401: ERROR_RESPONSE,
            413: ERROR_RESPONSE,
            415: ERROR_RESPONSE,
            429: ERROR_RESPONSE,
            503: OpenApiResponse(ERROR_RESPONSE, description="No worker answered in time"),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.FrameInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["image"]
        limit = settings.FRAME_MAX_BYTES
        if upload.size is not None and upload.size > limit:
            raise ApplicationError(
                f"A frame may be at most {limit} bytes.", {"max_bytes": limit}, code="file_too_large"
            )
        data = upload.read(limit + 1)
        if not data:
            raise ApplicationError("The frame is empty.", code="empty_file")
        if len(data) > limit:
            raise ApplicationError(
                f"A frame may be at most {limit} bytes.", {"max_bytes": limit}, code="file_too_large"
            )
        response = Response({}, status=status.HTTP_200_OK)
        response.frame_bytes = data  # classified by frame_view, after this thread is released
        return response


def _error(response: Response, http_status: int, code: str, message: str) -> Response:
    response.status_code = http_status
    response.data = {"error": {"code": code, "message": message, "details": {}}}
    return response


def frame_view(view: Callable) -> Callable:
    async def wrapper(request, *args: Any, **kwargs: Any):
        response = await sync_to_async(view)(request, *args, **kwargs)
        data = getattr(response, "frame_bytes", None)
        if data is None:
            return response  # 400/401/413/415/429 from the view
        answer = await frames.frame_classify(data=data)
        if answer is None:
            return _error(response, 503, "unavailable", "No worker answered in time; please try again.")
        if "error" in answer:
            return _error(response, 400, "invalid_image", answer["error"])
        response.data = answer
        return response

    wrapper.__dict__.update(view.__dict__)  # cls/initkwargs for drf-spectacular, csrf_exempt as DRF's
    wrapper.__name__ = getattr(view, "__name__", "frame_view")
    return wrapper
