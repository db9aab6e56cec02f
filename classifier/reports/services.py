"""Everything that writes EvaluationReport rows.

``evaluation_report_import(bundle_dir=...)`` reads ``<bundle>/manifest.json`` and, when present,
``<bundle>/report/``: report.json, its text files (``*.md``, ``*.txt``, ``*.yaml``, ``*.csv``), and the figures named in
`EvaluationReportImage.Name` (``confusion_matrix.png`` ...); and the studies ``python -m ml study``
writes to ``<bundle>/report/studies/<study>/``: their ``report.md`` (stored as the document
``studies/<study>/report.md``) and figures (``accuracy.png`` -> ``<study>_accuracy`` when that name is
whitelisted). Other files are ignored, and no file name from the bundle ever becomes a storage path.
Re-importing a version updates its row.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.db import transaction
from django.utils import timezone

from classifier.errors import ApplicationError
from classifier.models import EvaluationReport, EvaluationReportImage
from classifier.storage import delete_files_on_commit

logger = logging.getLogger(__name__)

REPORT_FOLDER = "report"
MAX_REPORT_JSON_BYTES = 20 * 1024 * 1024  # a CIFAR-100 report.json is about 0.2 MB
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DOCUMENTS = 20
MAX_IMAGE_BYTES = 20 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DOCUMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.(md|txt|yaml|yml|csv)$")
STUDIES_FOLDER = "studies"
STUDY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
MAX_STUDIES = 10


def _error(message: str, bundle_dir: Path) -> ApplicationError:
    return ApplicationError(message, {"bundle_dir": str(bundle_dir)}, code="invalid_bundle")


def _read_limited(path: Path, limit: int, bundle_dir: Path) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise _error(f"{path} is {size} bytes; the limit for this file is {limit} bytes.", bundle_dir)
    return path.read_bytes()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _created_at(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def _read_report_json(report_dir: Path, bundle_dir: Path) -> dict[str, Any]:
    path = report_dir / "report.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(_read_limited(path, MAX_REPORT_JSON_BYTES, bundle_dir))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _error(f"{path} is not valid JSON: {exc}", bundle_dir) from exc
    if not isinstance(data, dict):
        raise _error(f"{path} must hold a JSON object, not {type(data).__name__}.", bundle_dir)
    return data


def _read_documents(report_dir: Path, bundle_dir: Path) -> dict[str, str]:
    """The text files of report/ by name: report.md, the other *.md, then *.txt, *.yaml, *.csv."""
    if not report_dir.is_dir():
        return {}
    names = sorted(p.name for p in report_dir.iterdir() if DOCUMENT_NAME.match(p.name) and p.is_file())
    names.sort(key=lambda name: (name != "report.md", not name.endswith(".md")))  # stable: by name within
    texts = {}
    for name in names[:MAX_DOCUMENTS]:
        data = _read_limited(report_dir / name, MAX_DOCUMENT_BYTES, bundle_dir)
        texts[name] = data.decode("utf-8", errors="replace")
    return texts


def _read_images(report_dir: Path, bundle_dir: Path) -> dict[str, bytes]:
    images = {}
    for name in EvaluationReportImage.Name.values:
        path = report_dir / f"{name}.png"
        if not path.is_file():
            continue
        data = _read_limited(path, MAX_IMAGE_BYTES, bundle_dir)
        if not data.startswith(PNG_SIGNATURE):
            raise _error(f"{path} is not a PNG file.", bundle_dir)
        images[name] = data
    return images


def _read_studies(report_dir: Path, bundle_dir: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    """report/studies/<study>/report.md as documents, and the figures whose ``<study>_<figure>`` name is whitelisted."""
    root = report_dir / STUDIES_FOLDER
    if not root.is_dir():
        return {}, {}
    documents, images = {}, {}
    studies = sorted(p.name for p in root.iterdir() if p.is_dir() and STUDY_NAME.match(p.name))
    for study in studies[:MAX_STUDIES]:
        folder = root / study
        if (folder / "report.md").is_file():
            data = _read_limited(folder / "report.md", MAX_DOCUMENT_BYTES, bundle_dir)
            documents[f"{STUDIES_FOLDER}/{study}/report.md"] = data.decode("utf-8", errors="replace")
        for name in EvaluationReportImage.Name.values:
            if not name.startswith(study + "_"):
                continue
            path = folder / f"{name[len(study) + 1 :]}.png"
            if path.is_file():
                data = _read_limited(path, MAX_IMAGE_BYTES, bundle_dir)
                if not data.startswith(PNG_SIGNATURE):
                    raise _error(f"{path} is not a PNG file.", bundle_dir)
                images[name] = data
    return documents, images


def _headline(report: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """accuracy, top-5, macro F1, ECE, NLL, n and the split: report.json first, the manifest's metrics second."""
    source = report if "accuracy" in report else metrics
    data = source.get("data")
    split = data.get("description") if isinstance(data, dict) else None
    n = source.get("n")
    return {
        "accuracy": _number(source.get("accuracy")),
        "top5": _number(source.get("top5")),
        "macro_f1": _number(source.get("macro_f1")),
        "ece": _number(source.get("ece")),
        "nll": _number(source.get("nll")),
        "n": n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None,
        "split": str(split or metrics.get("split") or "")[:500],
    }


@transaction.atomic
def evaluation_report_import(*, bundle_dir: str | Path) -> EvaluationReport:
    """Create or update the EvaluationReport of the bundle in ``bundle_dir`` (keyed by its version).

    Raises ApplicationError when the manifest is missing or unreadable, or when report.json or a
    figure is malformed; nothing is written then. A bundle without report/ is imported with the
    manifest's metrics as headline numbers.
    """
    from worker.runtime.manifest import BundleError, read_manifest  # torch-free

    bundle_dir = Path(bundle_dir)
    try:
        manifest = read_manifest(bundle_dir)
    except (BundleError, OSError) as exc:
        raise _error(f"Cannot import the evaluation report: {exc}", bundle_dir) from exc
    report_dir = bundle_dir / REPORT_FOLDER
    try:
        report = _read_report_json(report_dir, bundle_dir)
        documents = _read_documents(report_dir, bundle_dir)
        images = _read_images(report_dir, bundle_dir)
        study_documents, study_images = _read_studies(report_dir, bundle_dir)
        documents.update(study_documents)
        images.update(study_images)
    except OSError as exc:
        raise _error(f"Cannot read {report_dir}: {exc}", bundle_dir) from exc

    row = EvaluationReport.objects.select_for_update().filter(version=manifest.version).first()
    if row is None:
        row = EvaluationReport(version=manifest.version)
    row.name = manifest.name
    row.created_at = _created_at(manifest.created_at)
    row.imported_at = timezone.now()
    row.source_path = str(bundle_dir.resolve())[:500]
    row.manifest = manifest.to_dict()
    row.report = report
    row.documents = documents
    for field, value in _headline(report, manifest.metrics or {}).items():
        setattr(row, field, value)
    row.save()

    # Replace the figures: new files first, the old ones deleted only once this commits.
    old = list(row.images.all())
    old_files = [(image.file.storage, image.file.name) for image in old if image.file.name]
    EvaluationReportImage.objects.filter(pk__in=[image.pk for image in old]).delete()
    new_files: list[tuple[Storage, str]] = []
    try:
        for name, data in images.items():
            image = EvaluationReportImage(report=row, name=name)
            image.file.save(f"{name}.png", ContentFile(data), save=False)  # path: report_image_path
            new_files.append((image.file.storage, image.file.name))
            image.save()
    except BaseException:
        for storage, name in new_files:
            storage.delete(name)
        raise
    # A storage that overwrites (file_overwrite=True) may have reused an old name: keep that file.
    new_names = {name for _, name in new_files}
    delete_files_on_commit([(storage, name) for storage, name in old_files if name not in new_names])
    return row


@transaction.atomic
def evaluation_report_delete(*, report: EvaluationReport) -> None:
    """Delete the row and its figures (the files once the deletion is committed)."""
    files = [(image.file.storage, image.file.name) for image in report.images.all() if image.file.name]
    report.delete()
    delete_files_on_commit(files)
