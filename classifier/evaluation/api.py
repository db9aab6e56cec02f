"""REST API of the evaluation package (mounted by classifier/api_urls.py):

* ``GET/POST/DELETE /api/v1/classifications/<id>/feedback/``: the caller's feedback on one of
  their classifications (``{"correct": true}`` or ``{"label": "dog"}``).
* ``GET /api/v1/classifications/export.csv``: the caller's classifications as CSV, streamed, with
  the list's filters (``?status=``, ``?label=``).
"""

from __future__ import annotations

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier import selectors
from classifier.api import ERROR_RESPONSE, ClassificationCollectionApi
from classifier.evaluation import exports
from classifier.evaluation import feedback as feedback_services
from classifier.evaluation import selectors as evaluation_selectors


class StrictBooleanField(serializers.BooleanField):
    """JSON true/false only: 1, "yes" or "true" are refused (the schema says boolean)."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictCharField(serializers.CharField):
    """A JSON string only: numbers are not turned into labels."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class FeedbackOutputSerializer(serializers.Serializer):
    classification = serializers.UUIDField(source="classification_id")
    correct = serializers.BooleanField()
    label = serializers.CharField(help_text='The true class; "" when the user only said the answer was wrong.')
    predicted_label = serializers.CharField(source="classification.top_label")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class FeedbackApi(APIView):
    """GET: the caller's feedback on their classification. POST: give or change it. DELETE: withdraw it."""

    parser_classes = [JSONParser]

    class FeedbackInputSerializer(serializers.Serializer):
        correct = StrictBooleanField(required=False, help_text="true: the top class is right.")
        label = StrictCharField(
            required=False, max_length=64, help_text="The true class: one of the model version's classes."
        )

    def _classification(self, request: Request, classification_id: str):
        return selectors.classification_get(user=request.user, id=classification_id)

    @extend_schema(
        operation_id="classifications_feedback_retrieve",
        responses={
            200: FeedbackOutputSerializer,
            401: ERROR_RESPONSE,
            404: OpenApiResponse(ERROR_RESPONSE, description="No such classification, or no feedback on it"),
        },
    )
    def get(self, request: Request, classification_id: str) -> Response:
        classification = self._classification(request, classification_id)
        feedback = evaluation_selectors.feedback_get(user=request.user, classification=classification)
        return Response(FeedbackOutputSerializer(feedback).data)

    @extend_schema(
        operation_id="classifications_feedback_create",
        request=FeedbackInputSerializer,
        responses={
            200: OpenApiResponse(FeedbackOutputSerializer, description="Feedback changed"),
            201: OpenApiResponse(FeedbackOutputSerializer, description="Feedback recorded"),
            400: OpenApiResponse(
                ERROR_RESPONSE,
                description="Not a class of the model version, a failed or unfinished job, or nothing to record",
            ),
            401: ERROR_RESPONSE,
            404: ERROR_RESPONSE,
            415: ERROR_RESPONSE,
        },
    )
    def post(self, request: Request, classification_id: str) -> Response:
        classification = self._classification(request, classification_id)
        serializer = self.FeedbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        feedback, created = feedback_services.feedback_set(
            user=request.user, classification=classification, **serializer.validated_data
        )
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(FeedbackOutputSerializer(feedback).data, status=code)

    @extend_schema(
        operation_id="classifications_feedback_destroy",
        responses={204: None, 401: ERROR_RESPONSE, 404: ERROR_RESPONSE},
    )
    def delete(self, request: Request, classification_id: str) -> Response:
        classification = self._classification(request, classification_id)
        feedback_services.feedback_delete(user=request.user, classification=classification)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AnyAcceptNegotiation(BaseContentNegotiation):
    """The export answers CSV whatever the Accept header says (errors in the API's JSON shape):
    no 406 for ``Accept: text/csv``, and no ``?format=`` parameter that could 404."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ClassificationExportApi(APIView):
    """GET: the caller's classifications as CSV (newest first), with the same filters as the list."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        operation_id="classifications_export",
        parameters=[ClassificationCollectionApi.FilterSerializer],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="CSV with a header row; one row per classification"
            ),
            400: ERROR_RESPONSE,
            401: ERROR_RESPONSE,
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        filters = ClassificationCollectionApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = selectors.classification_list(user=request.user, filters=filters.validated_data)
        filename = f"classifications-{timezone.localdate():%Y%m%d}.csv"
        return exports.csv_response(qs, filename)
