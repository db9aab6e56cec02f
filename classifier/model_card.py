"""The "About the model" page's data: what the shipped model knows, how often it is right, and when
not to trust it, read from the model bundle the service runs (``settings.MODEL_BUNDLE``), with the
pictures its export drew (confusion matrix, confident mistakes, reliability diagram, unusual-image
scores) where the bundle has them.

Torch-free: the web process reads the bundle's ``manifest.json`` and, when present, the export's
``report/report.json`` (per-class precision/recall/F1, the most confused pairs). Nothing here is
hard-coded: every number comes from those files, which ``python -m ml export`` writes from the
validation split, so the page changes with the bundle. The card is cached per manifest file and
modification time, so a re-exported bundle shows at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

from worker.runtime.manifest import MANIFEST_NAME, BundleError, read_manifest

REPORT_FILE = Path("report") / "report.json"
CONFUSED_PAIRS = 5  # most confused (true -> predicted) pairs shown


@dataclass(frozen=True)
class Figure:
    """A picture ``ml export`` draws into the bundle's ``report/``, shown on the page when present."""

    file: str
    section: str  # "accuracy" | "trust": the page section it illustrates
    title: str
    alt: str  # what the picture shows, in words (its caption on the page)


# Only these files are ever served (classifier.views.model.model_figure): a fixed list, no paths.
FIGURES = (
    Figure(
        "confusion_matrix.png",
        "accuracy",
        "Every answer on the held-out images",
        "Confusion matrix: one row per true class, one column per answered class; the diagonal holds the "
        "right answers, and the brightest cells off it are the mix-ups listed above.",
    ),
    Figure(
        "misclassified.png",
        "accuracy",
        "Confident mistakes",
        "A grid of held-out images the model got wrong with high confidence, each labelled with its true "
        "class, the class the model answered, and its confidence.",
    ),
    Figure(
        "reliability_calibrated.png",
        "trust",
        "Confidence against accuracy",
        "Reliability diagram: for answers grouped by confidence, the share that were right; bars close to "
        "the diagonal mean the stated confidence can be taken at its word. Below it, how many answers fall "
        "in each group: most are above 90%.",
    ),
    Figure(
        "ood_scores.png",
        "trust",
        "How unusual pictures score",
        "Histogram of the unusual-image score for ordinary held-out photos and for generated non-photos "
        "(noise, flat colours, text, stripes), with the threshold above which a picture is flagged.",
    ),
)
FIGURE_FILES = {f.file: f for f in FIGURES}


@dataclass(frozen=True)
class ClassRow:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ModelCard:
    version: str
    created_at: datetime | None  # when the bundle was exported
    classes: list[str]
    input_size: tuple[int, int]
    members: int
    architectures: list[str]
    parameters: int
    tta: str
    accuracy: float | None
    top5: float | None
    macro_f1: float | None
    evaluated_on: str
    images: int | None
    ece: float | None  # after calibration, on the whole split
    temperature: float | None
    uncertain: dict[str, Any] | None  # threshold, share_flagged, accuracy_above/below
    ood: dict[str, Any] | None  # threshold, validation_flagged, generated_flagged, auroc
    prediction_set: dict[str, Any] | None  # coverage, threshold, measured_coverage, mean_size, by_size (ml.conformal)
    per_class: list[ClassRow] = field(default_factory=list)  # weakest first
    confused: list[dict[str, Any]] = field(default_factory=list)  # {"true", "predicted", "count", "rate"}
    figures: list[Figure] = field(default_factory=list)  # those of FIGURES the bundle's report holds

    def figures_for(self, section: str) -> list[Figure]:
        return [f for f in self.figures if f.section == section]

    @property
    def accuracy_figures(self) -> list[Figure]:
        return self.figures_for("accuracy")

    @property
    def trust_figures(self) -> list[Figure]:
        return self.figures_for("trust")

    @property
    def weakest(self) -> list[ClassRow]:
        return self.per_class[:3]


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _per_class(report: dict[str, Any]) -> list[ClassRow]:
    rows = []
    for row in report.get("per_class") or []:
        try:
            rows.append(
                ClassRow(
                    name=str(row["class"]),
                    precision=float(row["precision"]),
                    recall=float(row["recall"]),
                    f1=float(row["f1"]),
                    support=int(row["support"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            return []  # a report of another shape: show none rather than part
    return sorted(rows, key=lambda r: r.f1)


def _confused(report: dict[str, Any]) -> list[dict[str, Any]]:
    pairs = [p for p in report.get("most_confused") or [] if isinstance(p, dict) and {"true", "predicted"} <= set(p)]
    return pairs[:CONFUSED_PAIRS]


def _tta_words(extra: dict[str, Any]) -> str:
    """What the exported test-time augmentation (manifest ``extra.tta``) averages, in words."""
    words = {0: "each image once", 1: "each image and its mirror image", 2: "each image, its mirror and shifted copies"}
    return words.get(extra.get("tta"), "each image as exported")


@lru_cache(maxsize=4)
def _card(manifest_path: str, mtime_ns: int) -> ModelCard:
    bundle = Path(manifest_path).parent
    manifest = read_manifest(bundle)
    report: dict[str, Any] = {}
    try:
        loaded = json.loads((bundle / REPORT_FILE).read_text())
        report = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        report = {}
    metrics = manifest.metrics or {}
    calibration = manifest.calibration or {}
    members = [m for m in manifest.members if isinstance(m, dict)]
    return ModelCard(
        version=manifest.version,
        created_at=_when(manifest.created_at),
        classes=[str(c) for c in manifest.classes],
        input_size=(int(manifest.input_size[0]), int(manifest.input_size[1])),
        members=len(members),
        architectures=sorted({str(m.get("arch", "?")) for m in members}),
        parameters=sum(int(m.get("params") or 0) for m in members),
        tta=_tta_words(manifest.extra or {}),
        accuracy=_number(metrics.get("accuracy")),
        top5=_number(metrics.get("top5")),
        macro_f1=_number(metrics.get("macro_f1")),
        evaluated_on=str(metrics.get("split") or ""),
        images=int(metrics["n"]) if isinstance(metrics.get("n"), int) else None,
        ece=_number(metrics.get("ece")),
        temperature=_number(calibration.get("temperature")),
        uncertain=manifest.uncertain if isinstance(manifest.uncertain, dict) else None,
        ood=manifest.ood if isinstance(manifest.ood, dict) else None,
        prediction_set=_prediction_set(manifest.prediction_set),
        per_class=_per_class(report),
        confused=_confused(report),
        figures=[f for f in FIGURES if figure_path(bundle, f.file).is_file()],
    )


def _prediction_set(entry: Any) -> dict[str, Any] | None:
    """The manifest's answer-set entry, with the range of its per-class thresholds for the page."""
    if not isinstance(entry, dict):
        return None
    values = [v for v in entry.get("thresholds") or [] if isinstance(v, int | float)]
    if not values and isinstance(entry.get("threshold"), int | float):
        values = [entry["threshold"]]
    return {**entry, "threshold_min": min(values, default=None), "threshold_max": max(values, default=None)}


def figure_path(bundle: Path, file: str) -> Path:
    return bundle / REPORT_FILE.parent / file


def model_card(bundle_dir: str | Path | None = None) -> ModelCard | None:
    """The card of the bundle at ``bundle_dir`` (default: ``settings.MODEL_BUNDLE``); None when it
    has no readable manifest (the page then says the model's description is unavailable)."""
    path = Path(bundle_dir or settings.MODEL_BUNDLE) / MANIFEST_NAME
    try:
        return _card(str(path), path.stat().st_mtime_ns)
    except (OSError, BundleError):
        return None
