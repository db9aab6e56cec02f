"""Thin models: fields, status choices and constraints. Writes go through services.py."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def upload_path(instance: Classification, filename: str) -> str:
    # Nothing the user sends becomes part of a storage path: the name is the job's UUID.
    return f"uploads/{instance.created_at:%Y/%m/%d}/{instance.id}.{instance.image_format}"


def thumbnail_path(instance: Classification, filename: str) -> str:
    return f"thumbnails/{instance.created_at:%Y/%m/%d}/{instance.id}.jpg"


class Classification(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="classifications")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)

    image = models.FileField(upload_to=upload_path, max_length=255)
    image_format = models.CharField(max_length=8)  # canonical extension from the decoded format: jpg, png, ...
    original_filename = models.CharField(max_length=255, blank=True)  # shown to the owner, never used in paths
    image_width = models.PositiveIntegerField(null=True)
    image_height = models.PositiveIntegerField(null=True)
    thumbnail = models.FileField(upload_to=thumbnail_path, max_length=255, blank=True)

    predictions = models.JSONField(default=list, blank=True)  # [{"label": str, "probability": float}, ...] top-k
    top_label = models.CharField(max_length=64, blank=True, db_index=True)
    top_probability = models.FloatField(null=True)
    model_version = models.CharField(max_length=128, blank=True, db_index=True)
    # The registered version that produced the predictions (classifier.evaluation); null before it ran.
    bundle_version = models.ForeignKey(
        "classifier.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="classifications"
    )
    error = models.TextField(blank=True)  # a message a person can act on
    # Grad-CAM heatmaps asked for at upload (the web form: yes; the API: ?explain=true). They are
    # computed after the answer is stored and pushed, so asking never delays the answer.
    heatmaps_requested = models.BooleanField(default=True)
    attempts = models.PositiveIntegerField(default=0)

    # Set before the row is saved (not auto_now_add) because the storage paths above use it.
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)  # queued at
    last_enqueued_at = models.DateTimeField(default=timezone.now, editable=False)  # the sweeper re-queues from here
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(top_probability__isnull=True)
                | models.Q(top_probability__gte=0, top_probability__lte=1),
                name="classification_top_probability_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


def report_image_path(instance: EvaluationReportImage, filename: str) -> str:
    # Only the report's UUID and a whitelisted figure name: nothing from the bundle's file names.
    return f"reports/{instance.report_id}/{instance.name}.png"


class EvaluationReport(models.Model):
    """The evaluation report of one model bundle version (imported from <bundle>/report/)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=128, db_index=True)  # manifest name
    version = models.CharField(max_length=128, unique=True)  # manifest version, as recorded with predictions
    created_at = models.DateTimeField("exported at", null=True, blank=True)  # when the bundle was exported (manifest)
    imported_at = models.DateTimeField(default=timezone.now)  # last (re-)import
    source_path = models.CharField(max_length=500, blank=True)  # the bundle folder it came from

    # Headline numbers for the list: from report.json, else from the manifest's metrics.
    accuracy = models.FloatField(null=True, blank=True)
    top5 = models.FloatField("top-5 accuracy", null=True, blank=True)
    macro_f1 = models.FloatField("macro F1", null=True, blank=True)
    ece = models.FloatField("ECE", null=True, blank=True)  # expected calibration error
    nll = models.FloatField("NLL", null=True, blank=True)  # negative log-likelihood
    n = models.PositiveIntegerField("images", null=True, blank=True)  # images evaluated
    split = models.CharField(
        "data", max_length=500, blank=True
    )  # e.g. "validation split (500 per class, seed 0) of ..."

    manifest = models.JSONField(default=dict)
    report = models.JSONField(default=dict, blank=True)  # report/report.json; {} when the bundle has none
    # The text files of report/ (report.md, other *.md, *.txt, *.yaml, *.csv), report.md first:
    # {"report.md": text, "TRAINING.md": text, "training-log.txt": text, ...}
    documents = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-imported_at"]

    def __str__(self) -> str:
        return self.version


class EvaluationReportImage(models.Model):
    """A figure of a report, stored through Django storage; served to staff only."""

    class Name(models.TextChoices):
        # The whitelist of figures ml.evaluate writes (<name>.png in report/), in display order.
        CONFUSION_MATRIX = "confusion_matrix", "Confusion matrix"
        RELIABILITY = "reliability", "Reliability diagram"
        MISCLASSIFIED = "misclassified", "Misclassified images"
        TRAINING_CURVES = "training_curves", "Training curves"
        # python -m ml study figures (report/studies/<study>/<figure>.png -> <study>_<figure>)
        ABLATION_ACCURACY = "ablation_accuracy", "Ablation study: accuracy per condition"
        ABLATION_KNOCKOUT = "ablation_knockout", "Ablation study: feature-map knock-out"
        COMPARISON_ACCURACY = "comparison_accuracy", "Comparison study: accuracy per model"
        COMPARISON_TRANSFER = "comparison_transfer", "Comparison study: transfer learning"

    report = models.ForeignKey(EvaluationReport, on_delete=models.CASCADE, related_name="images")
    name = models.CharField(max_length=32, choices=Name.choices)
    file = models.FileField(upload_to=report_image_path, max_length=255)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["report", "name"], name="evaluation_report_image_unique_name")]

    def __str__(self) -> str:
        return f"{self.report_id}/{self.name}"


class Explanation(models.Model):
    """What the worker computed beside a classification's prediction (classifier/explanations/
    writes and reads it): Grad-CAM maps of the top classes, the model's input, the members' answers,
    and the "not sure" / out-of-distribution flags. The row is stored with the answer; the heatmaps
    follow it (``heatmaps_status``). A job of a bundle without ``explain`` has a row with
    ``heatmaps`` empty; jobs from before this existed have none."""

    class HeatmapsStatus(models.TextChoices):
        PENDING = "pending", "Being computed"  # the answer is stored; the maps follow
        READY = "ready", "Ready"
        NOT_REQUESTED = "not_requested", "Not requested"  # an API job without ?explain=true
        UNAVAILABLE = "unavailable", "Unavailable"  # the bundle has no explain method, or it failed

    classification = models.OneToOneField(
        Classification, on_delete=models.CASCADE, primary_key=True, related_name="explanation"
    )
    layer = models.CharField(max_length=255, blank=True)  # the cam layer(s) the maps explain
    # {"size": [h, w], "maps": {label: [h*w ints 0-255, row-major]}, "peak": {label: float}}; labels best first
    heatmaps = models.JSONField(default=dict, blank=True)
    heatmaps_status = models.CharField(max_length=16, choices=HeatmapsStatus.choices, default=HeatmapsStatus.READY)
    heatmaps_requested_at = models.DateTimeField(null=True, blank=True)  # when the pending maps were asked for
    model_input = models.BinaryField(blank=True)  # PNG of the H x W input the model saw
    members = models.JSONField(default=list, blank=True)  # [{"arch", "label", "probability"}] per member
    agree = models.PositiveSmallIntegerField(null=True)  # members whose top class is the ensemble's
    uncertain = models.BooleanField(null=True)  # calibrated top probability under the bundle's threshold
    uncertain_threshold = models.FloatField(null=True)
    ood_score = models.FloatField(null=True)  # higher = less like the training images
    ood = models.BooleanField(null=True)  # ood_score above the bundle's threshold
    ood_threshold = models.FloatField(null=True)
    # the classes the model cannot rule out at the bundle's coverage, most probable first (ml.conformal:
    # every class at or above the threshold, and the top class); null: the bundle has no prediction sets
    prediction_set = models.JSONField(null=True, blank=True)
    prediction_set_coverage = models.FloatField(null=True)  # e.g. 0.95: the true class was in such sets that often
    superclass = models.CharField(max_length=64, blank=True)
    num_classes = models.PositiveIntegerField(null=True)  # classes the bundle knows ("any of the 10 classes")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"explanation of {self.classification_id}"


# The evaluation package's models live in classifier/evaluation/models.py (app label "classifier").
from classifier.evaluation.models import Feedback, ModelVersion, ShadowPrediction  # noqa: E402, F401
