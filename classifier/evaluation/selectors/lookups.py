"""Single rows the evaluation pages and API look up: a user's feedback on a job, a model version by
id or alias, and the classes of the bundle that answers users."""

from __future__ import annotations

from django.conf import settings

from classifier.errors import NotFoundError
from classifier.evaluation.models import Feedback, ModelVersion
from classifier.models import Classification


def feedback_get(*, user, classification: Classification) -> Feedback:
    feedback = Feedback.objects.filter(classification=classification, user=user).first()
    if feedback is None:
        raise NotFoundError("There is no feedback on this classification.")
    return feedback


def feedback_for(*, user, classification: Classification) -> Feedback | None:
    return Feedback.objects.filter(classification=classification, user=user).first()


def model_version_get(*, pk: int | str) -> ModelVersion:
    try:
        return ModelVersion.objects.get(pk=int(pk))
    except (ModelVersion.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFoundError("No such model version.") from exc


def model_version_by_alias(alias: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(alias=alias).first()


def champion_classes() -> list[str]:
    """The classes of the bundle that answers users: its row, else MODEL_BUNDLE's manifest (no torch)."""
    from worker.runtime.manifest import BundleError, read_manifest

    champion = model_version_by_alias(ModelVersion.Alias.CHAMPION)
    if champion is not None:
        return list(champion.classes)
    try:
        return list(read_manifest(settings.MODEL_BUNDLE).classes)
    except (BundleError, OSError):
        return []
