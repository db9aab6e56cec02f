"""``python -m ml export``: the command as steps, top to bottom (the manual is the package docstring).

Order matters for what a failure leaves behind: every usage error (arguments, checkpoints, data)
comes before anything is written; then the whole new bundle (module, manifest, members, report,
the old report's files it does not rewrite) is written into a staging folder beside ``--out``,
which replaces the old bundle only when all of it succeeded (`ml.export.staging`). A failure in
between (calibration, scripting, the check of the written module, Ctrl-C) leaves the old bundle
exactly as it was."""

from __future__ import annotations

import argparse
import shlex
from datetime import UTC, datetime
from pathlib import Path

import torch

from ml.export.bundle import export_bundle, export_int8, save_members
from ml.export.fit import Calibration, calibrate_on_validation
from ml.export.inputs import Inputs, load_inputs, parse_arguments, warn_about_data_splits
from ml.export.report import (
    evaluate_written_bundle,
    print_summary,
    record_metrics,
    write_calibration_report,
    write_evaluation,
)
from ml.export.staging import carry_over_report, staged_folder
from worker.runtime.bundle import Manifest


@torch.inference_mode()
def main(argv: list[str]) -> None:
    # ---------------------------------------------------------------- arguments, members, data
    parser, args = parse_arguments(argv)
    level = 1 if args.flip_tta else (args.tta or 0)
    top = level if args.max_tta is None else args.max_tta  # the runtime may switch up to this level
    out = Path(args.out)
    try:
        inputs = load_inputs(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        parser.error(str(exc))
    warn_about_data_splits(inputs.members, inputs.spec)

    name = args.name or out.resolve().name
    version = args.version or f"{name}-{datetime.now(UTC):%Y.%m.%d-%H%M}"
    command = shlex.join(["python", "-m", "ml", "export", *argv])

    with staged_folder(out) as stage:  # replaces out when this block ends without an exception
        # ------------------------------------------------------------ calibration and thresholds
        calibration = Calibration() if args.no_report else calibrate_on_validation(inputs, level, args, top=top)

        # ------------------------------------------------------------ the module and its manifest
        manifest = write_bundle(
            stage, inputs, calibration, args, level=level, top=top, name=name, version=version, command=command
        )
        params = sum(info["params"] for _, info in inputs.members)

        # ------------------------------------------------------------ the report
        if not args.no_report:
            predictor, result, precision_rows = evaluate_written_bundle(stage, manifest, inputs, calibration, args)
            write_evaluation(
                stage / "report",
                out,
                manifest,
                inputs,
                calibration,
                predictor,
                result,
                level=level,
                title=f"{name} ({version})",
            )
            write_calibration_report(stage / "report", calibration, inputs.data_desc)
            record_metrics(stage, manifest, result, precision_rows, inputs.data_desc, stage / "report")
        carry_over_report(out / "report", stage / "report", drop_report=args.no_report)

    print(f"wrote {out}: {len(inputs.members)} member(s), {params / 1e6:.2f} M parameters")
    if not args.no_report:
        print_summary(result, precision_rows, calibration, out / "report", out)


def write_bundle(
    out: Path,
    inputs: Inputs,
    calibration: Calibration,
    args: argparse.Namespace,
    *,
    level: int,
    top: int,
    name: str,
    version: str,
    command: str,
) -> Manifest:
    """`export_bundle` with the fitted temperature per TTA level (0 .. ``top``) and the manifest
    fields (none with ``--no-report``), then the int8 module of ``--int8`` and the member files of
    ``--save-members``."""
    fields = calibration.fields
    temperatures = (
        [fields["calibration"]["by_tta_level"][str(v)]["temperature"] for v in range(top + 1)] if fields else None
    )
    manifest = export_bundle(
        inputs.members,
        out,
        classes=inputs.classes,
        name=name,
        version=version,
        superclasses=inputs.loaded[0][2].get("superclasses"),
        weights=args.weights,
        tta=level,
        max_tta=top,
        temperature=calibration.temperature,
        temperatures=temperatures,
        command=command,
        extra={"data": inputs.spec},
        manifest_fields=fields,
    )
    if args.int8:
        manifest = export_int8(inputs.members, out, manifest, inputs.train_dataset, temperatures=temperatures)
    if args.save_members:
        save_members(out, inputs.loaded, manifest)
    return manifest
