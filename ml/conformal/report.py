"""The answer sets' manifest entry (``prediction_set``: what the runtime, the API and the model page
read) and their section of the bundle's calibration.md, from a `ml.conformal.fit_and_report` result."""

from __future__ import annotations

from typing import Any


def _lowest(by_class: list[float | None], classes: list[str]) -> dict[str, Any] | None:
    rows = [(c, name) for c, name in zip(by_class, classes, strict=False) if c is not None]
    if not rows:
        return None
    coverage, name = min(rows)
    return {"class": name, "coverage": coverage}


def manifest_field(entry: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """The manifest's ``prediction_set`` entry (what the runtime, the API and the model page read):
    ``thresholds`` one per class in the manifest's class order; ``threshold`` their common value
    when the sets are marginal (None when class-wise)."""
    rep, thresholds = entry["report"], entry["thresholds"]
    level = f"{100 * entry['coverage']:g}%"
    if entry["classwise"]:
        rule = (
            "the set holds every class whose calibrated probability is at least that class's threshold (and always "
            "the top class); each class's threshold is fitted on the fit half's images of that class so that, for "
            f"the images of every class, the true class is in the set for at least {level} of them"
        )
    else:
        rule = (
            "the set holds every class whose calibrated probability is at least the threshold (and always the top "
            "class); the threshold is fitted on the fit half of the validation images so that the true class is in "
            f"the set for at least {level} of images like them"
        )
    return {
        "method": "split conformal prediction, LAC score 1 - p(class) on the calibrated probabilities"
        + (", one threshold per class (class-conditional)" if entry["classwise"] else ""),
        "coverage": entry["coverage"],
        "classwise": entry["classwise"],
        "threshold": None if entry["classwise"] else thresholds[0],
        "thresholds": thresholds,
        "meaning": rule,
        "fitted_on": "fit half of the validation images",
        "n_fit": entry["fit"]["n"],
        "measured_coverage": rep["coverage"],
        "mean_size": rep["mean_size"],
        "by_size": rep["by_size"],
        "by_class": dict(zip(classes, rep["by_class"], strict=True)),
        "lowest_class": _lowest(rep["by_class"], classes),
        "measured_on": "report half of the validation images",
        **({"by_precision": entry["by_precision"]} if entry.get("by_precision") else {}),
    }


def markdown(entry: dict[str, Any], classes: list[str]) -> list[str]:
    """The report section (calibration.md) of a ``fit_and_report`` result."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    thresholds = entry["thresholds"]
    level = f"{100 * entry['coverage']:g}%"
    if entry["classwise"]:
        head = f"## Prediction sets: {level} coverage for every class, one threshold per class"
        rule = (
            "one threshold per class, each fitted on the fit half's images of its class (class-conditional), so that "
            f"the true class is in an image's set for at least {level} of the images of every class; a set holds every "
            "class at or above its own threshold, and always the top class."
        )
    else:
        head = f"## Prediction sets: {level} coverage, probability >= {thresholds[0]:.4f}"
        rule = (
            f"the threshold is fitted on the fit half ({entry['fit']['n']} images) so that the true class is in an "
            f"image's set for at least {level} of such images; a set holds every class at or above the threshold, "
            "and always the top class."
        )
    lines = [
        head,
        "",
        "Split conformal prediction with the LAC score (1 - the calibrated probability of the true class): " + rule,
        "",
        "| half | coverage | mean size | one class | two | three or more | coverage of one-class sets |",
        "|---|---|---|---|---|---|---|",
    ]
    for half in ("fit", "report"):
        r = entry[half]
        b = r["by_size"]
        lines.append(
            f"| {half} | {pct(r['coverage'])} | {r['mean_size']:.3f} | {pct(b['1']['share'])} | "
            f"{pct(b['2']['share'])} | {pct(b['3+']['share'])} | {pct(b['1']['coverage'])} |"
        )
    lines += [
        "",
        "Coverage by true class (report half)" + (" and each class's threshold:" if entry["classwise"] else ":"),
        "",
        "| class | coverage |" + (" threshold |" if entry["classwise"] else ""),
        "|---|---|" + ("---|" if entry["classwise"] else ""),
    ]
    for k, name in enumerate(classes):
        row = f"| {name} | {pct(entry['report']['by_class'][k])} |"
        lines.append(row + (f" {thresholds[k]:.4f} |" if entry["classwise"] else ""))
    if entry.get("by_precision"):
        lines += [
            "",
            "The same thresholds on the probabilities the worker computes in each precision, and at the other TTA "
            "levels `WORKER_TTA` may switch to (report half):",
            "",
            "| run | coverage | mean size |",
            "|---|---|---|",
        ]
        lines += [f"| {p} | {pct(r['coverage'])} | {r['mean_size']:.3f} |" for p, r in entry["by_precision"].items()]
    return lines
