"""The API side of explanations: the serializer fields of a classification's ``explanation`` and
the owner-only PNGs (``HeatmapApi``, ``ModelInputApi``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier import selectors
from classifier.errors import NotFoundError
from classifier.explanations.selectors import explanation_of, explanation_summary, heatmap_labels
from classifier.models import Classification, Explanation
from classifier.responses import png_response
from worker.runtime.pictures import heatmap_png

ERROR_RESPONSE = inline_serializer(
    "ExplanationError",
    fields={
        "error": inline_serializer(
            "ExplanationErrorBody",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.JSONField(),
            },
        )
    },
)


class HeatmapSerializer(serializers.Serializer):
    label = serializers.CharField()
    url = serializers.URLField()


class MemberSerializer(serializers.Serializer):
    arch = serializers.CharField(help_text="The member's architecture")
    label = serializers.CharField(help_text="The member's own top class")
    probability = serializers.FloatField(help_text="The member's (calibrated) probability of that class")


class AgreementSerializer(serializers.Serializer):
    agree = serializers.IntegerField(help_text="Members whose top class is the ensemble's")
    members = serializers.IntegerField()
    text = serializers.CharField(help_text='e.g. "All 3 members agree."')


class PredictionSetSerializer(serializers.Serializer):
    labels = serializers.ListField(
        child=serializers.CharField(), help_text="The classes the model cannot rule out, most probable first"
    )
    size = serializers.IntegerField(help_text="1: the model is sure at this coverage")
    coverage = serializers.FloatField(
        allow_null=True,
        help_text="e.g. 0.95: on held-out images the true class was in such a set at least this often",
    )
    text = serializers.CharField(help_text='e.g. "At 95% coverage it could be “cat” or “dog”."')


class ExplanationSerializer(serializers.Serializer):
    available = serializers.BooleanField(help_text="True once the heatmaps are stored (heatmaps_status ready)")
    heatmaps_status = serializers.ChoiceField(
        choices=Explanation.HeatmapsStatus.choices,
        help_text="pending: the answer is out, the Grad-CAM maps follow (watch the job or wait on it again); "
        "not_requested: upload with ?explain=true, or POST request_url; unavailable: the bundle cannot "
        "draw them (no explain method, or it failed)",
    )
    request_url = serializers.URLField(help_text="POST here to have the heatmaps computed (owner only)")
    method = serializers.CharField(allow_null=True, help_text='"grad-cam"')
    layer = serializers.CharField(allow_null=True, help_text="The layer(s) the heatmaps explain")
    class_ = serializers.CharField(allow_null=True, help_text="The class of heatmap_url (the top class)")
    heatmap_url = serializers.URLField(allow_null=True, help_text="PNG heatmap of the top class (owner only)")
    heatmaps = HeatmapSerializer(many=True, help_text="One heatmap per top-5 class, best first")
    map_size = serializers.ListField(child=serializers.IntegerField(), allow_null=True, help_text="[h, w] of the map")
    model_input_url = serializers.URLField(allow_null=True, help_text="PNG of the H x W image the model saw")

    def get_fields(self):
        fields = super().get_fields()
        fields["class"] = fields.pop("class_")
        return fields


class ExplanationFieldsSerializer(serializers.Serializer):
    """The explanation fields of the classification resource (null until the job is done, and for
    jobs from before explanations)."""

    explanation = serializers.SerializerMethodField()
    members = serializers.SerializerMethodField()
    agreement = serializers.SerializerMethodField()
    uncertain = serializers.SerializerMethodField()
    ood_score = serializers.SerializerMethodField()
    ood = serializers.SerializerMethodField()
    prediction_set = serializers.SerializerMethodField()
    superclass = serializers.SerializerMethodField()

    def _summary(self, obj: Classification) -> dict[str, Any] | None:
        cache = self.context.setdefault("_explanations", {})
        if obj.pk not in cache:
            cache[obj.pk] = explanation_summary(obj, explanation_of(obj), self.context.get("request"))
        return cache[obj.pk]

    @extend_schema_field(ExplanationSerializer(allow_null=True))
    def get_explanation(self, obj: Classification) -> dict[str, Any] | None:
        s = self._summary(obj)
        if s is None:
            return None
        keys = (
            "available",
            "heatmaps_status",
            "request_url",
            "method",
            "layer",
            "class",
            "heatmap_url",
            "heatmaps",
            "map_size",
            "model_input_url",
        )
        return {k: s[k] for k in keys}

    @extend_schema_field(MemberSerializer(many=True))
    def get_members(self, obj: Classification) -> list[dict[str, Any]]:
        s = self._summary(obj)
        return s["members"] if s else []

    @extend_schema_field(AgreementSerializer(allow_null=True))
    def get_agreement(self, obj: Classification) -> dict[str, Any] | None:
        s = self._summary(obj)
        return s["agreement"] if s else None

    @extend_schema_field(
        serializers.BooleanField(
            allow_null=True, help_text="The calibrated top probability is under the bundle's threshold"
        )
    )
    def get_uncertain(self, obj: Classification) -> bool | None:
        s = self._summary(obj)
        return s["uncertain"] if s else None

    @extend_schema_field(
        serializers.FloatField(allow_null=True, help_text="Out-of-distribution score (energy); higher = stranger")
    )
    def get_ood_score(self, obj: Classification) -> float | None:
        s = self._summary(obj)
        return s["ood_score"] if s else None

    @extend_schema_field(
        serializers.BooleanField(
            allow_null=True, help_text="ood_score is above the bundle's threshold: not like any class it knows"
        )
    )
    def get_ood(self, obj: Classification) -> bool | None:
        s = self._summary(obj)
        return s["ood"] if s else None

    @extend_schema_field(PredictionSetSerializer(allow_null=True))
    def get_prediction_set(self, obj: Classification) -> dict[str, Any] | None:
        """Null for a bundle without prediction sets (and until the job is done)."""
        s = self._summary(obj)
        return s["prediction_set"] if s else None

    @extend_schema_field(serializers.CharField(allow_null=True, help_text="Superclass of the top class, if any"))
    def get_superclass(self, obj: Classification) -> str | None:
        s = self._summary(obj)
        return s["superclass"] if s else None


# ----------------------------------------------------------------------------- owner-only pictures
class _PngApi(APIView):
    """A PNG of one of the caller's own classifications (token or session auth, like the rest of
    the API). Another user's id, an unknown one, or a job without an explanation: the API's JSON 404."""

    def perform_content_negotiation(self, request, force=False):
        # Success is a PNG (an HttpResponse, no renderer); errors are always the API's JSON shape,
        # whatever an <img> tag's Accept header says.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    def explanation(self, request: Request, classification_id: str) -> Explanation:
        classification = selectors.classification_get(user=request.user, id=classification_id)
        explanation = explanation_of(classification)
        if explanation is None:
            raise NotFoundError("This classification has no explanation.")
        return explanation


PNG_RESPONSE = OpenApiResponse(OpenApiTypes.BINARY, description="A PNG image")


class HeatmapApi(_PngApi):
    class InputSerializer(serializers.Serializer):
        # "class" is a Python keyword: the field is declared under another name and renamed
        class_ = serializers.CharField(
            required=False, help_text="One of the job's top-5 labels (default: the top class)"
        )

        def get_fields(self):
            fields = super().get_fields()
            fields["class"] = fields.pop("class_")
            return fields

    @extend_schema(
        operation_id="classifications_heatmap",
        parameters=[InputSerializer],
        responses={(200, "image/png"): PNG_RESPONSE, 401: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="The Grad-CAM heatmap of one of the top-5 classes, 256x256, coloured (viridis); "
        "drawn over the centre square of the upload it shows where the evidence for the class lies.",
    )
    def get(self, request: Request, classification_id: str) -> HttpResponse:
        explanation = self.explanation(request, classification_id)
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        maps = (explanation.heatmaps or {}).get("maps") or {}
        label = params.validated_data.get("class") or next(iter(heatmap_labels(explanation.heatmaps)), None)
        if label not in maps:
            raise NotFoundError("No heatmap for this class.", {"classes": list(maps)})
        h, w = explanation.heatmaps["size"]
        return png_response(heatmap_png(np.asarray(maps[label], dtype=np.float64).reshape(h, w) / 255.0))


class ModelInputApi(_PngApi):
    @extend_schema(
        operation_id="classifications_model_input",
        responses={(200, "image/png"): PNG_RESPONSE, 401: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="The image the model saw (the centre crop, resized to its input size, e.g. 32x32).",
    )
    def get(self, request: Request, classification_id: str) -> HttpResponse:
        return png_response(bytes(self.explanation(request, classification_id).model_input))


class ExplanationRequestApi(APIView):
    """Ask for the Grad-CAM heatmaps of one of the caller's classifications (computed by a worker
    after the answer; the job's ``explanation.heatmaps_status`` says when they are there)."""

    @extend_schema(
        operation_id="classifications_explanation_request",
        request=None,
        responses={
            202: inline_serializer(
                "ExplanationRequested",
                fields={
                    "heatmaps_status": serializers.ChoiceField(choices=Explanation.HeatmapsStatus.choices),
                    "classification": serializers.URLField(),
                },
            ),
            401: ERROR_RESPONSE,
            404: ERROR_RESPONSE,
            409: OpenApiResponse(
                ERROR_RESPONSE,
                description="Nothing to explain: the classification failed (code classification_failed), or was "
                "done before explanations were stored (code no_explanation)",
            ),
        },
        description="Idempotent: heatmaps that are ready or being computed are left alone. For a job "
        "still queued or running they are computed right after its answer. Watch the job (GET it with "
        "?wait=, or the page's event stream) until explanation.heatmaps_status is ready or unavailable.",
    )
    def post(self, request: Request, classification_id: str) -> Response:
        from classifier.errors import ApplicationError
        from classifier.explanations.heatmaps import heatmaps_request

        classification = selectors.classification_get(user=request.user, id=classification_id)
        if classification.status == Classification.Status.FAILED:
            raise ApplicationError(
                "This classification failed, so there is nothing to explain. Upload the image again.",
                code="classification_failed",
                status_code=409,
            )
        status = heatmaps_request(classification=classification)
        if status is None:  # done before explanations existed: nothing to draw them from
            raise ApplicationError(
                "This classification has no stored explanation to draw heatmaps for. Upload the image again.",
                code="no_explanation",
                status_code=409,
            )
        url = reverse("api:classification-detail", kwargs={"classification_id": classification.id})
        return Response({"heatmaps_status": status, "classification": request.build_absolute_uri(url)}, status=202)
