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
    error = models.TextField(blank=True)  # a message a person can act on
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
