"""Everything that reads the evaluation rows: feedback, live evaluation of a version, champion
against challenger, drift without labels and the operations figures. Aggregates run in the
database (one GROUP BY per table); only the operations durations are fetched row by row (capped)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, F, Q
from django.db.models.functions import Floor, TruncDate
from django.utils import timezone

from classifier.errors import NotFoundError
from classifier.evaluation import stats
from classifier.evaluation.models import Feedback, ModelVersion, ShadowPrediction
from classifier.models import Classification

Status = Classification.Status
MOST_CORRECTED = 5
OPERATIONS_MAX_ROWS = 200_000  # durations fetched for the percentiles (the newest rows in the window)
FAILURE_REASONS = 10


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


# ----------------------------------------------------------------------------- live evaluation
def _feedback_rows(version: ModelVersion) -> list[tuple[str, str, bool]]:
    """(predicted, true label or "", correct) for each feedback on the version's classifications."""
    return list(
        Feedback.objects.filter(classification__bundle_version=version).values_list(
            "classification__top_label", "label", "correct"
        )
    )


def live_evaluation(*, version: ModelVersion) -> dict[str, Any]:
    """Accuracy on feedback (95% Wilson interval), per-class precision/recall and the confusion
    matrix on feedback that names the true class, the most-corrected predicted classes, and the
    offline report's numbers beside them."""
    rows = _feedback_rows(version)
    n = len(rows)
    right = sum(1 for _, _, correct in rows if correct)
    classes = list(version.classes)
    labelled = [(true, predicted) for predicted, true, _ in rows if true]
    metrics = stats.classification_metrics(labelled, classes)
    offline = version.offline or {}
    offline_per_class = {row.get("class"): row for row in offline.get("per_class", []) if isinstance(row, dict)}
    per_class = [
        {
            **row,
            "offline_precision": offline_per_class.get(row["class"], {}).get("precision"),
            "offline_recall": offline_per_class.get(row["class"], {}).get("recall"),
        }
        for row in metrics.per_class
    ]
    wrong_by_class: dict[str, list[int]] = {}
    for predicted, _, correct in rows:
        counts = wrong_by_class.setdefault(predicted, [0, 0])
        counts[0] += not correct
        counts[1] += 1
    most_corrected = sorted(
        (
            {"class": c, "corrected": wrong, "feedback": total, "rate": wrong / total}
            for c, (wrong, total) in wrong_by_class.items()
            if wrong
        ),
        key=lambda r: (-r["corrected"], -r["rate"], r["class"]),
    )[:MOST_CORRECTED]
    return {
        "n": n,
        "correct": right,
        "accuracy": right / n if n else None,
        "interval": stats.wilson_interval(right, n),
        "labelled": len(labelled),
        "classes": classes,
        "confusion": metrics.confusion,
        "per_class": per_class,
        "most_corrected": most_corrected,
        "offline_accuracy": offline.get("accuracy", version.metrics.get("accuracy")),
        "offline_n": offline.get("n"),
    }


def champion_vs_challenger(*, champion: ModelVersion, challenger: ModelVersion) -> dict[str, Any]:
    """Both versions on the same feedback: jobs the champion answered, the challenger shadowed and
    the user labelled (feedback that only says "wrong" names no true class, so it is left out)."""
    pairs = list(
        ShadowPrediction.objects.filter(
            model_version=challenger,
            classification__bundle_version=champion,
            classification__feedback__isnull=False,
        )
        .exclude(classification__feedback__label="")
        .values_list("classification__top_label", "top_label", "classification__feedback__label")
    )
    champion_right = [a == truth for a, _, truth in pairs]
    challenger_right = [b == truth for _, b, truth in pairs]
    test = stats.mcnemar_exact(champion_right, challenger_right)
    n = len(pairs)
    return {
        "n": n,
        "champion": champion,
        "challenger": challenger,
        "champion_accuracy": sum(champion_right) / n if n else None,
        "challenger_accuracy": sum(challenger_right) / n if n else None,
        "champion_interval": stats.wilson_interval(sum(champion_right), n),
        "challenger_interval": stats.wilson_interval(sum(challenger_right), n),
        "test": test,
        "shadowed": ShadowPrediction.objects.filter(
            model_version=challenger, classification__bundle_version=champion
        ).count(),
    }


# ----------------------------------------------------------------------------- drift
def _window(days: int) -> tuple[date, datetime]:
    """The first day of the last ``days`` days (today included) and the moment it began."""
    days = max(1, min(int(days), 366))
    start = timezone.localdate() - timedelta(days=days - 1)
    return start, timezone.make_aware(datetime.combine(start, time.min))


def drift(*, version: ModelVersion, days: int = 30) -> dict[str, Any]:
    """Per day (by finish time): the predicted-class mix and the confidence of the version's
    answers against its offline validation set, with PSI, chi-square and a warning flag.

    Without an offline reference (no report.json) the mix and confidence are listed unflagged.
    """
    start, since = _window(days)
    classes = list(version.classes)
    index = {c: i for i, c in enumerate(classes)}
    offline = version.offline or {}
    reference = offline.get("predicted_distribution")
    reference = reference if isinstance(reference, list) and len(reference) == len(classes) else None
    ref_conf = offline.get("mean_confidence")
    bins = offline.get("confidence_bins") or []
    nbins = len(bins)
    uniform_bins = nbins > 0 and all(abs(b["lower"] - i / nbins) < 1e-6 for i, b in enumerate(bins))

    done = Classification.objects.filter(bundle_version=version, status=Status.DONE, finished_at__gte=since)
    done = done.annotate(day=TruncDate("finished_at"))
    per_day: dict[date, dict[str, Any]] = {}
    for row in done.values("day", "top_label").annotate(n=Count("id")):
        day = per_day.setdefault(row["day"], {"counts": [0] * len(classes), "other": 0})
        if row["top_label"] in index:
            day["counts"][index[row["top_label"]]] += row["n"]
        else:
            day["other"] += row["n"]
    for row in done.values("day").annotate(mean=Avg("top_probability"), n=Count("id")):
        per_day.setdefault(row["day"], {"counts": [0] * len(classes), "other": 0})["mean_confidence"] = row["mean"]
    if uniform_bins:
        binned = done.annotate(bin=Floor(F("top_probability") * nbins)).values("day", "bin").annotate(n=Count("id"))
        for row in binned:
            hist = per_day[row["day"]].setdefault("confidence_hist", [0] * nbins)
            hist[min(max(int(row["bin"] or 0), 0), nbins - 1)] += row["n"]

    threshold = settings.DRIFT_PSI_THRESHOLD
    delta = settings.DRIFT_CONFIDENCE_DELTA
    minimum = settings.DRIFT_MIN_PREDICTIONS
    out = []
    for day in sorted(per_day):
        d = per_day[day]
        n = sum(d["counts"]) + d["other"]
        row: dict[str, Any] = {
            "day": day,
            "n": n,
            "counts": d["counts"],
            "shares": [c / n if n else 0.0 for c in d["counts"]],
            "mean_confidence": d.get("mean_confidence"),
            "psi": None,
            "chi2": None,
            "confidence_psi": None,
            "reasons": [],
        }
        if reference is not None and sum(d["counts"]):
            row["psi"] = stats.psi(d["counts"], reference)
            row["chi2"] = stats.chi_square_gof(d["counts"], reference)
        if uniform_bins and d.get("confidence_hist"):
            row["confidence_psi"] = stats.psi(d["confidence_hist"], [b["count"] for b in bins])
        if n >= minimum:
            if row["psi"] is not None and row["psi"] >= threshold:
                row["reasons"].append(f"class mix PSI {row['psi']:.3f} >= {threshold:g}")
            if row["confidence_psi"] is not None and row["confidence_psi"] >= threshold:
                row["reasons"].append(f"confidence PSI {row['confidence_psi']:.3f} >= {threshold:g}")
            if ref_conf is not None and row["mean_confidence"] is not None:
                moved = row["mean_confidence"] - ref_conf
                if abs(moved) > delta:
                    row["reasons"].append(f"mean confidence moved {moved:+.3f} (limit ±{delta:g})")
        row["drift"] = bool(row["reasons"])
        out.append(row)
    return {
        "start": start,
        "days": out,
        "classes": classes,
        "reference": reference,
        "reference_confidence": ref_conf,
        "has_reference": reference is not None,
        "warnings": [r for r in out if r["drift"]],
        "threshold": threshold,
        "confidence_delta": delta,
        "min_predictions": minimum,
    }


# ----------------------------------------------------------------------------- operations
def operations(*, days: int = 14) -> dict[str, Any]:
    """Uploads per day, queue and inference time percentiles, failure rate and reasons, and the
    class mix of the predictions, over the last ``days`` days (by upload time)."""
    start, since = _window(days)
    jobs = Classification.objects.filter(created_at__gte=since)
    per_day: dict[date, dict[str, Any]] = {}
    counted = jobs.annotate(day=TruncDate("created_at")).values("day")
    for row in counted.annotate(
        uploads=Count("id"),
        done=Count("id", filter=Q(status=Status.DONE)),
        failed=Count("id", filter=Q(status=Status.FAILED)),
    ):
        per_day[row["day"]] = {**row, "queue": [], "inference": []}
    durations = (
        jobs.filter(started_at__isnull=False)
        .order_by("-created_at")
        .values_list("created_at", "started_at", "finished_at")[:OPERATIONS_MAX_ROWS]
    )
    queue_all: list[float] = []
    inference_all: list[float] = []
    for created, started, finished in durations.iterator(chunk_size=5000):
        day = per_day.get(timezone.localdate(created))
        queued = (started - created).total_seconds()
        queue_all.append(queued)
        if day is not None:
            day["queue"].append(queued)
        if finished is not None and finished >= started:
            ran = (finished - started).total_seconds()
            inference_all.append(ran)
            if day is not None:
                day["inference"].append(ran)
    rows = []
    for day in sorted(per_day):
        d = per_day[day]
        finished = d["done"] + d["failed"]
        rows.append(
            {
                "day": day,
                "uploads": d["uploads"],
                "done": d["done"],
                "failed": d["failed"],
                "failure_rate": d["failed"] / finished if finished else None,
                "queue": stats.percentiles(d["queue"]),
                "inference": stats.percentiles(d["inference"]),
            }
        )
    totals = jobs.aggregate(
        uploads=Count("id"),
        done=Count("id", filter=Q(status=Status.DONE)),
        failed=Count("id", filter=Q(status=Status.FAILED)),
    )
    finished = totals["done"] + totals["failed"]
    reasons = list(
        jobs.filter(status=Status.FAILED)
        .values("error")
        .annotate(n=Count("id"))
        .order_by("-n", "error")[:FAILURE_REASONS]
    )
    classes = list(
        jobs.filter(status=Status.DONE).values("top_label").annotate(n=Count("id")).order_by("-n", "top_label")
    )
    return {
        "start": start,
        "days": rows,
        "totals": {**totals, "failure_rate": totals["failed"] / finished if finished else None},
        "queue": stats.percentiles(queue_all),
        "inference": stats.percentiles(inference_all),
        "reasons": reasons,
        "classes": classes,
        "durations_capped": len(queue_all) >= OPERATIONS_MAX_ROWS,
    }
