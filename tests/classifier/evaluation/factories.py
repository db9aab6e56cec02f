"""Rows of the evaluation package, and done classifications linked to a version."""

from __future__ import annotations

from datetime import datetime

import factory
from django.utils import timezone

from classifier.evaluation.models import Feedback, ModelVersion
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory
from tests.conftest import CIFAR10_CLASSES


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    name = "test"
    version = factory.Sequence(lambda n: f"test-v{n}")
    classes = list(CIFAR10_CLASSES)
    metrics = factory.LazyFunction(dict)
    offline = factory.LazyFunction(dict)


class FeedbackFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feedback

    classification = factory.SubFactory(ClassificationFactory, done=True)
    user = factory.LazyAttribute(lambda f: f.classification.owner)
    correct = True
    label = factory.LazyAttribute(lambda f: f.classification.top_label if f.correct else "")


def done_job(version: ModelVersion | None, top: str = "cat", p: float = 0.7, **kwargs) -> Classification:
    """A finished classification by ``version`` whose top class is ``top``."""
    return ClassificationFactory(
        done=True,
        top_label=top,
        top_probability=p,
        predictions=[{"label": top, "probability": p}],
        model_version=version.version if version else "unregistered-1",
        bundle_version=version,
        **kwargs,
    )


def bulk_done(version: ModelVersion, owner, tops: list[str], confidences: list[float], finished: datetime) -> None:
    """Many finished rows at once (no files): for drift and operations aggregates."""
    rows = []
    for top, p in zip(tops, confidences, strict=True):
        rows.append(
            Classification(
                owner=owner,
                status=Classification.Status.DONE,
                image_format="png",
                top_label=top,
                top_probability=p,
                predictions=[{"label": top, "probability": p}],
                model_version=version.version,
                bundle_version=version,
                created_at=finished,
                started_at=finished,
                finished_at=finished,
            )
        )
    Classification.objects.bulk_create(rows, batch_size=1000)


def now() -> datetime:
    return timezone.now()
