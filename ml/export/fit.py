"""What export fits on the validation split (unless ``--no-report``): the ensemble's scores on
the validation and generated non-CIFAR images, then the temperature, the ``uncertain``, OOD and
prediction-set thresholds on the fit half (`ml.bundle_calibration.calibrate`) and one temperature per other TTA
level the runtime may switch to."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from ml.bundle_calibration import calibrate, calibrate_levels, ensemble_scores, summary_fields
from ml.bundle_module import build_ensemble
from ml.export.inputs import Inputs


@dataclass
class Calibration:
    """What the module and the manifest get: the temperature, the manifest fields (calibration,
    uncertain, ood) and the full result ``cal`` the report is drawn from. The defaults are the
    ``--no-report`` export: T = 1, no fields, no result."""

    temperature: float = 1.0
    fields: dict[str, Any] = field(default_factory=dict)
    cal: dict[str, Any] | None = None


def _calibrate(val: dict[str, Any], gen: dict[str, Any], kinds: list[str], inputs: Inputs, args: argparse.Namespace):
    return calibrate(
        val["member_logits"],
        inputs.dataset.labels,
        val["ood_score"],
        gen["ood_score"],
        kinds,
        seed=args.calibration_seed,
        target_accuracy=args.uncertain_accuracy,
        ood_max_flagged=args.ood_max_flagged,
        set_coverage=args.set_coverage,
        set_classwise=args.set_classwise,
        classes=inputs.classes,
    )


def calibrate_on_validation(
    inputs: Inputs, level: int, args: argparse.Namespace, *, top: int | None = None
) -> Calibration:
    """Score the eager ensemble at TTA ``level``, fit on one seeded half of the validation split
    and measure on the other; add the AUROC of the top probability and the temperature of every
    other level up to ``top`` (default ``level``) the runtime may switch to."""
    from ml import ood
    from ml.calibration import ensemble_probs
    from ml.evaluate import describe_split

    members, dataset = inputs.members, inputs.dataset
    print(f"scoring {len(members)} member(s) with TTA level {level} on {describe_split(inputs.data_desc)}")
    eager = build_ensemble(members, tta=level)
    val = ensemble_scores(eager, dataset.images, args.batch_size)
    generated, kinds = ood.generate(args.ood_per_kind, seed=1)
    gen = ensemble_scores(eager, generated, args.batch_size)
    try:
        cal = _calibrate(val, gen, kinds, inputs, args)
    except ValueError as exc:  # e.g. class-wise sets with too few validation images of a class
        raise SystemExit(f"python -m ml export: {exc}") from exc
    gen_probs = ensemble_probs(gen["member_logits"], cal["temperature"])
    rep = cal["split"]["report"]
    cal["ood"]["auroc_msp"] = ood.auroc(1 - cal["probs"][rep].max(axis=1), 1 - gen_probs.max(axis=1))
    temperature, fields = cal["temperature"], summary_fields(cal)
    others = [v for v in range((level if top is None else top) + 1) if v != level]
    by_level = calibrate_levels(members, others, dataset.images, dataset.labels, args.calibration_seed, args.batch_size)
    by_level[str(level)] = {"temperature": temperature, **fields["calibration"]["after"]}
    fields["calibration"]["by_tta_level"] = by_level
    return Calibration(temperature=temperature, fields=fields, cal=cal)
