"""REST API (DRF) under /api/v1/. Each method has its own small input and output serializers;
views call services and selectors and hold no business logic.

The collection URL carries two operations (GET list, POST create) and the item URL two (GET,
DELETE), as REST clients expect; each operation is one method with its own serializers.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from classifier import selectors, services
from classifier.errors import ONE_IMAGE_PER_REQUEST, ApplicationError
from classifier.explanations import ExplanationFieldsSerializer
from classifier.models import Classification
from classifier.throttling import UploadIPThrottle

ERROR_RESPONSE = inline_serializer(
    "Error",
    fields={
        "error": inline_serializer(
            "ErrorBody",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.JSONField(),
            },
        )
    },
)

# The other errors of an upload (one image or several): documented once for both endpoints.
UPLOAD_ERRORS = {
    401: ERROR_RESPONSE,
    413: ERROR_RESPONSE,
    415: OpenApiResponse(ERROR_RESPONSE, description="The body is not multipart/form-data"),
    429: ERROR_RESPONSE,
}


class WaitInputSerializer(serializers.Serializer):
    """Query parameters that, when present, need a value: ``?wait=`` is an error, not "no wait"."""

    def to_internal_value(self, data):
        blank = [name for name in self.fields if name in data and data.get(name) == ""]
        if blank:
            raise serializers.ValidationError({name: ["This parameter needs a value."] for name in blank})
        return super().to_internal_value(data)

    wait = serializers.FloatField(
        required=False,
        min_value=0,
        help_text="Seconds to wait for the job to finish before answering (capped by API_MAX_WAIT_SECONDS).",
    )


class CreateQuerySerializer(WaitInputSerializer):
    explain = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also compute the Grad-CAM heatmaps (after the answer, which they never delay; "
        "or later: POST explanation.request_url). The members, agreement, uncertain and ood come either way.",
    )


class PredictionSerializer(serializers.Serializer):
    label = serializers.CharField()
    probability = serializers.FloatField()


class ClassificationOutputSerializer(
    ExplanationFieldsSerializer
):  # + explanation, members, agreement, uncertain, ood_score, ood, prediction_set, superclass
    id = serializers.UUIDField()
    url = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=Classification.Status.choices)
    original_filename = serializers.CharField()
    image_format = serializers.CharField()
    image_width = serializers.IntegerField(allow_null=True)
    image_height = serializers.IntegerField(allow_null=True)
    predictions = PredictionSerializer(many=True)
    top_label = serializers.CharField()
    top_probability = serializers.FloatField(allow_null=True)
    model_version = serializers.CharField()
    error = serializers.CharField()
    attempts = serializers.IntegerField()
    queued_at = serializers.DateTimeField(source="created_at")
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, obj: Classification) -> str:
        path = reverse("api:classification-detail", kwargs={"classification_id": obj.id})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


def _refuse_more_than_one_file(request: Request) -> None:
    """One image per request: a second file would otherwise be dropped without a word (the
    serializer keeps one value of ``image`` and ignores other fields)."""
    count = sum(len(request.FILES.getlist(name)) for name in request.FILES)
    if count > 1:
        raise ApplicationError(
            f"Send one image per request; this request carries {count} files. Upload each image in its own "
            "request, or several at once to /api/v1/classifications/batch/ (field 'images').",
            {"files": count, "fields": sorted(request.FILES)},
            code=ONE_IMAGE_PER_REQUEST,
        )


class ClassificationCollectionApi(APIView):
    """GET: the caller's classifications (paginated, newest first). POST: upload an image."""

    parser_classes = [MultiPartParser, FormParser]

    class FilterSerializer(serializers.Serializer):
        # An empty value (?status=&label=, as an HTML form sends) means "no filter"; allow_blank
        # says so in the schema too.
        status = serializers.ChoiceField(choices=Classification.Status.choices, required=False, allow_blank=True)
        label = serializers.CharField(required=False, allow_blank=True, max_length=64)

    class CreateInputSerializer(serializers.Serializer):
        image = serializers.FileField(allow_empty_file=True, use_url=False)

    class Pagination(PageNumberPagination):
        page_size_query_param = "page_size"
        max_page_size = 100

    # Read by drf-spectacular: it documents the page/page_size parameters and the paginated body.
    pagination_class = Pagination

    def get_throttles(self):
        if self.request.method == "POST":
            self.throttle_scope = "classification_create"
            # Per user (scoped) and per client IP; the HTML upload form shares both budgets.
            return [ScopedRateThrottle(), UploadIPThrottle()]
        return super().get_throttles()

    @extend_schema(
        operation_id="classifications_list",
        parameters=[FilterSerializer],
        responses={
            200: ClassificationOutputSerializer(many=True),
            400: ERROR_RESPONSE,
            401: ERROR_RESPONSE,
            404: OpenApiResponse(ERROR_RESPONSE, description="No such page"),
        },
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = selectors.classification_list(user=request.user, filters=filters.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self)
        data = ClassificationOutputSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        operation_id="classifications_create",
        description=(
            "Upload one image (multipart field `image`) and queue its classification. One image per "
            "request: a request carrying more than one file (a second `image`, or a file under any other "
            "field) is refused with 400 and the code `one_image_per_request`, and nothing is stored or queued."
        ),
        request={"multipart/form-data": CreateInputSerializer},
        parameters=[CreateQuerySerializer],
        responses={
            202: ClassificationOutputSerializer,
            400: OpenApiResponse(
                ERROR_RESPONSE,
                description="Not an image we accept, or more than one file in the request "
                "(code `one_image_per_request`); the message says why",
            ),
            **UPLOAD_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        query = CreateQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        _refuse_more_than_one_file(request)
        serializer = self.CreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        classification = services.classification_create(
            owner=request.user, upload=serializer.validated_data["image"], heatmaps=query.validated_data["explain"]
        )
        if query.validated_data.get("wait") and not settings.CELERY_TASK_ALWAYS_EAGER:
            # classifier.waiter answers ?wait= with the row as it is after the wait: serialising
            # the queued row now would be thrown away (a few ms of CPU per upload under load).
            url = request.build_absolute_uri(
                reverse("api:classification-detail", kwargs={"classification_id": classification.id})
            )
            response = Response(
                {"id": str(classification.id), "status": classification.status, "url": url},
                status=status.HTTP_202_ACCEPTED,
                headers={"Location": url},
            )
            response.waiter_fills_body = True
            return response
        if settings.CELERY_TASK_ALWAYS_EAGER:
            # In-process mode ran the task on commit, inside classification_create: answer that row.
            # (With a worker the job is queued; answering "queued" then does not race the worker.)
            classification.refresh_from_db()
        # ?wait= is served by classifier.waiter.waiting_view around this view (async, by push).
        data = ClassificationOutputSerializer(classification, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})


class ClassificationItemApi(APIView):
    """GET: one of the caller's classifications (optionally waiting for it). DELETE: remove it."""

    @extend_schema(
        operation_id="classifications_retrieve",
        parameters=[WaitInputSerializer],
        responses={
            200: ClassificationOutputSerializer,
            400: OpenApiResponse(ERROR_RESPONSE, description="Bad wait parameter"),
            401: ERROR_RESPONSE,
            404: ERROR_RESPONSE,
        },
    )
    def get(self, request: Request, classification_id: str) -> Response:
        wait = WaitInputSerializer(data=request.query_params)
        wait.is_valid(raise_exception=True)
        classification = selectors.classification_get(user=request.user, id=classification_id)
        # ?wait= is served by classifier.waiter.waiting_view around this view (async, by push).
        return Response(ClassificationOutputSerializer(classification, context={"request": request}).data)

    @extend_schema(
        operation_id="classifications_destroy",
        responses={204: None, 401: ERROR_RESPONSE, 404: ERROR_RESPONSE},
    )
    def delete(self, request: Request, classification_id: str) -> Response:
        classification = selectors.classification_get(user=request.user, id=classification_id)
        services.classification_delete(classification=classification)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenObtainApi(APIView):
    """POST username and password, get the API token (created on first use)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token_obtain"

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()

    @extend_schema(
        operation_id="auth_token_create",
        request=InputSerializer,
        responses={200: OutputSerializer, 400: ERROR_RESPONSE, 415: ERROR_RESPONSE, 429: ERROR_RESPONSE},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request=request._request, **serializer.validated_data)
        if user is None or not user.is_active:
            raise ApplicationError("Unable to log in with these credentials.", code="invalid_credentials")
        token, _ = Token.objects.get_or_create(user=user)
        return Response(self.OutputSerializer({"token": token.key}).data)
