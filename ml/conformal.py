"""Prediction sets with a coverage guarantee: split conformal prediction with the LAC score.

A single answer hides how close the runner-up was. A prediction set names every class the model
cannot rule out at a chosen coverage: with coverage 0.95, the true class is in the set for at least
95% of images like the held-out ones (in expectation over the choice of the held-out images; Vovk
et al. 2005, Angelopoulos & Bates 2021). One class means the model is sure at that level; "cat or
dog" says which classes it hesitates between.

The score is LAC (Sadinle, Lei & Wasserman 2019): s = 1 - p(true class), on the calibrated
probabilities the module returns. On ``n`` held-out images the threshold is the
⌈(n + 1)·coverage⌉-th smallest score q; an image's set is every class with 1 - p <= q, that is
p >= 1 - q. When the probabilities are right, LAC's sets are the smallest on average for the
coverage (Sadinle et al.). One change of ours: a set is never empty (LAC's can be, when every
class is below the threshold); the top class is then its only member, which can only raise the
coverage.

Marginal or class-wise. One threshold for all classes (marginal) guarantees the coverage over all
images together, and hard classes pay for easy ones: on the shipped bundle's held-out images, the
95% sets held the right class for 88% of the birds and 99% of the ships. Class-wise (Sadinle et
al., section 4.3; Vovk's label-conditional, "Mondrian" conformal prediction) fits one threshold per
class on the held-out images of that class, so the guarantee holds for the images of each class:
class k is in a set when p_k >= its own threshold. It needs at least coverage / (1 - coverage)
held-out images of every class (19 at 95%), and the sets are a little larger.

The marginal results match MAPIE's ``SplitConformalClassifier(conformity_score="lac")`` (tests/
ml/test_conformal.py); this module keeps to numpy so that export and the runtime need no more
packages.

- ``fit_threshold(probs, labels, coverage)``: the marginal threshold on p, fitted on held-out images
- ``fit_thresholds(probs, labels, coverage, classwise)``: one threshold per class (all equal when marginal)
- ``prediction_sets(probs, thresholds)``: the N x C membership mask
- ``evaluate(probs, labels, thresholds)``: coverage, sizes, coverage by set size and by true class
- ``fit_and_report(probs, labels, fit, report, coverage, classwise)``: fit on one half, measure on the other
- ``manifest_field(entry, classes)`` and ``markdown(entry, classes)``: the bundle's manifest entry and
  its report section
- ``refit_bundle(bundle_dir, coverage, classwise=...)`` (``python -m ml conformal BUNDLE --coverage
  0.95 --classwise``): the sets of an exported bundle, fitted from its report without exporting it again
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_COVERAGE = 0.95


def _check_coverage(coverage: float) -> float:
    coverage = float(coverage)
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be between 0 and 1 (exclusive), got {coverage}")
    return coverage


def fit_threshold(probs: np.ndarray, labels: np.ndarray, coverage: float = DEFAULT_COVERAGE) -> float:
    """The smallest probability a class needs to be in the set: 1 - q, q the ⌈(n + 1)·coverage⌉-th
    smallest LAC score 1 - p(true class) of the ``n`` held-out images. 0.0 (every class) when ``n``
    is too small for the coverage asked (fewer than coverage / (1 - coverage) images)."""
    coverage = _check_coverage(coverage)
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"expected N x C probabilities and N labels, got {probs.shape} and {labels.shape}")
    n = len(labels)
    if n == 0:
        raise ValueError("fitting a prediction set needs labelled images")
    scores = np.sort(1.0 - probs[np.arange(n), labels])
    k = math.ceil((n + 1) * coverage)
    if k > n:
        return 0.0
    return float(1.0 - scores[k - 1])


def fit_thresholds(
    probs: np.ndarray, labels: np.ndarray, coverage: float = DEFAULT_COVERAGE, classwise: bool = False
) -> np.ndarray:
    """C thresholds, one per class: the marginal `fit_threshold` for all of them, or (``classwise``)
    each class's own, fitted on the held-out images of that class. Refuses (ValueError) a class-wise
    fit where a class has too few images for the coverage: its threshold would be 0, the class in
    every set."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    classes = probs.shape[1] if probs.ndim == 2 else 0
    if not classwise:
        return np.full(classes, fit_threshold(probs, labels, coverage))
    coverage = _check_coverage(coverage)
    need = math.ceil(coverage / (1 - coverage) - 1e-9)
    counts = np.bincount(labels, minlength=classes) if len(labels) else np.zeros(classes, dtype=int)
    short = [k for k in range(classes) if counts[k] < need]
    if short:
        raise ValueError(
            f"class-wise sets at {100 * coverage:g}% need at least {need} held-out images of every class; "
            f"{len(short)} class(es) have fewer (class {short[0]}: {counts[short[0]]}); use marginal sets "
            "or a lower coverage"
        )
    return np.array([fit_threshold(probs[labels == k], labels[labels == k], coverage) for k in range(classes)])


def prediction_sets(probs: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """N x C bool: the classes whose probability is at least their threshold (one for all, or one per
    class), and always each image's top class."""
    probs = np.asarray(probs, dtype=np.float64)
    sets = (1.0 - probs) <= (1.0 - np.asarray(thresholds, dtype=np.float64))  # LAC's rule in score space, as fitted
    sets[np.arange(len(probs)), probs.argmax(axis=1)] = True
    return sets


def labels_in_set(probs: Any, thresholds: float | Any, classes: list[str]) -> list[str]:
    """One image's set as class names, most probable first (``probs``: its C probabilities)."""
    p = np.asarray(probs, dtype=np.float64)
    [mask] = prediction_sets(p[None, :], thresholds)
    return [classes[j] for j in np.argsort(-p, kind="stable") if mask[j]]


def evaluate(probs: np.ndarray, labels: np.ndarray, thresholds: float | np.ndarray) -> dict[str, Any]:
    """Coverage (share of images whose true class is in their set), mean set size, the share of
    each size (1, 2, 3 or more) with the coverage within each, and the coverage of each true class
    (None for a class without images)."""
    labels = np.asarray(labels)
    sets = prediction_sets(probs, thresholds)
    n = len(labels)
    covered = sets[np.arange(n), labels]
    sizes = sets.sum(axis=1)
    by_size = {}
    for name, rows in (("1", sizes == 1), ("2", sizes == 2), ("3+", sizes >= 3)):
        by_size[name] = {
            "share": float(rows.mean()) if n else 0.0,
            "coverage": float(covered[rows].mean()) if rows.any() else None,
        }
    by_class = [float(covered[labels == k].mean()) if (labels == k).any() else None for k in range(sets.shape[1])]
    return {
        "n": int(n),
        "coverage": float(covered.mean()) if n else 0.0,
        "mean_size": float(sizes.mean()) if n else 0.0,
        "by_size": by_size,
        "by_class": by_class,
    }


def fit_and_report(
    probs: np.ndarray,
    labels: np.ndarray,
    fit: np.ndarray,
    report: np.ndarray,
    coverage: float = DEFAULT_COVERAGE,
    classwise: bool = False,
) -> dict[str, Any]:
    """Fit the thresholds on the images ``fit`` and measure them on both halves."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    thresholds = fit_thresholds(probs[fit], labels[fit], coverage, classwise)
    return {
        "coverage": _check_coverage(coverage),
        "classwise": bool(classwise),
        "thresholds": [float(t) for t in thresholds],
        "fit": evaluate(probs[fit], labels[fit], thresholds),
        "report": evaluate(probs[report], labels[report], thresholds),
    }


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
            "The same thresholds on the probabilities the worker computes in each precision (report half):",
            "",
            "| precision | coverage | mean size |",
            "|---|---|---|",
        ]
        lines += [f"| {p} | {pct(r['coverage'])} | {r['mean_size']:.3f} |" for p, r in entry["by_precision"].items()]
    return lines


# ----------------------------------------------------------------------------- python -m ml conformal
SECTION = "## Prediction sets"
NEXT_SECTION = "## Out of distribution"


def _replace_section(text: str, section: list[str]) -> str:
    """calibration.md with its prediction-set section replaced (or put before the OOD section, or
    at the end, when it has none)."""
    lines = text.rstrip("\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(SECTION)), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = [*section, ""] if end < len(lines) else section
    else:
        at = next((i for i, line in enumerate(lines) if line.startswith(NEXT_SECTION)), None)
        if at is None:
            lines += ["", *section]
        else:
            lines[at:at] = [*section, ""]
    return "\n".join(lines) + "\n"


def check_precisions(
    bundle_dir: Path, manifest: Any, labels: np.ndarray, report: np.ndarray, thresholds: Any, precisions: list[str]
) -> dict[str, dict[str, Any]]:
    """The sets as the worker computes them in each of ``precisions`` (the runtime's loader, on the
    CPU): the bundle predicts its validation split again (the members' data spec; its labels must
    be those of the report) and each precision's sets are measured on the report half."""
    from ml.evaluate import load_eval_data, load_predictor
    from worker.runtime.manifest import BundleError

    data, _ = load_eval_data((manifest.members or [{}])[0].get("data") or {}, "val")
    if not np.array_equal(np.asarray(data.labels), labels):
        raise BundleError("the validation split the members name is not the one in the report's predictions.npz")
    rows = {}
    for precision in precisions:
        probs = load_predictor(bundle_dir, "cpu", precision).predict(data.images, 500)
        measured = evaluate(probs[report], labels[report], np.asarray(thresholds))
        rows[precision] = {k: measured[k] for k in ("coverage", "mean_size")}
    return rows


def refit_bundle(
    bundle_dir: str | Path,
    coverage: float = DEFAULT_COVERAGE,
    precisions: list[str] | None = None,
    *,
    classwise: bool = False,
) -> dict[str, Any]:
    """Fit the prediction sets of an exported bundle from its report (``report/predictions.npz``:
    the module's calibrated probabilities on the validation split, as export measured them) on the
    fit half its calibration used, measure them on the report half, and write the manifest's
    ``prediction_set`` and the report's calibration.json and calibration.md. The module is not
    touched: a set is the runtime's reading of the probabilities it already returns.
    ``classwise``: one threshold per class (`fit_thresholds`). ``precisions`` (e.g. ``["bf16", "int8"]``): also measure the sets the worker computes in those
    (`check_precisions`; the probabilities differ a little from fp32's)."""
    import json

    from ml.calibration import half_split
    from worker.runtime.manifest import BundleError, read_manifest, write_manifest

    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    report = bundle_dir / "report"
    npz = report / "predictions.npz"
    if not npz.is_file():
        raise BundleError(f"{npz} is missing: export the bundle with its report (without --no-report) first")
    with np.load(npz) as data:
        probs, labels = data["probs"], data["labels"]
    if probs.shape != (len(labels), len(manifest.classes)):
        raise BundleError(
            f"{npz}: probabilities {probs.shape} do not fit {len(labels)} labels and {len(manifest.classes)} classes"
        )
    seed = int(((manifest.calibration or {}).get("fit_on") or {}).get("seed", 0))
    fit, rep = half_split(labels, seed)
    entry = fit_and_report(probs, labels, fit, rep, coverage, classwise)
    if precisions:
        entry["by_precision"] = check_precisions(bundle_dir, manifest, labels, rep, entry["thresholds"], precisions)
    manifest.prediction_set = manifest_field(entry, manifest.classes)
    write_manifest(bundle_dir, manifest)
    cal_json = report / "calibration.json"
    if cal_json.is_file():
        fields = json.loads(cal_json.read_text())
        fields["prediction_set"] = manifest.prediction_set
        cal_json.write_text(json.dumps(fields, indent=2) + "\n")
    cal_md = report / "calibration.md"
    if cal_md.is_file():
        cal_md.write_text(_replace_section(cal_md.read_text(), markdown(entry, manifest.classes)))
    return entry


def read_manifest_classes(bundle_dir: str | Path) -> list[str]:
    from worker.runtime.manifest import read_manifest

    return read_manifest(bundle_dir).classes


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ml conformal",
        description="Fit an exported bundle's prediction sets (split conformal prediction, LAC) from its report, "
        "without exporting it again: writes the manifest's prediction_set and the report's calibration files.",
    )
    parser.add_argument("bundle", help="the bundle folder (with report/predictions.npz)")
    parser.add_argument(
        "--coverage",
        type=float,
        default=DEFAULT_COVERAGE,
        help=f"the true class is in an image's set for at least this share of images (default {DEFAULT_COVERAGE})",
    )
    parser.add_argument(
        "--classwise",
        action="store_true",
        help="one threshold per class, fitted on the held-out images of that class: the coverage holds for the "
        "images of every class, not only for all of them together (needs coverage / (1 - coverage) images per class)",
    )
    parser.add_argument(
        "--precisions",
        default="",
        help="comma-separated, e.g. bf16,int8: also predict the validation split in these precisions, as the worker "
        "runs the bundle, and measure their sets (needs the training data the members name)",
    )
    args = parser.parse_args(argv)
    from worker.runtime.manifest import BundleError

    try:
        _check_coverage(args.coverage)
        entry = refit_bundle(
            args.bundle, args.coverage, [p for p in args.precisions.split(",") if p], classwise=args.classwise
        )
    except (ValueError, BundleError) as exc:
        parser.error(str(exc))
    rep, fit, thresholds = entry["report"], entry["fit"], entry["thresholds"]
    rule = (
        f"one threshold per class, {min(thresholds):.4f} to {max(thresholds):.4f}"
        if entry["classwise"]
        else f"classes with probability >= {thresholds[0]:.4f}"
    )
    lowest = _lowest(rep["by_class"], read_manifest_classes(args.bundle))
    print(
        f"prediction sets at {100 * entry['coverage']:g}% coverage: {rule} (fitted on {fit['n']} images); "
        f"report half ({rep['n']} images): covered {100 * rep['coverage']:.2f}%, mean size {rep['mean_size']:.3f}, "
        f"one class {100 * rep['by_size']['1']['share']:.1f}%"
        + (f"; lowest class {lowest['class']} {100 * lowest['coverage']:.1f}%" if lowest else "")
    )
    for precision, row in (entry.get("by_precision") or {}).items():
        print(f"  in {precision}: covered {100 * row['coverage']:.2f}%, mean size {row['mean_size']:.3f}")
    print(f"written: {Path(args.bundle) / 'manifest.json'} and the report's calibration.json / calibration.md")
