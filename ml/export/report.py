"""The bundle's ``report/``: the check of the written module against the calibrated probabilities, the
evaluation of the whole validation split, the calibration report of the report half, the
headline metrics in the manifest and the lines the command prints."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.bundle_calibration import calibration_markdown, compare_precisions, pct
from ml.export.fit import Calibration
from ml.export.inputs import Inputs
from worker.runtime.bundle import Manifest, write_manifest

if TYPE_CHECKING:
    from ml.evaluate import Predictor


def bundle_metrics(result: dict[str, Any], data_desc: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers a manifest carries (the full report lies in report/)."""
    from ml.evaluate import describe_split

    top = next(k for k in result if k.startswith("top") and k[3:].isdigit())
    return {
        "accuracy": result["accuracy"],
        top: result[top],
        "macro_f1": result["macro_f1"],
        "ece": result["ece"],
        "nll": result["nll"],
        "n": result["n"],
        "split": describe_split(data_desc),
        "data": data_desc,
    }


def evaluate_written_bundle(
    out: Path, manifest: Manifest, inputs: Inputs, calibration: Calibration, args: argparse.Namespace
) -> tuple[Predictor, dict[str, Any], dict[str, Any]]:
    """(predictor, evaluation, precision rows) of the written bundle. Exits when the module does
    not give the probabilities the calibration was measured on."""
    from ml.evaluate import evaluate_probs, load_predictor

    dataset, cal = inputs.dataset, calibration.cal
    # the written bundle, through the loader the worker uses (checksum verified), must give the
    # probabilities the calibration was measured on
    predictor = load_predictor(out, args.device)
    check = slice(0, min(len(dataset), 500))
    written = predictor.predict(dataset.images[check], batch_size=args.batch_size)
    gap = float(np.abs(written - cal["probs"][check]).max()) if len(written) else 0.0
    if gap > 1e-4:
        raise SystemExit(f"the written module's probabilities differ from the calibrated ones by {gap:.2e}")
    probs = cal["probs"]
    precision_rows = compare_precisions(out, probs, dataset, args.device, args.batch_size, manifest.precisions)
    result = evaluate_probs(probs, dataset.labels, inputs.classes)
    return predictor, result, precision_rows


def write_evaluation(
    report_dir: Path,
    out: Path,
    manifest: Manifest,
    inputs: Inputs,
    calibration: Calibration,
    predictor: Predictor,
    result: dict[str, Any],
    *,
    level: int,
    title: str,
) -> None:
    """`ml.evaluate.write_report` of the whole validation split, with each member's training
    curves (its metrics.csv) where it has them."""
    from ml.evaluate import write_report

    dataset = inputs.dataset
    with tempfile.TemporaryDirectory() as tmp:
        curves = []
        for i, (path, _, _, csv_text) in enumerate(inputs.loaded):
            if csv_text:
                f = Path(tmp) / f"{i}.csv"
                f.write_text(csv_text)
                curves.append((Path(path).parent.name if Path(path).parent.name != "members" else Path(path).stem, f))
        write_report(
            report_dir,
            result,
            probs=calibration.cal["probs"],
            labels=dataset.labels,
            images=dataset.images,
            data=inputs.data_desc,
            model={"kind": "bundle", "path": str(out), **predictor.info},
            metrics_csvs=curves,
            title=title,
            tta=level >= 1,
            command=manifest.command,
            extra={"tta_level": level, "calibration": calibration.fields},
        )


def write_calibration_report(report_dir: Path, calibration: Calibration, data_desc: dict[str, Any]) -> None:
    """Reliability diagrams before and after the temperature, the OOD score histogram,
    calibration.md and calibration.json: on the report half only."""
    from ml import plots
    from ml.evaluate import describe_split

    cal, fields, temperature = calibration.cal, calibration.fields, calibration.temperature
    for key, fname, label in (
        ("before", "reliability_uncalibrated.png", "T = 1"),
        ("after", "reliability_calibrated.png", f"T = {temperature:.3f}"),
    ):
        c = cal[key]["report"]["calibration"]
        plots.reliability(
            c,
            report_dir / fname,
            title=f"{label}: ECE {100 * c['ece']:.2f}% (report half, {cal[key]['report']['n']} images)",
        )
    plots.score_histogram(
        {
            "validation (report half)": cal["ood_val"][cal["split"]["report"]],
            "generated non-CIFAR": cal["ood_generated"],
        },
        threshold=cal["ood"]["threshold"],
        path=report_dir / "ood_scores.png",
        xlabel="ood_score (mean energy)",
        title=f"OOD score: AUROC {cal['ood']['auroc']:.4f}",
    )
    (report_dir / "calibration.md").write_text(
        calibration_markdown(cal, describe_split(data_desc), fields["calibration"].get("by_tta_level"))
    )
    (report_dir / "calibration.json").write_text(json.dumps(fields, indent=2) + "\n")


def record_metrics(
    out: Path,
    manifest: Manifest,
    result: dict[str, Any],
    precision_rows: dict[str, Any],
    data_desc: dict[str, Any],
    report_dir: Path,
) -> None:
    """The headline metrics and the precision rows into the manifest (rewritten), and precision.json."""
    manifest.metrics = {**bundle_metrics(result, data_desc), "precisions": precision_rows}
    write_manifest(out, manifest)
    (report_dir / "precision.json").write_text(json.dumps(precision_rows, indent=2) + "\n")


def print_summary(
    result: dict[str, Any], precision_rows: dict[str, Any], calibration: Calibration, report_dir: Path, out: Path
) -> None:
    """The evaluation, each precision, the calibration and the thresholds, and where they were written."""
    from ml.evaluate import summary_line

    fields, temperature = calibration.fields, calibration.temperature
    print(summary_line(result))
    for p, row in precision_rows.items():
        print(
            f"{p}: accuracy {pct(row['accuracy'])}, ECE {pct(row['ece'])}, top-1 as fp32 on {pct(row['same_top1'])}, "
            f"largest probability difference {row['max_prob_diff']:.4f}"
        )
    b, a = fields["calibration"]["before"], fields["calibration"]["after"]
    print(
        f"temperature {temperature:.4f}: ECE {100 * b['ece']:.2f}% -> {100 * a['ece']:.2f}%, NLL {b['nll']:.4f} -> {a['nll']:.4f} (report half)"
    )
    u, o = fields["uncertain"], fields["ood"]
    print(
        f"uncertain below {u['threshold']:.4f}: {pct(u['share_flagged'])} flagged, kept {pct(u['accuracy_above'])} right, "
        f"flagged {pct(u['accuracy_below'])} right; OOD above {o['threshold']:.4f}: AUROC {o['auroc']:.4f}, "
        f"generated flagged {pct(o['generated_flagged'])}, validation flagged {pct(o['validation_flagged'])}"
    )
    if "prediction_set" in fields:
        ps = fields["prediction_set"]
        rule = "one threshold per class" if ps["classwise"] else f"probability >= {ps['threshold']:.4f}"
        print(
            f"prediction sets at {pct(ps['coverage'])} coverage: {rule}, "
            f"covered {pct(ps['measured_coverage'])}, mean size {ps['mean_size']:.3f} (report half)"
        )
    print(f"report: {report_dir}; metrics in {out / 'manifest.json'}")
