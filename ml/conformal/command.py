"""``python -m ml conformal BUNDLE [--coverage 0.95] [--classwise] [--precisions bf16,int8]``: fit an
exported bundle's answer sets from its report (``report/predictions.npz``) without exporting it
again, and measure the sets the worker computes in each precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ml.conformal import DEFAULT_COVERAGE, _check_coverage, evaluate, fit_and_report
from ml.conformal.report import _lowest, manifest_field, markdown

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
    bundle_dir: Path,
    manifest: Any,
    labels: np.ndarray,
    report: np.ndarray,
    thresholds: Any,
    precisions: list[str],
    levels: list[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """The sets as the worker computes them in each of ``precisions`` at the module's TTA level, and
    in fp32 at each of ``levels`` (the other TTA levels ``WORKER_TTA`` may switch to; the thresholds
    were fitted at the module's): the bundle predicts its validation split again through the
    runtime's loader on the CPU (the members' data spec; its labels must be those of the report),
    and each row's sets are measured on the report half."""
    import torch

    from ml.evaluate import load_eval_data
    from worker.runtime.bundle import load_bundle
    from worker.runtime.manifest import BundleError

    data, _ = load_eval_data((manifest.members or [{}])[0].get("data") or {}, "val")
    if not np.array_equal(np.asarray(data.labels), labels):
        raise BundleError("the validation split the members name is not the one in the report's predictions.npz")
    images = torch.from_numpy(data.images)
    rows = {}
    runs = [(p, None, p) for p in precisions] + [
        ("fp32", level, f"fp32 at TTA level {level}") for level in levels or []
    ]
    for precision, level, name in runs:
        bundle = load_bundle(bundle_dir, "cpu", precision=precision, tta=level)
        probs = torch.cat([bundle.predict(images[i : i + 500]) for i in range(0, len(images), 500)]).double().numpy()
        measured = evaluate(probs[report], labels[report], np.asarray(thresholds))
        rows[name] = {k: measured[k] for k in ("coverage", "mean_size")}
    return rows


def refit_bundle(
    bundle_dir: str | Path,
    coverage: float = DEFAULT_COVERAGE,
    precisions: list[str] | None = None,
    *,
    classwise: bool = False,
    levels: list[int] | None = None,
) -> dict[str, Any]:
    """Fit the prediction sets of an exported bundle from its report (``report/predictions.npz``:
    the module's calibrated probabilities on the validation split, as export measured them) on the
    fit half its calibration used, measure them on the report half, and write the manifest's
    ``prediction_set`` and the report's calibration.json and calibration.md. The module is not
    touched: a set is the runtime's reading of the probabilities it already returns.
    ``classwise``: one threshold per class (`fit_thresholds`). ``precisions`` (e.g. ``["bf16", "int8"]``): also measure the sets the worker computes in those
    (`check_precisions`; the probabilities differ a little from fp32's); ``levels``: and in fp32 at
    those TTA levels."""
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
    if precisions or levels:
        entry["by_precision"] = check_precisions(
            bundle_dir, manifest, labels, rep, entry["thresholds"], precisions or [], levels
        )
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


def _levels(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--tta-levels takes comma-separated whole numbers such as 0,2, not {text!r}") from None


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
    parser.add_argument(
        "--tta-levels",
        default="",
        help="comma-separated, e.g. 0,2: also measure the sets at these TTA levels (fp32), which WORKER_TTA may "
        "switch the worker to (the thresholds are fitted at the module's own level)",
    )
    args = parser.parse_args(argv)
    from worker.runtime.manifest import BundleError

    try:
        _check_coverage(args.coverage)
        entry = refit_bundle(
            args.bundle,
            args.coverage,
            [p for p in args.precisions.split(",") if p],
            classwise=args.classwise,
            levels=_levels(args.tta_levels),
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
