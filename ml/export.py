"""Export one or more trained models as the model bundle the worker loads (worker/runtime/bundle.py).

    python -m ml export runs/<run>/best.pt [more checkpoints ...] --out bundles/<name>
    python -m ml export runs/<a>/best.pt runs/<b>/best.pt --out bundles/cifar10-ens --flip-tta --overwrite

The TorchScript module takes uint8 N x 3 x H x W RGB and returns N x C probabilities: it
normalises with each member's own mean and std, runs the members, and averages their softmax
outputs (optionally over a horizontal flip too).

The command then loads the written bundle (checksum verified), evaluates it on the checkpoints'
validation split (``--data``/``--split`` to change; ``--no-report`` to skip) and stores the
report files in ``<bundle>/report/`` and the headline metrics (accuracy, top-5, macro F1, ECE,
NLL, n, split) in ``manifest.json``; the manifest's ``command`` is this command line.

Measured on the 2-core CPU dev machine (shared with a training job): one ResNet-20 checkpoint, export plus
report on 5,000 validation images, 60 s wall, 22 s CPU; the bundle's accuracy equals the checkpoint's
recorded val_acc (56.30% at epoch 3).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worker.runtime.bundle import DEFAULT_MODULE_FILE, Manifest, sha256_file, write_manifest


class Member(nn.Module):
    """One model with its normalisation: uint8 images -> probabilities."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return torch.softmax(self.model(x).float(), dim=1)


class Ensemble(nn.Module):
    """Average of the members' probabilities; with ``flip_tta`` also over the mirrored images."""

    def __init__(self, members: list[Member], flip_tta: bool = False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.flip_tta = flip_tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError("expected uint8 images N x 3 x H x W")
        total = torch.zeros(0)
        n = 0
        for member in self.members:
            p = member(images)
            if self.flip_tta:
                p = 0.5 * (p + member(images.flip(3)))
            total = p if n == 0 else total + p
            n += 1
        return total / n


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
    command: str | None = None,
    report_dir: str | Path | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Script the ensemble of ``members`` (model, info) and write a bundle folder.

    Each ``info`` holds at least ``mean`` and ``std`` (0-1 scale) and is recorded in the manifest's
    ``members`` list (arch, params, metrics, checkpoint ...).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    wrapped = []
    for model, info in members:
        model = model.float().eval().cpu()
        wrapped.append(Member(model, info["mean"], info["std"]))
    ensemble = Ensemble(wrapped, flip_tta=flip_tta).eval()
    scripted = torch.jit.script(ensemble)
    module_path = out_dir / DEFAULT_MODULE_FILE
    scripted.save(str(module_path))
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
        extra={**(extra or {}), "flip_tta": flip_tta},
    )
    write_manifest(out_dir, manifest)
    if report_dir is not None:
        shutil.copytree(report_dir, out_dir / "report")
    return manifest


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


def main(argv: list[str]) -> None:
    from ml.checkpoint import load_model
    from ml.evaluate import (
        add_data_arguments,
        check_classes,
        data_from_args,
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
        "checkpoints", nargs="+", help="checkpoint files (runs/<run>/best.pt); several make an ensemble"
    )
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. bundles/cifar10-resnet20")
    parser.add_argument("--name", help="bundle name (default: the folder name)")
    parser.add_argument(
        "--version", help="version recorded with every prediction (default: <name>-<UTC date and time>)"
    )
    parser.add_argument("--flip-tta", action="store_true", help="average each prediction with the mirrored image's")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    parser.add_argument("--no-report", action="store_true", help="skip the evaluation and report")
    add_data_arguments(parser, tta=False)
    args = parser.parse_args(argv)

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it")
    try:
        loaded = [(path, *load_model(path)) for path in args.checkpoints]
        classes = list(loaded[0][2]["classes"])
        for path, _, ckpt in loaded[1:]:
            check_classes(ckpt["classes"], classes, path)
        members = [(model, member_info(ckpt, path)) for path, model, ckpt in loaded]
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
    manifest = export_bundle(
        members,
        out,
        classes=classes,
        name=name,
        version=version,
        superclasses=loaded[0][2].get("superclasses"),
        flip_tta=args.flip_tta,
        command=shlex.join(["python", "-m", "ml", "export", *argv]),
        overwrite=args.overwrite,
        extra={"data": spec},
    )
    print(f"wrote {out}: {len(members)} member(s), {sum(m[1]['params'] for m in members) / 1e6:.2f} M parameters")
    if args.no_report:
        return

    # evaluate what was written, through the same loader the worker uses (checksum verified)
    predictor = load_predictor(out, args.device)
    probs = predictor.predict(dataset.images, batch_size=args.batch_size)
    result = evaluate_probs(probs, dataset.labels, classes)
    write_report(
        out / "report",
        result,
        probs=probs,
        labels=dataset.labels,
        images=dataset.images,
        data=data_desc,
        model={"kind": "bundle", "path": str(out), **predictor.info},
        metrics_csvs=predictor.metrics_csvs,
        title=f"{name} ({version})",
        tta=args.flip_tta,
        command=manifest.command,
    )
    manifest.metrics = bundle_metrics(result, data_desc)
    write_manifest(out, manifest)
    print(summary_line(result))
    print(f"report: {out / 'report'}; metrics in {out / 'manifest.json'}")
