"""Per-day figures over the last few days of jobs, without labels: drift of a version's answers
against its offline validation set, and the operations figures (uploads, queue and inference
times, failures). Aggregates run in the database (one GROUP BY per table); only the operations
durations are fetched row by row (capped)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, F, Q
from django.db.models.functions import Floor, TruncDate
from django.utils import timezone

from classifier.evaluation import stats
from classifier.evaluation.models import ModelVersion
from classifier.models import Classification

Status = Classification.Status
OPERATIONS_MAX_ROWS = 200_000  # durations fetched for the percentiles (the newest rows in the window)
FAILURE_REASONS = 10


def _window(days: int) -> tuple[date, datetime]:
    """The first day of the last ``days`` days (today included) and the moment it began."""
    days = max(1, min(int(days), 366))
    start = timezone.localdate() - timedelta(days=days - 1)
    return start, timezone.make_aware(datetime.combine(start, time.min))


# ----------------------------------------------------------------------------- drift
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
