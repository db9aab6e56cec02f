"""Everything that writes ModelVersion, Feedback and ShadowPrediction rows.

Model versions: `model_version_register` reads a bundle's manifest (and report/report.json, the
offline reference) without torch and upserts its row; `model_version_seen` is what the job
services call when a bundle produced predictions: it returns the version's id, registering the
bundle on first sight, and keeps first/last used and the alias up to date.

Challenger: `challenger_schedule` (called by classification_complete) enqueues `challenger_process`
once the champion's result is committed, on its own queue, so it never delays a user's answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from classifier.errors import ApplicationError, NotFoundError
from classifier.evaluation.models import Feedback, ModelVersion, ShadowPrediction
from classifier.models import Classification, EvaluationReport
from worker.runtime.manifest import BundleError, Manifest, read_manifest

logger = logging.getLogger(__name__)

Alias = ModelVersion.Alias
MAX_REPORT_JSON_BYTES = 20 * 1024 * 1024
# first/last used and the alias are refreshed at most this often per process and version: a
# busy worker then costs one indexed SELECT per job, not an UPDATE as well.
TOUCH_EVERY_SECONDS = 60.0


# ----------------------------------------------------------------------------- model versions
def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def offline_reference(report: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """The offline numbers live evaluation and drift compare with, from a report.json.

    ``predicted_distribution`` is the share of validation images predicted as each class (the
    confusion matrix's column sums), ``mean_confidence`` the mean top-1 probability (from the
    calibration bins), ``confidence_bins`` the validation histogram of that probability.
    """
    if not isinstance(report, dict) or not report:
        return {}
    out: dict[str, Any] = {}
    for key in ("accuracy", "top5", "macro_f1", "ece", "n"):
        if _number(report.get(key)) is not None:
            out[key] = report[key]
    per_class = report.get("per_class")
    if isinstance(per_class, list):
        out["per_class"] = [
            {k: row.get(k) for k in ("class", "precision", "recall", "f1", "support")}
            for row in per_class
            if isinstance(row, dict) and "class" in row
        ]
    cm = report.get("confusion_matrix")
    try:  # a malformed part of a report is left out, never an error
        if (
            isinstance(cm, list)
            and len(cm) == len(classes)
            and all(isinstance(row, list) and len(row) == len(classes) for row in cm)
        ):
            columns = [sum(int(row[j]) for row in cm) for j in range(len(classes))]
            total = sum(columns)
            if total > 0 and min(columns) >= 0:
                out["predicted_distribution"] = [c / total for c in columns]
    except (TypeError, ValueError):
        logger.warning("report of %s: unusable confusion_matrix", report.get("title", "?"))
    bins = report.get("calibration_bins")
    try:
        if isinstance(bins, list):
            rows = [b for b in bins if isinstance(b, dict) and {"lower", "upper", "count"} <= b.keys()]
            count = sum(int(b["count"]) for b in rows)
            if rows and count > 0:
                out["confidence_bins"] = [
                    {"lower": float(b["lower"]), "upper": float(b["upper"]), "count": int(b["count"])} for b in rows
                ]
                weighted = sum(int(b["count"]) * float(b["confidence"]) for b in rows if _number(b.get("confidence")))
                out["mean_confidence"] = weighted / count
    except (TypeError, ValueError):
        out.pop("confidence_bins", None)
        logger.warning("report of %s: unusable calibration_bins", report.get("title", "?"))
    return out


def _read_report(bundle_dir: Path, version: str) -> dict[str, Any]:
    path = bundle_dir / "report" / "report.json"
    try:
        if path.is_file() and path.stat().st_size <= MAX_REPORT_JSON_BYTES:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
    except (OSError, ValueError):
        logger.warning("could not read %s", path, exc_info=True)
    imported = EvaluationReport.objects.filter(version=version).values_list("report", flat=True).first()
    return imported if isinstance(imported, dict) else {}


def _created_at(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def _set_alias(version: ModelVersion, alias: str) -> None:
    if alias and version.alias != alias:
        # One champion, one challenger: the alias moves from whichever version had it.
        ModelVersion.objects.filter(alias=alias).exclude(pk=version.pk).update(alias="")
        version.alias = alias
        version.save(update_fields=["alias"])


@transaction.atomic
def model_version_register(
    *, bundle_dir: str | Path, alias: str = "", manifest: Manifest | None = None
) -> ModelVersion:
    """Create or update the row of the bundle in ``bundle_dir`` (manifest read without torch).

    Raises ApplicationError when the manifest cannot be read.
    """
    bundle_dir = Path(bundle_dir)
    if manifest is None:
        try:
            manifest = read_manifest(bundle_dir)
        except (BundleError, OSError) as exc:
            raise ApplicationError(str(exc), {"bundle_dir": str(bundle_dir)}, code="invalid_bundle") from exc
    fields = {
        "name": manifest.name[:128],
        "checksum": manifest.sha256[:64],
        "classes": list(manifest.classes),
        "metrics": manifest.metrics if isinstance(manifest.metrics, dict) else {},
        "offline": offline_reference(_read_report(bundle_dir, manifest.version), list(manifest.classes)),
        "source_path": str(bundle_dir)[:500],
        "created_at": _created_at(manifest.created_at),
    }
    try:
        with transaction.atomic():
            version, created = ModelVersion.objects.select_for_update().get_or_create(
                version=manifest.version, defaults=fields
            )
    except IntegrityError:  # another process registered it between our SELECT and INSERT
        version, created = ModelVersion.objects.select_for_update().get(version=manifest.version), False
    if created:
        # Jobs this version answered before it had a row (e.g. before this feature was deployed).
        Classification.objects.filter(model_version=version.version, bundle_version__isnull=True).update(
            bundle_version=version
        )
    else:
        if version.checksum and version.checksum != fields["checksum"]:
            logger.warning(
                "model version %s: the module checksum changed from %s to %s (same version, different weights)",
                manifest.version,
                version.checksum,
                fields["checksum"],
            )
        for key, value in fields.items():
            setattr(version, key, value)
        version.save(update_fields=list(fields))
    _set_alias(version, alias)
    return version


_touched: dict[str, float] = {}  # version -> time.monotonic() of the last first/last-used update
_touched_lock = threading.Lock()


def clear_seen_cache() -> None:
    with _touched_lock:
        _touched.clear()


def model_version_seen(*, version: str, bundle_dir: str | Path | None = None, alias: str = "") -> int | None:
    """The id of the ModelVersion named ``version`` that just produced predictions, or None.

    A version without a row is registered from ``bundle_dir`` when that bundle's manifest names
    it (the worker's bundle); otherwise it stays unlinked (None). Also records first/last use
    and moves ``alias`` to this version, at most every TOUCH_EVERY_SECONDS per process.
    """
    if not version:
        return None
    row = ModelVersion.objects.filter(version=version).values_list("id", "alias").first()
    if row is None:
        if bundle_dir is None:
            return None
        try:
            manifest = read_manifest(bundle_dir)
        except (BundleError, OSError):
            return None
        if manifest.version != version:
            return None
        try:
            registered = model_version_register(bundle_dir=bundle_dir, alias=alias, manifest=manifest)
        except Exception:  # bookkeeping must never cost a user their answer (the savepoint rolled back)
            logger.exception("could not register model version %s from %s", version, bundle_dir)
            return None
        row = (registered.id, registered.alias)
    version_id, current_alias = row
    now = time.monotonic()
    with _touched_lock:
        due = now - _touched.get(version, -TOUCH_EVERY_SECONDS) >= TOUCH_EVERY_SECONDS
        if due:
            _touched[version] = now
    if due:
        stamp = timezone.now()
        ModelVersion.objects.filter(pk=version_id, first_used_at__isnull=True).update(first_used_at=stamp)
        ModelVersion.objects.filter(pk=version_id).update(last_used_at=stamp)
        if alias and current_alias != alias:
            with transaction.atomic():
                _set_alias(ModelVersion.objects.select_for_update().get(pk=version_id), alias)
    return version_id


def model_versions_sync_configured() -> list[ModelVersion]:
    """Make sure MODEL_BUNDLE (champion) and MODEL_BUNDLE_CHALLENGER have rows and their aliases;
    the admin calls this when staff open the model versions. Costs a manifest read per bundle (and
    a report read only for a version seen for the first time); unreadable bundles are logged."""
    out = []
    for bundle, alias in (
        (settings.MODEL_BUNDLE, Alias.CHAMPION),
        (settings.MODEL_BUNDLE_CHALLENGER, Alias.CHALLENGER),
    ):
        if not bundle:
            continue
        try:
            manifest = read_manifest(bundle)
        except (BundleError, OSError) as exc:
            logger.warning("could not read the %s bundle %s: %s", alias, bundle, exc)
            continue
        with transaction.atomic():
            version = ModelVersion.objects.select_for_update().filter(version=manifest.version).first()
            if version is None:
                version = model_version_register(bundle_dir=bundle, alias=alias, manifest=manifest)
            else:
                _set_alias(version, alias)
        out.append(version)
    return out


def classes_for(classification: Classification) -> list[str] | None:
    """The classes of the version that produced ``classification`` (None when it is unknown)."""
    version = classification.bundle_version
    if version is None and classification.model_version:
        version = ModelVersion.objects.filter(version=classification.model_version).first()
    return list(version.classes) if version is not None else None


# ----------------------------------------------------------------------------- feedback
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


# ----------------------------------------------------------------------------- challenger
def _enqueue_challenger(classification_id: str) -> None:
    from worker.tasks import challenge  # lazy, like enqueue_classification: the worker imports services

    try:
        challenge.apply_async(args=[classification_id], queue=settings.CHALLENGER_QUEUE)
    except Exception:  # a broker problem must never touch the champion's result
        logger.exception("could not enqueue the challenger for classification %s", classification_id)


def challenger_schedule(*, classification_id: uuid.UUID | str) -> None:
    """With MODEL_BUNDLE_CHALLENGER set, run the challenger on this job once the champion's
    result is committed (never before, never in the user's way)."""
    if settings.MODEL_BUNDLE_CHALLENGER:
        transaction.on_commit(lambda: _enqueue_challenger(str(classification_id)), robust=True)


def challenger_process(*, classification_id: uuid.UUID | str) -> ShadowPrediction | None:
    """Run MODEL_BUNDLE_CHALLENGER on a job the champion finished; store its top-k. Idempotent:
    a job it already predicted, an unfinished job or the champion's own bundle do nothing (None)."""
    from worker.runtime.images import ImageRejected, decode_for_model
    from worker.runtime.predictor import get_predictor

    bundle = settings.MODEL_BUNDLE_CHALLENGER
    if not bundle:
        return None
    classification = Classification.objects.filter(id=classification_id, status=Classification.Status.DONE).first()
    if classification is None:
        return None
    predictor = get_predictor(bundle, device=settings.MODEL_DEVICE)
    version_id = model_version_seen(version=predictor.version, bundle_dir=bundle, alias=Alias.CHALLENGER)
    if version_id is None or version_id == classification.bundle_version_id:
        return None
    existing = ShadowPrediction.objects.filter(classification=classification, model_version_id=version_id).first()
    if existing is not None:
        return existing
    try:
        with classification.image.open("rb") as f:
            data = f.read()
        array = decode_for_model(data, predictor.input_size, max_pixels=settings.MAX_IMAGE_PIXELS)
    except (OSError, ImageRejected):
        logger.warning("challenger: could not read the image of classification %s", classification_id)
        return None
    start = time.perf_counter()
    [top] = predictor.predict([array], top_k=settings.PREDICTION_TOP_K)
    seconds = time.perf_counter() - start
    shadow, _ = ShadowPrediction.objects.get_or_create(
        classification=classification,
        model_version_id=version_id,
        defaults={
            "predictions": [{"label": label, "probability": round(float(p), 6)} for label, p in top],
            "top_label": top[0][0],
            "top_probability": min(max(float(top[0][1]), 0.0), 1.0),
            "inference_seconds": seconds,
        },
    )
    return shadow
