"""Everything that writes ModelVersion rows (the registry of model bundles).

Model versions: `model_version_register` reads a bundle's manifest (and report/report.json, the
offline reference) without torch and upserts its row; `model_version_seen` is what the job
services call when a bundle produced predictions: it returns the version's id, registering the
bundle on first sight, and keeps first/last used and the alias up to date. The worker's batches
call `model_version_link`, which does the same with no query of its own between those updates.

Feedback rows are written by `classifier.evaluation.feedback`, shadow predictions by
`classifier.evaluation.challenger`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Subquery
from django.utils import timezone

from classifier.errors import ApplicationError
from classifier.evaluation.models import ModelVersion
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


def model_version_link(*, version: str, bundle_dir: str | Path | None = None, alias: str = "") -> int | Subquery | None:
    """What a finishing job stores as its ``bundle_version``, at the least cost.

    When this process's bookkeeping for ``version`` is due (its first job, then every
    TOUCH_EVERY_SECONDS) it is `model_version_seen`'s id. In between it is a subquery that finds
    the row inside the job's own UPDATE: the version was there a moment ago, and a query of its
    own would cost each batch a round trip (1.2-1.5 ms on the dev machine). A row deleted in
    between leaves the job unlinked, as the deletion does to every older job, until the next due
    call registers the version again, which links them all (`model_version_register`).
    """
    if version:
        with _touched_lock:
            recent = time.monotonic() - _touched.get(version, -TOUCH_EVERY_SECONDS) < TOUCH_EVERY_SECONDS
        if recent:
            return Subquery(ModelVersion.objects.filter(version=version).values("id")[:1])
    return model_version_seen(version=version, bundle_dir=bundle_dir, alias=alias)


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
