"""REST twin of the "About the model" page: ``GET /api/v1/model/`` returns the running model's card
(`classifier.model_card`) as JSON, so an API client can learn the classes, the input size, the
version and how far to trust the answers without scraping the page or reading them off results.

Public like the page (no token needed: it describes the service, not a user's data). Every number
is the bundle's own, read from its manifest and export report; ``null`` where the bundle does not
carry it. With no readable manifest: 503 with code ``model_unavailable``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier.api import ERROR_RESPONSE
from classifier.errors import ApplicationError
from classifier.model_card import ModelCard, model_card

UNAVAILABLE = (
    "The model's description is unavailable: the service cannot read its model bundle's manifest. "
    "Classifications may still work; try again later or tell the site's administrators."
)


def _share(**kwargs: Any) -> serializers.FloatField:
    """A share between 0 and 1 (accuracy, rate), null where the bundle does not carry it."""
    return serializers.FloatField(min_value=0.0, max_value=1.0, allow_null=True, **kwargs)


class ClassRowSerializer(serializers.Serializer):
    name = serializers.CharField()
    precision = _share()
    recall = _share()
    f1 = _share()
    support = serializers.IntegerField(help_text="held-out images of this class")


class ConfusedPairSerializer(serializers.Serializer):
    true = serializers.CharField(help_text="the image's class")
    predicted = serializers.CharField(help_text="the class the model answered")
    count = serializers.IntegerField()
    rate = _share(help_text="share of the true class's held-out images", required=False)


class HeldOutSerializer(serializers.Serializer):
    description = serializers.CharField(help_text="which images were held out of training")
    images = serializers.IntegerField(allow_null=True)
    accuracy = _share(help_text="top-1 accuracy")
    top5 = _share(help_text="share of images whose class was among the top five")
    macro_f1 = _share()
    ece = _share(help_text="expected calibration error after calibration")
    per_class = ClassRowSerializer(many=True, help_text="weakest (lowest F1) first")
    most_confused = ConfusedPairSerializer(many=True)


class EnsembleSerializer(serializers.Serializer):
    members = serializers.IntegerField()
    architectures = serializers.ListField(child=serializers.CharField())
    parameters = serializers.IntegerField()
    test_time_augmentation = serializers.CharField(help_text="what each member looks at, averaged")
    temperature = serializers.FloatField(allow_null=True, help_text="calibration temperature applied in the model")


class UncertainSerializer(serializers.Serializer):
    threshold = _share(help_text='answers with a calibrated top probability below it are marked "not sure"')
    share_flagged = _share(help_text="share of held-out answers marked")
    accuracy_below = _share(help_text="accuracy of the marked answers")
    accuracy_above = _share(help_text="accuracy of the others")


class PredictionSetCardSerializer(serializers.Serializer):
    coverage = _share(help_text="the coverage the sets are fitted for: the true class is in an image's set this often")
    classwise = serializers.BooleanField(
        allow_null=True, help_text="one threshold per class: the coverage holds for the images of every class"
    )
    threshold = _share(
        help_text="marginal sets: a class is in the set when its calibrated probability is at least this"
    )
    thresholds = serializers.ListField(
        child=serializers.FloatField(),
        allow_null=True,
        help_text="the threshold of each class, in the order of classes",
    )
    measured_coverage = _share(help_text="how often the true class was in its set on held-out images")
    mean_size = serializers.FloatField(allow_null=True, help_text="classes per set on held-out images")
    lowest_class = serializers.DictField(
        allow_null=True, help_text='the class whose images were covered least often: {"class", "coverage"}'
    )


class UnusualSerializer(serializers.Serializer):
    threshold = serializers.FloatField(allow_null=True, help_text="energy score above which an image is flagged")
    validation_flagged = _share(help_text="share of ordinary held-out photos flagged")
    generated_flagged = _share(help_text="share of generated non-photos (noise, flat colours, text, stripes) flagged")
    auroc = _share()


class FigureSerializer(serializers.Serializer):
    file = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    url = serializers.CharField(help_text="the PNG, versioned with the bundle")


class ModelCardSerializer(serializers.Serializer):
    version = serializers.CharField()
    exported_at = serializers.DateTimeField(allow_null=True)
    classes = serializers.ListField(child=serializers.CharField())
    input_size = serializers.ListField(child=serializers.IntegerField(), help_text="[height, width] in pixels")
    ensemble = EnsembleSerializer()
    held_out = HeldOutSerializer()
    uncertain = UncertainSerializer(allow_null=True)
    unusual = UnusualSerializer(allow_null=True, help_text="the unusual-image (out-of-distribution) flag")
    prediction_set = PredictionSetCardSerializer(
        allow_null=True, help_text="the answer sets: the classes the model cannot rule out (split conformal prediction)"
    )
    figures = FigureSerializer(many=True, help_text="the export's pictures: confusion matrix, mistakes, reliability")
    page = serializers.CharField(help_text="the same description for people")


def _pick(values: dict[str, Any] | None, serializer: type[serializers.Serializer]) -> dict[str, Any] | None:
    """The fields the serializer documents, from a manifest section of any shape (missing: null)."""
    if values is None:
        return None
    return {name: values.get(name) for name in serializer().fields}


def card_data(card: ModelCard, *, page: str, figure_url: Callable[[str], str]) -> dict[str, Any]:
    return {
        "version": card.version,
        "exported_at": card.created_at,
        "classes": card.classes,
        "input_size": list(card.input_size),
        "ensemble": {
            "members": card.members,
            "architectures": card.architectures,
            "parameters": card.parameters,
            "test_time_augmentation": card.tta,
            "temperature": card.temperature,
        },
        "held_out": {
            "description": card.evaluated_on,
            "images": card.images,
            "accuracy": card.accuracy,
            "top5": card.top5,
            "macro_f1": card.macro_f1,
            "ece": card.ece,
            "per_class": card.per_class,
            "most_confused": card.confused,
        },
        "uncertain": _pick(card.uncertain, UncertainSerializer),
        "unusual": _pick(card.ood, UnusualSerializer),
        "prediction_set": _pick(card.prediction_set, PredictionSetCardSerializer),
        "figures": [
            {"file": f.file, "title": f.title, "description": f.alt, "url": figure_url(f.file)} for f in card.figures
        ],
        "page": page,
    }


class ModelCardApi(APIView):
    """GET what the running model knows, how often it is right on held-out images, and when not to
    trust it."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="model_retrieve",
        responses={
            200: ModelCardSerializer,
            503: OpenApiResponse(ERROR_RESPONSE, description="The model bundle's manifest cannot be read"),
        },
    )
    def get(self, request: Request) -> Response:
        card = model_card()
        if card is None:
            raise ApplicationError(UNAVAILABLE, code="model_unavailable", status_code=503)
        page = request.build_absolute_uri(reverse("classifier:model"))
        version = urlencode({"v": card.version})

        def figure_url(file: str) -> str:
            return request.build_absolute_uri(f"{reverse('classifier:model-figure', args=[file])}?{version}")

        return Response(ModelCardSerializer(card_data(card, page=page, figure_url=figure_url)).data)
