"""Explanations of predictions: storing what the worker computed, and serving it to the owner.

The worker (``classifier.batches.classification_process_batch``) calls ``predict`` for a batch
(worker/runtime/explain.py runs the bundle's ``explain`` method) and ``explanation_create`` in
the transaction that completes the jobs. Pages and the API only read the stored row:

- ``explanation_of(classification)``: the row or None (a job from before explanations, or not done);
- ``explanation_summary(explanation, ...)``: the JSON-ready dict of the API and the templates
  (heatmap URLs, members, "3 of 3 members agree", uncertain, ood);
- ``HeatmapApi`` and ``ModelInputApi``: owner-only PNGs under the API (token or session; another
  user's id is 404, like the image).

Maps are stored small: at the cam layer's resolution (7x7 for the fast net), quantised to 0-255
against their own peak, in a JSON field; the PNG is rendered on request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from classifier import selectors
from classifier.errors import NotFoundError
from classifier.models import Classification, Explanation
from worker.runtime.pictures import heatmap_png, model_input_png

if TYPE_CHECKING:  # the web process never imports torch; only the worker calls predict()
    from worker.runtime.explain import ExplainedPrediction
    from worker.runtime.predictor import Predictor

logger = logging.getLogger(__name__)

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
OOD_MESSAGE = "This doesn't look like any of the {n} classes I know."


# ----------------------------------------------------------------------------- worker side
def predict(predictor: Predictor, images: list[np.ndarray], top_k: int) -> list[ExplainedPrediction]:
    """The predictions of a batch with their explanations (one pass of the bundle's ``explain``).
    An explanation that fails never fails the jobs: the plain predictions are returned then
    (logged), and the page says no explanation is available."""
    from worker.runtime.explain import ExplainedPrediction, predict_explained

    try:
        return predict_explained(predictor, images, top_k=top_k)
    except Exception:  # a broken explain method must not cost the users their predictions
        logger.exception("explain failed for bundle %s; predicting without it", predictor.bundle_dir)
        tops = predictor.predict(images, top_k=top_k)
        return [
            ExplainedPrediction(predictions=top, model_input=image, num_classes=len(predictor.classes))
            for top, image in zip(tops, images, strict=True)
        ]


def _quantised(heatmaps: dict[str, np.ndarray] | None) -> dict[str, Any]:
    if not heatmaps:
        return {}
    maps, peaks, size = {}, {}, None
    for label, values in heatmaps.items():
        v = np.asarray(values, dtype=np.float64)
        size = list(v.shape)
        peak = float(v.max()) if v.size else 0.0
        maps[label] = (np.round(v / peak * 255) if peak > 0 else np.zeros_like(v)).astype(int).ravel().tolist()
        peaks[label] = peak
    # JSON objects lose their key order in PostgreSQL's jsonb: the best-first order is kept apart
    return {"size": size, "labels": list(maps), "maps": maps, "peak": peaks}


def heatmap_labels(heatmaps: dict[str, Any] | None) -> list[str]:
    """The classes that have a stored map, best first (rows from before "labels" keep dict order)."""
    heatmaps = heatmaps or {}
    maps = heatmaps.get("maps") or {}
    return [label for label in heatmaps.get("labels") or list(maps) if label in maps]


def _explanation(classification: Classification, result: ExplainedPrediction) -> Explanation:
    return Explanation(
        classification=classification,
        layer=result.layer[:255],
        heatmaps=_quantised(result.heatmaps),
        model_input=model_input_png(result.model_input),
        members=result.members or [],
        agree=result.agree,
        uncertain=result.uncertain,
        uncertain_threshold=result.thresholds.get("uncertain"),
        ood_score=result.ood_score,
        ood=result.ood,
        ood_threshold=result.thresholds.get("ood"),
        superclass=(result.superclass or "")[:64],
        num_classes=result.num_classes,
    )


@transaction.atomic
def explanation_create(*, classification: Classification, result: ExplainedPrediction) -> Explanation:
    """Store the explanation of a completed classification (replacing an older one)."""
    [explanation] = explanations_create_many(pairs=[(classification, result)])
    return explanation


@transaction.atomic
def explanations_create_many(*, pairs: list[tuple[Classification, ExplainedPrediction]]) -> list[Explanation]:
    """Store the explanations of a batch of completed classifications (replacing older ones) with
    one delete and one insert."""
    if not pairs:
        return []
    Explanation.objects.filter(classification__in=[c for c, _ in pairs]).delete()
    return Explanation.objects.bulk_create([_explanation(c, r) for c, r in pairs])


# ----------------------------------------------------------------------------- reading
def explanation_of(classification: Classification) -> Explanation | None:
    try:
        return classification.explanation
    except Explanation.DoesNotExist:
        return None


def agreement_text(agree: int | None, members: list[dict]) -> str:
    if agree is None or not members:
        return ""
    n = len(members)
    if n == 1:
        return "One model (no ensemble to agree or disagree)."
    if agree == n:
        return f"{'Both' if n == 2 else f'All {n}'} members agree." if n <= 3 else f"{agree} of {n} members agree."
    return f"{agree} of {n} members agree."


def explanation_summary(
    classification: Classification, explanation: Explanation | None, request: HttpRequest | None = None
) -> dict[str, Any] | None:
    """The explanation as the API and the result page show it; None when the job has none."""
    if explanation is None:
        return None

    def url(name: str, query: str = "") -> str:
        path = reverse(name, kwargs={"classification_id": classification.id}) + query
        return request.build_absolute_uri(path) if request is not None else path

    from urllib.parse import urlencode

    heatmaps = [
        {"label": label, "url": url("api:classification-heatmap", "?" + urlencode({"class": label}))}
        for label in heatmap_labels(explanation.heatmaps)
    ]
    members = explanation.members or []
    return {
        "available": bool(heatmaps),
        "method": "grad-cam" if heatmaps else None,
        "layer": explanation.layer or None,
        "class": heatmaps[0]["label"] if heatmaps else None,
        "heatmap_url": heatmaps[0]["url"] if heatmaps else None,
        "heatmaps": heatmaps,
        "map_size": (explanation.heatmaps or {}).get("size"),
        "model_input_url": url("api:classification-model-input"),  # always stored with the row
        "members": members,
        "agreement": {
            "agree": explanation.agree,
            "members": len(members),
            "text": agreement_text(explanation.agree, members),
        }
        if members
        else None,
        "uncertain": explanation.uncertain,
        "uncertain_threshold": explanation.uncertain_threshold,
        "ood_score": explanation.ood_score,
        "ood": explanation.ood,
        "ood_threshold": explanation.ood_threshold,
        "superclass": explanation.superclass or None,
        "ood_message": OOD_MESSAGE.format(n=explanation.num_classes or "the") if explanation.ood else "",
    }


# ----------------------------------------------------------------------------- API fields
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


class ExplanationSerializer(serializers.Serializer):
    available = serializers.BooleanField(help_text="False when the model bundle has no explain method")
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
        keys = ("available", "method", "layer", "class", "heatmap_url", "heatmaps", "map_size", "model_input_url")
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


def _png(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    response["X-Content-Type-Options"] = "nosniff"
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    response["Cache-Control"] = "private, max-age=3600"
    return response


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
        return _png(heatmap_png(np.asarray(maps[label], dtype=np.float64).reshape(h, w) / 255.0))


class ModelInputApi(_PngApi):
    @extend_schema(
        operation_id="classifications_model_input",
        responses={(200, "image/png"): PNG_RESPONSE, 401: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="The image the model saw (the centre crop, resized to its input size, e.g. 32x32).",
    )
    def get(self, request: Request, classification_id: str) -> HttpResponse:
        return _png(bytes(self.explanation(request, classification_id).model_input))


# ----------------------------------------------------------------------------- staff: feature maps
def feature_maps(classification: Classification, bundle_dir: str, n: int = 16) -> dict[str, Any]:
    """The activations of the first and a middle stage of the bundle's first member for this
    image, as grids of the ``n`` most active channels (PNG bytes). Runs the member's eager model
    from ``<bundle>/members/`` (torch is imported here only, on a staff request). Returns
    ``{"member", "stages": [{"layer", "shape", "channels", "png"}]}`` or ``{"error": message}``."""
    from pathlib import Path

    from worker.runtime.images import ImageRejected, decode_for_model
    from worker.runtime.manifest import BundleError, read_manifest
    from worker.runtime.pictures import channel_grid

    try:
        manifest = read_manifest(bundle_dir)
    except BundleError as exc:
        return {"error": str(exc)}
    member = next((m for m in manifest.members if m.get("member_file")), None)
    if member is None:
        return {"error": "The bundle in use has no member checkpoints (members/, ml export --save-members)."}
    import torch

    from ml.checkpoint import load_model

    model, ckpt = load_model(Path(bundle_dir) / member["member_file"])
    layers = getattr(model, "feature_layers", None)
    if not layers:
        return {"error": f"{ckpt['arch']} names no feature layers."}
    try:
        with classification.image.open("rb") as f:
            image = decode_for_model(f.read(), tuple(manifest.input_size))
    except (OSError, ImageRejected) as exc:
        return {"error": f"The image could not be read: {exc}"}
    mean = torch.tensor(ckpt["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(ckpt["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(image)[None].float() / 255.0 - mean) / std
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.detach()))
        for name in layers
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    stages = []
    for name in layers:
        act = seen[name][0].float().numpy()
        png, channels = channel_grid(act, n=n)
        stages.append({"layer": name, "shape": list(act.shape), "channels": channels, "png": png})
    return {
        "member": f"{member.get('arch', '?')} ({member['member_file']})",
        "version": manifest.version,
        "stages": stages,
    }
