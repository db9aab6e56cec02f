"""Users' feedback on their own results: whether the top class was right, or the true class."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from classifier.errors import ApplicationError, NotFoundError
from classifier.evaluation.models import Feedback
from classifier.evaluation.services import classes_for
from classifier.models import Classification


@transaction.atomic
def feedback_set(
    *, user, classification: Classification, correct: bool | None = None, label: str | None = None
) -> tuple[Feedback, bool]:
    """Record (or change) the user's feedback on their classification; returns (feedback, created).

    ``correct=True``: the top class was right. ``label="dog"``: the true class (one of the
    version's classes; right when it is the top class). ``correct=False`` alone: wrong, true class
    not given. Only the owner may give feedback, and only on a finished, successful job.
    """
    if classification.owner_id != user.pk:
        raise NotFoundError("No such classification.")
    if classification.status == Classification.Status.FAILED:
        raise ApplicationError(
            "This classification failed, so there is no answer to give feedback on. Upload the image again.",
            code="classification_failed",
        )
    if classification.status != Classification.Status.DONE:
        raise ApplicationError(
            "This classification is not finished yet; give feedback once it is done.", code="not_finished"
        )
    label = (label or "").strip()
    if correct is None and not label:
        raise ApplicationError('Send {"correct": true} or the true class as {"label": "..."}.', code="invalid")
    top = classification.top_label
    if label:
        classes = classes_for(classification)
        if classes is None:
            raise ApplicationError(
                f"The classes of model version {classification.model_version!r} are unknown, so only "
                '{"correct": true} or {"correct": false} can be recorded for this classification.',
                code="unknown_classes",
            )
        if label not in classes:
            raise ApplicationError(
                f"{label!r} is not a class of model version {classification.model_version}; use one of: "
                f"{', '.join(classes)}.",
                {"label": label, "classes": classes},
                code="invalid_label",
            )
        if correct is not None and correct != (label == top):
            raise ApplicationError(
                f'"correct": {str(correct).lower()} contradicts "label": {label!r} (the top class is {top!r}).',
                {"label": label, "top_label": top},
                code="invalid",
            )
        correct = label == top
    elif correct:
        label = top
    now = timezone.now()
    feedback, created = Feedback.objects.select_for_update().get_or_create(
        classification=classification,
        user=user,
        defaults={"correct": bool(correct), "label": label, "created_at": now, "updated_at": now},
    )
    if not created:
        feedback.correct = bool(correct)
        feedback.label = label
        feedback.updated_at = now
        feedback.save(update_fields=["correct", "label", "updated_at"])
    return feedback, created


@transaction.atomic
def feedback_delete(*, user, classification: Classification) -> None:
    """Withdraw the user's feedback; NotFoundError when there is none."""
    deleted, _ = Feedback.objects.filter(classification=classification, user=user).delete()
    if not deleted:
        raise NotFoundError("There is no feedback on this classification.")
