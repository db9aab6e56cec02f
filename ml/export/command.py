"""``python -m ml export``: the command as steps, top to bottom (the manual is the package docstring).

Order matters for what a failure leaves behind: every usage error (arguments, checkpoints, data)
comes before anything is written; an existing ``report/`` is moved aside before the bundle folder
is replaced and its files not rewritten are put back after the new report (`_restore`). A failure
in between (calibration, scripting, the check of the written module) leaves the old report in the
``report-*/`` folder beside the bundle: nothing rolls the bundle folder back."""

from __future__ import annotations

import argparse
import shlex
from datetime import UTC, datetime
from pathlib import Path

import torch

from ml.export.bundle import export_bundle, save_members
from ml.export.fit import Calibration, calibrate_on_validation
from ml.export.inputs import Inputs, load_inputs, parse_arguments, warn_about_data_splits
from ml.export.report import (
    _restore,
    evaluate_written_bundle,
    move_report_aside,
    print_summary,
    record_metrics,
    write_calibration_report,
    write_evaluation,
)
from worker.runtime.bundle import Manifest


@torch.inference_mode()
def main(argv: list[str]) -> None:
    # ---------------------------------------------------------------- arguments, members, data
    parser, args = parse_arguments(argv)
    level = 1 if args.flip_tta else (args.tta or 0)
    out = Path(args.out)
    try:
        inputs = load_inputs(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        parser.error(str(exc))
    warn_about_data_splits(inputs.members, inputs.spec)

    name = args.name or out.resolve().name
    version = args.version or f"{name}-{datetime.now(UTC):%Y.%m.%d-%H%M}"
    command = shlex.join(["python", "-m", "ml", "export", *argv])
    report_aside = move_report_aside(out)

    # ---------------------------------------------------------------- calibration and thresholds
    calibration = Calibration() if args.no_report else calibrate_on_validation(inputs, level, args)

    # ---------------------------------------------------------------- the module and its manifest
    manifest = write_bundle(out, inputs, calibration, args, level=level, name=name, version=version, command=command)
    params = sum(info["params"] for _, info in inputs.members)
    print(f"wrote {out}: {len(inputs.members)} member(s), {params / 1e6:.2f} M parameters")
    if args.no_report:
        _restore(report_aside, out / "report", drop_report=True)
        return

    # ---------------------------------------------------------------- the report
    predictor, result, precision_rows = evaluate_written_bundle(out, manifest, inputs, calibration, args)
    report_dir = out / "report"
    write_evaluation(
        report_dir, out, manifest, inputs, calibration, predictor, result, level=level, title=f"{name} ({version})"
    )
    _restore(report_aside, report_dir)
    write_calibration_report(report_dir, calibration, inputs.data_desc)
    record_metrics(out, manifest, result, precision_rows, inputs.data_desc, report_dir)
    print_summary(result, precision_rows, calibration, report_dir, out)


def write_bundle(
    out: Path,
    inputs: Inputs,
    calibration: Calibration,
    args: argparse.Namespace,
    *,
    level: int,
    name: str,
    version: str,
    command: str,
) -> Manifest:
    """`export_bundle` with the fitted temperature per TTA level and the manifest fields (none
    with ``--no-report``), then the member files of ``--save-members``."""
    fields = calibration.fields
    manifest = export_bundle(
        inputs.members,
        out,
        classes=inputs.classes,
        name=name,
        version=version,
        superclasses=inputs.loaded[0][2].get("superclasses"),
        tta=level,
        temperature=calibration.temperature,
        temperatures=[fields["calibration"]["by_tta_level"][str(v)]["temperature"] for v in range(level + 1)]
        if fields
        else None,
        command=command,
        overwrite=args.overwrite,
        extra={"data": inputs.spec},
        manifest_fields=fields,
    )
    if args.save_members:
        save_members(out, inputs.loaded, manifest)
    return manifest
