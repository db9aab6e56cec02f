"""Export one or more trained models as the model bundle the worker loads (worker/runtime/bundle.py).

    python -m ml export runs/<run>/best.pt [more checkpoints ...] --out bundles/<name>
    python -m ml export runs/<a>/best.pt runs/<b>/best.pt runs/<c>/best.pt --out bundles/default \
        --tta 2 --save-members --overwrite
    python -m ml export bundles/default/members/*.pt --out bundles/default --tta 2 --save-members --overwrite

The TorchScript module takes uint8 N x 3 x H x W RGB and returns N x C probabilities: it
normalises with each member's own mean and std, runs the members with test-time augmentation
(``--tta 0|1|2``: none, mirror, mirror + one-pixel translations, `ml.tta`; ``--flip-tta`` is
``--tta 1``) averaging their logits, divides them by the temperature, softmaxes, and averages the
members' probabilities. Two more exported methods: ``scores(images)`` (probabilities, per-member
probabilities and logits, ``ood_score``) and ``explain(images, class_index=None, top_k=5)``
(the same plus Grad-CAM maps of each member's ``cam_layer``, members' maps averaged); the
worker calls ``explain`` when the module has it (worker/runtime/explain.py).

Calibration and thresholds (unless ``--no-report``): the validation images (the checkpoints'
held-out split; ``--data``/``--split`` to change) are split in two seeded, stratified halves
(``--calibration-seed``). On the fit half the command fits the temperature (minimum NLL of the
ensemble), chooses the ``uncertain`` threshold on the calibrated top probability (the smallest at
which the answers kept are ``--uncertain-accuracy`` right) and the OOD threshold on ``ood_score``
(flags at most ``--ood-max-flagged`` of the validation images); on the report half it measures
ECE and NLL before and after, the share flagged and the accuracy above and below the threshold,
and the AUROC of ``ood_score`` against generated non-CIFAR images (`ml.ood.generate`). The
manifest stores ``calibration``, ``uncertain``, ``ood`` and ``explain``; ``report/`` gets
calibration.md, calibration.json, reliability_uncalibrated.png, reliability_calibrated.png and
ood_scores.png beside the evaluation of the whole validation split (report.json, report.md,
figures; headline metrics also in the manifest). The manifest's ``command`` is this command line.

``--save-members`` writes each member's weights in half precision (with arch, options, classes,
mean/std, metrics, config and its metrics.csv; no optimiser) to ``<bundle>/members/*.pt`` in
the `ml.checkpoint` format; those files are valid input, so a bundle can be re-exported (other
TTA, new methods, another calibration) without training. A re-export keeps the old report's files
it does not write itself (TRAINING.md, training logs and configs, ``studies/``).

The module itself is `ml.bundle_module` (Member, Ensemble, build_ensemble); the calibration,
thresholds, per-TTA-level temperatures and the bf16 check are `ml.bundle_calibration`.

Measured on the 2-core CPU dev machine (shared with a training job): one ResNet-20 checkpoint, export plus
report on 5,000 validation images, 60 s wall, 22 s CPU; the bundle's accuracy equals the checkpoint's
recorded val_acc (56.30% at epoch 3).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.bundle_calibration import (
    calibrate,
    calibrate_levels,
    calibration_markdown,
    compare_precisions,
    ensemble_scores,
    pct,
    summary_fields,
)
from ml.bundle_module import Ensemble, Member, build_ensemble, cam_layer_of  # noqa: F401 (the module's parts)
from worker.runtime.bundle import DEFAULT_MODULE_FILE, Manifest, sha256_file, write_manifest


def export_bundle(
    members: list[tuple[nn.Module, dict[str, Any]]],
    out_dir: str | Path,
    *,
    classes: list[str],
    name: str,
    version: str,
    metrics: dict[str, Any] | None = None,
    superclasses: dict[str, str] | None = None,
    input_size: tuple[int, int] = (32, 32),
    flip_tta: bool = False,
    tta: int | None = None,
    temperature: float = 1.0,
    temperatures: list[float] | None = None,
    command: str | None = None,
    report_dir: str | Path | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    manifest_fields: dict[str, Any] | None = None,
) -> Manifest:
    """Script the ensemble of ``members`` (model, info) and write a bundle folder.

    Each ``info`` holds at least ``mean`` and ``std`` (0-1 scale) and is recorded in the manifest's
    ``members`` list (arch, params, metrics, checkpoint ...). ``tta`` is the level (0 none, 1
    mirror, 2 mirror + one-pixel translations); ``flip_tta=True`` is level 1. The module gets
    the ``explain`` method when every member's model has a ``cam_layer``; ``manifest_fields`` sets
    optional manifest keys (calibration, uncertain, ood).
    """
    level = (1 if flip_tta else 0) if tta is None else int(tta)
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    ensemble = build_ensemble(
        members, tta=level, temperature=temperature, temperatures=temperatures, input_size=input_size
    )
    scripted = torch.jit.script(ensemble)
    module_path = out_dir / DEFAULT_MODULE_FILE
    scripted.save(str(module_path))
    layers = [cam_layer_of(model) for model, _ in members]
    explain = None
    if all(layers):
        size = ensemble.map_size if ensemble.map_size[0] else None
        with torch.enable_grad():
            act, _, _ = ensemble.members[0].cam_forward(torch.zeros(1, 3, *input_size, dtype=torch.uint8))
        explain = {
            "method": "explain",
            "signature": "explain(images uint8 N x 3 x H x W, class_index N x K long or None, top_k=5) -> "
            "{probs, member_probs, member_logits, ood_score, class_index, cam N x K x h x w}",
            "call": "under torch.enable_grad() and torch.jit.optimized_execution(False)",
            "algorithm": "Grad-CAM on each member's cam_layer (gradient of the member's logit for the "
            "image itself, before TTA and temperature), members' maps averaged",
            "layers": layers,
            "map_size": list(size or act.shape[2:]),
        }
    manifest = Manifest(
        name=name,
        version=version,
        classes=list(classes),
        superclasses=superclasses,
        input_size=list(input_size),
        mean=list(members[0][1]["mean"]),
        std=list(members[0][1]["std"]),
        members=[{k: v for k, v in info.items()} for _, info in members],
        metrics=metrics or {},
        sha256=sha256_file(module_path),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        command=command or " ".join(shlex.quote(a) for a in ["python", "-m", "ml", *sys.argv[1:]]),
        # tta: the level the module runs at; tta_levels: those the runtime may switch to (set_tta)
        extra={**(extra or {}), "flip_tta": level >= 1, "tta": level, "tta_levels": list(range(level + 1))},
        explain=explain,
        precisions=module_precisions(module_path, input_size),
        **(manifest_fields or {}),
    )
    write_manifest(out_dir, manifest)
    if report_dir is not None:
        shutil.copytree(report_dir, out_dir / "report")
    return manifest


def module_precisions(module_path: Path, input_size: tuple[int, int]) -> list[str]:
    """The precisions the saved module runs in: fp32, and bf16 when a copy converted to bfloat16
    (as `worker.runtime.bundle.load_bundle` converts it) returns finite float32 probabilities."""
    copy = torch.jit.load(str(module_path)).eval()
    copy.to(torch.bfloat16)
    try:
        with torch.inference_mode():
            probs = copy(torch.zeros(2, 3, *input_size, dtype=torch.uint8))
    except RuntimeError:
        return ["fp32"]
    return ["fp32", "bf16"] if probs.dtype == torch.float32 and bool(torch.isfinite(probs).all()) else ["fp32"]


def save_member(path: str | Path, model: nn.Module, ckpt: dict[str, Any], metrics_csv: str | None = None) -> Path:
    """One member's checkpoint for ``<bundle>/members/``: the weights in half precision and what
    export needs to rebuild it (arch, options, classes, mean/std, metrics, config, data); no
    optimiser state. ``ml.checkpoint.load_model`` reads it back in float32."""
    from ml.checkpoint import save_checkpoint

    state = {k: v.detach().half() if v.is_floating_point() else v.detach() for k, v in model.state_dict().items()}
    payload = {
        key: ckpt[key]
        for key in ("arch", "model_options", "classes", "superclasses", "mean", "std", "metrics", "config", "data")
        if key in ckpt
    }
    if "epoch" in ckpt:
        payload["epoch"] = ckpt["epoch"]
    payload["state_dict"] = state
    payload["storage"] = "float16"
    if metrics_csv:
        payload["metrics_csv"] = metrics_csv  # the training curves survive re-exports from members/
    save_checkpoint(path, payload)
    return Path(path)


# ============================================================================= command line
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


def load_members(paths: list[str]) -> list[tuple[str, nn.Module, dict[str, Any], str | None]]:
    """(path, model in float32, checkpoint, metrics.csv text or None) per checkpoint file: a
    training checkpoint (runs/<run>/best.pt, its metrics.csv beside it) or a member file that
    ``--save-members`` wrote (half precision, metrics.csv inside)."""
    from ml.checkpoint import load_model

    loaded = []
    for path in paths:
        model, ckpt = load_model(path)
        csv_text = ckpt.get("metrics_csv")
        beside = Path(path).parent / "metrics.csv"
        if csv_text is None and beside.is_file():
            csv_text = beside.read_text()
        loaded.append((str(path), model, ckpt, csv_text))
    return loaded


# what an export's report writes: after --no-report the old ones describe another module, so go
REPORT_FILES = ("report.json", "report.md", "predictions.npz", "calibration.md", "calibration.json", "precision.json")


def _restore(aside: Path | None, report_dir: Path, *, drop_report: bool = False) -> None:
    """Move back the old report's files and folders that the new one has not written (with
    ``drop_report``, not the evaluation files and figures of the old report either)."""
    if aside is None:
        return
    for entry in sorted(aside.iterdir()):
        stale = drop_report and (entry.name in REPORT_FILES or entry.suffix == ".png")
        if not stale and not (report_dir / entry.name).exists():
            report_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(str(entry), report_dir / entry.name)
    shutil.rmtree(aside.parent)


@torch.inference_mode()
def main(argv: list[str]) -> None:
    from ml import ood, plots
    from ml.evaluate import (
        add_data_arguments,
        check_classes,
        data_from_args,
        describe_split,
        evaluate_probs,
        load_predictor,
        member_info,
        summary_line,
        write_report,
    )

    parser = argparse.ArgumentParser(
        prog="python -m ml export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "checkpoints",
        nargs="+",
        help="checkpoint files (runs/<run>/best.pt, or <bundle>/members/*.pt); several make an ensemble",
    )
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. bundles/cifar10-resnet20")
    parser.add_argument("--name", help="bundle name (default: the folder name)")
    parser.add_argument(
        "--version", help="version recorded with every prediction (default: <name>-<UTC date and time>)"
    )
    parser.add_argument(
        "--tta",
        type=int,
        choices=(0, 1, 2),
        help="test-time augmentation inside the module: 0 none (default), 1 mirror, 2 mirror + one-pixel translations",
    )
    parser.add_argument("--flip-tta", action="store_true", help="the same as --tta 1")
    parser.add_argument(
        "--save-members",
        action="store_true",
        help="also write each member's weights (half precision) to <bundle>/members/, to re-export without training",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    parser.add_argument(
        "--no-report", action="store_true", help="skip the evaluation, the report and the calibration (T = 1)"
    )
    g = parser.add_argument_group("calibration and thresholds (on the validation split)")
    g.add_argument("--calibration-seed", type=int, default=0, help="seed of the fit/report halves (default 0)")
    g.add_argument(
        "--uncertain-accuracy",
        type=float,
        default=0.97,
        help="answers at or above the uncertain threshold must be this accurate on the fit half (default 0.97)",
    )
    g.add_argument(
        "--ood-max-flagged",
        type=float,
        default=0.05,
        help="largest share of validation images the OOD threshold may flag (default 0.05)",
    )
    g.add_argument(
        "--ood-per-kind", type=int, default=200, help="generated non-CIFAR images per kind (default 200; 5 kinds)"
    )
    add_data_arguments(parser, tta=False)
    args = parser.parse_args(argv)
    if args.flip_tta and args.tta not in (None, 1):
        parser.error("--flip-tta is --tta 1; do not combine it with another --tta")
    level = 1 if args.flip_tta else (args.tta or 0)

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it")
    try:
        loaded = load_members(args.checkpoints)
        classes = list(loaded[0][2]["classes"])
        for path, _, ckpt, _ in loaded[1:]:
            check_classes(ckpt["classes"], classes, path)
        members = [(model, member_info(ckpt, path)) for path, model, ckpt, _ in loaded]
        spec = members[0][1]["data"]
        dataset = data_desc = None
        if not args.no_report:  # load the data first: a missing source should fail before anything is written
            dataset, data_desc = data_from_args(spec, args)
            check_classes(classes, dataset.classes, "the bundle")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        parser.error(str(exc))
    for _, info in members[1:]:
        if {k: info["data"].get(k) for k in ("data", "val_per_class", "split_seed")} != {
            k: spec.get(k) for k in ("data", "val_per_class", "split_seed")
        }:
            print(
                f"warning: {info['checkpoint']} was trained on a different data split than {members[0][1]['checkpoint']}"
            )

    name = args.name or out.resolve().name
    version = args.version or f"{name}-{datetime.now(UTC):%Y.%m.%d-%H%M}"
    command = shlex.join(["python", "-m", "ml", "export", *argv])
    # a re-export keeps what it does not write itself (the hand-written TRAINING.md, the training
    # runs' logs and configs, the study reports of python -m ml study): moved aside meanwhile
    report_aside = None
    if (out / "report").is_dir():
        report_aside = Path(tempfile.mkdtemp(prefix="report-", dir=out.parent)) / "report"
        shutil.move(str(out / "report"), report_aside)

    temperature, fields, cal = 1.0, {}, None
    if not args.no_report:
        print(f"scoring {len(members)} member(s) with TTA level {level} on {describe_split(data_desc)}")
        eager = build_ensemble(members, tta=level)
        val = ensemble_scores(eager, dataset.images, args.batch_size)
        generated, kinds = ood.generate(args.ood_per_kind, seed=1)
        gen = ensemble_scores(eager, generated, args.batch_size)
        cal = calibrate(
            val["member_logits"],
            dataset.labels,
            val["ood_score"],
            gen["ood_score"],
            kinds,
            seed=args.calibration_seed,
            target_accuracy=args.uncertain_accuracy,
            ood_max_flagged=args.ood_max_flagged,
        )
        from ml.calibration import ensemble_probs

        gen_probs = ensemble_probs(gen["member_logits"], cal["temperature"])
        rep = cal["split"]["report"]
        cal["ood"]["auroc_msp"] = ood.auroc(1 - cal["probs"][rep].max(axis=1), 1 - gen_probs.max(axis=1))
        temperature, fields = cal["temperature"], summary_fields(cal)
        by_level = calibrate_levels(
            members, level, dataset.images, dataset.labels, args.calibration_seed, args.batch_size
        )
        by_level[str(level)] = {"temperature": temperature, **fields["calibration"]["after"]}
        fields["calibration"]["by_tta_level"] = by_level

    manifest = export_bundle(
        members,
        out,
        classes=classes,
        name=name,
        version=version,
        superclasses=loaded[0][2].get("superclasses"),
        tta=level,
        temperature=temperature,
        temperatures=[fields["calibration"]["by_tta_level"][str(v)]["temperature"] for v in range(level + 1)]
        if fields
        else None,
        command=command,
        overwrite=args.overwrite,
        extra={"data": spec},
        manifest_fields=fields,
    )
    if args.save_members:
        (out / "members").mkdir()
        for i, ((_, model, ckpt, csv_text), info) in enumerate(zip(loaded, manifest.members, strict=True)):
            seed = info.get("seed")
            file = out / "members" / f"{i + 1:02d}-{ckpt['arch']}{'' if seed is None else f'-seed{seed}'}.pt"
            save_member(file, model, ckpt, csv_text)
            info["member_file"] = str(file.relative_to(out))
        write_manifest(out, manifest)
    print(f"wrote {out}: {len(members)} member(s), {sum(m[1]['params'] for m in members) / 1e6:.2f} M parameters")
    if args.no_report:
        _restore(report_aside, out / "report", drop_report=True)
        return

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
    result = evaluate_probs(probs, dataset.labels, classes)
    report_dir = out / "report"
    with tempfile.TemporaryDirectory() as tmp:
        curves = []
        for i, (path, _, _, csv_text) in enumerate(loaded):
            if csv_text:
                f = Path(tmp) / f"{i}.csv"
                f.write_text(csv_text)
                curves.append((Path(path).parent.name if Path(path).parent.name != "members" else Path(path).stem, f))
        write_report(
            report_dir,
            result,
            probs=probs,
            labels=dataset.labels,
            images=dataset.images,
            data=data_desc,
            model={"kind": "bundle", "path": str(out), **predictor.info},
            metrics_csvs=curves,
            title=f"{name} ({version})",
            tta=level >= 1,
            command=manifest.command,
            extra={"tta_level": level, "calibration": fields},
        )
    _restore(report_aside, report_dir)
    # calibration report: on the report half only
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
    manifest.metrics = {**bundle_metrics(result, data_desc), "precisions": precision_rows}
    write_manifest(out, manifest)
    (report_dir / "precision.json").write_text(json.dumps(precision_rows, indent=2) + "\n")
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
    print(f"report: {report_dir}; metrics in {out / 'manifest.json'}")
