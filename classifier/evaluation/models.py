"""Thin models of the evaluation package (app label ``classifier``; imported by classifier.models)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ModelVersion(models.Model):
    """One model bundle version, registered the first time a worker or the web app sees it."""

    class Alias(models.TextChoices):
        CHAMPION = "champion", "Champion"  # the bundle that answers users (MODEL_BUNDLE)
        CHALLENGER = "challenger", "Challenger"  # run on the same uploads, never shown (MODEL_BUNDLE_CHALLENGER)

    name = models.CharField(max_length=128, db_index=True)  # manifest name
    version = models.CharField(max_length=128, unique=True)  # manifest version, as stored on each classification
    checksum = models.CharField("module SHA-256", max_length=64, blank=True)
    classes = models.JSONField(default=list)
    metrics = models.JSONField("offline metrics", default=dict, blank=True)  # manifest metrics
    # The offline reference the live numbers and drift are compared with, from report/report.json:
    # accuracy, per_class, predicted_distribution {class: share}, mean_confidence, confidence_bins.
    offline = models.JSONField(default=dict, blank=True)
    source_path = models.CharField(max_length=500, blank=True)
    alias = models.CharField(max_length=16, choices=Alias.choices, blank=True, default="")
    created_at = models.DateTimeField("exported at", null=True, blank=True)  # manifest created_at
    registered_at = models.DateTimeField(default=timezone.now)
    first_used_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-registered_at"]
        constraints = [
            # At most one champion and one challenger.
            models.UniqueConstraint(fields=["alias"], condition=~models.Q(alias=""), name="model_version_unique_alias"),
        ]

    def __str__(self) -> str:
        return self.version + (f" ({self.alias})" if self.alias else "")


class Feedback(models.Model):
    """What a user says about one of their classifications: right, or wrong (with the true class)."""

    classification = models.ForeignKey("classifier.Classification", on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="feedback")
    correct = models.BooleanField()  # the top class was right
    # The true class: the top class when correct, the class the user named when not, "" when the
    # user only said "wrong".
    label = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name_plural = "feedback"
        constraints = [
            models.UniqueConstraint(fields=["classification", "user"], name="feedback_one_per_user_and_classification"),
        ]

    def __str__(self) -> str:
        return f"{self.classification_id}: {'correct' if self.correct else 'wrong'} {self.label}".strip()


class ShadowPrediction(models.Model):
    """A challenger's top-k on a job the champion answered. Staff-only; users never see it."""

    classification = models.ForeignKey(
        "classifier.Classification", on_delete=models.CASCADE, related_name="shadow_predictions"
    )
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="shadow_predictions")
    predictions = models.JSONField(default=list)  # [{"label", "probability"}, ...] best first
    top_label = models.CharField(max_length=64, db_index=True)
    top_probability = models.FloatField()
    inference_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["classification", "model_version"], name="shadow_prediction_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.classification_id} by {self.model_version_id}: {self.top_label}"
