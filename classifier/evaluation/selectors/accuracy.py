"""Accuracy on the users' feedback: the live evaluation of one version (with how often its answer
sets held the true class), and champion against challenger on the same labelled jobs. One query
fetches the (predicted, label) pairs; `stats` counts them."""

from __future__ import annotations

from typing import Any

from classifier.evaluation import stats
from classifier.evaluation.models import Feedback, ModelVersion, ShadowPrediction

MOST_CORRECTED = 5


def _feedback_rows(version: ModelVersion) -> list[tuple[str, str, bool]]:
    """(predicted, true label or "", correct) for each feedback on the version's classifications."""
    return list(
        Feedback.objects.filter(classification__bundle_version=version).values_list(
            "classification__top_label", "label", "correct"
        )
    )


def live_answer_sets(*, version: ModelVersion) -> dict[str, Any] | None:
    """How often the answer sets held the true class on the users' feedback (the guarantee checked on
    live images: well below the coverage the sets were fitted for means the live images are not like
    the held-out ones). Counts the feedback whose true class is known (a "right" answer, or a
    correction naming the class) on jobs that have a set; None when the version's jobs have none."""
    rows = Feedback.objects.filter(
        classification__bundle_version=version, classification__explanation__prediction_set__isnull=False
    ).values_list(
        "correct",
        "label",
        "classification__top_label",
        "classification__explanation__prediction_set",
        "classification__explanation__prediction_set_coverage",
    )
    known = [
        (true, labels, coverage)
        for correct, label, top, labels, coverage in rows
        if isinstance(labels, list) and labels and (true := label or (top if correct else ""))
    ]
    if not known:
        return None
    n = len(known)
    covered = sum(1 for true, labels, _ in known if true in labels)
    targets = sorted({coverage for _, _, coverage in known if coverage is not None})
    return {
        "n": n,
        "covered": covered,
        "coverage": covered / n,
        "interval": stats.wilson_interval(covered, n),
        "target": targets[-1] if targets else None,  # one value, unless the version's sets were refitted
        "mean_size": sum(len(labels) for _, labels, _ in known) / n,
    }


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
        "answer_sets": live_answer_sets(version=version),
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
