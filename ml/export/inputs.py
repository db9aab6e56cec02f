"""What ``python -m ml export`` starts from: its command line (the package docstring is the
manual) and the member checkpoints with the validation data they were held out from."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ml.export.bundle import round_to_storage

if TYPE_CHECKING:
    from ml.data import ArrayDataset

Loaded = tuple[str, nn.Module, dict[str, Any], str | None]  # path, model, checkpoint, metrics.csv text


def parse_arguments(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser (later load errors are reported through it) and the arguments, with the checks
    that need nothing loaded: ``--flip-tta`` against another ``--tta``, and an existing ``--out``
    without ``--overwrite``."""
    from ml import export
    from ml.evaluate import add_data_arguments

    parser = argparse.ArgumentParser(
        prog="python -m ml export", description=export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
        "--max-tta",
        type=int,
        choices=(0, 1, 2),
        help="highest TTA level the module carries, with its own fitted temperature (default: --tta): the module "
        "runs at --tta and the worker can switch to any level up to this one (WORKER_TTA)",
    )
    parser.add_argument(
        "--save-members",
        action="store_true",
        help="also write each member's weights (half precision) to <bundle>/members/, to re-export without training",
    )
    parser.add_argument(
        "--weights",
        choices=("float16", "float32"),
        default="float16",
        help="how model.pt stores the members' weights: float16 (default; half the file, the members "
        "rounded to it before calibration and the report) or float32; the worker runs either in fp32 or bf16",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write model-int8.pt, the module with int8 members (ml.quantize; calibrated on 2,048 training "
        "images), which the worker runs with WORKER_PRECISION=int8",
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
        "--set-coverage",
        type=float,
        default=0.95,
        help="the prediction sets' coverage: the true class is in an image's set for at least this share of "
        "images like the fit half's (ml.conformal; default 0.95)",
    )
    g.add_argument(
        "--set-classwise",
        action="store_true",
        help="one prediction-set threshold per class, so that the coverage holds for the images of every class "
        "(needs coverage / (1 - coverage) validation images of each class in the fit half)",
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
    if args.max_tta is not None and args.max_tta < level:
        parser.error(f"--max-tta {args.max_tta} is below the module's TTA level {level}")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it")
    return parser, args


def load_members(paths: list[str]) -> list[Loaded]:
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


@dataclass
class Inputs:
    """The loaded checkpoints, the ensemble's members (model, manifest info), the first member's
    data spec and, unless ``--no-report``, the validation data set and its description."""

    loaded: list[Loaded]
    classes: list[str]
    members: list[tuple[nn.Module, dict[str, Any]]]
    spec: dict[str, Any]
    dataset: ArrayDataset | None = None
    data_desc: dict[str, Any] | None = None
    train_dataset: ArrayDataset | None = None  # with --int8: the training split, for the int8 calibration


def load_inputs(args: argparse.Namespace) -> Inputs:
    """Load the checkpoints (same classes in each) and, unless ``--no-report``, the data: a missing
    source fails here, before anything is written. Raises FileNotFoundError, ValueError or
    KeyError, which the command reports as a usage error."""
    from ml.evaluate import check_classes, data_from_args, member_info

    loaded = load_members(args.checkpoints)
    for _, model, _, _ in loaded:  # what calibration and the report measure is what model.pt holds
        round_to_storage(model, args.weights)
    classes = list(loaded[0][2]["classes"])
    for path, _, ckpt, _ in loaded[1:]:
        check_classes(ckpt["classes"], classes, path)
    members = [(model, member_info(ckpt, path)) for path, model, ckpt, _ in loaded]
    inputs = Inputs(loaded=loaded, classes=classes, members=members, spec=members[0][1]["data"])
    if not args.no_report:  # load the data first: a missing source should fail before anything is written
        inputs.dataset, inputs.data_desc = data_from_args(inputs.spec, args)
        check_classes(classes, inputs.dataset.classes, "the bundle")
    if args.int8:  # the int8 activation ranges come from training images, never the validation split
        from ml.evaluate import load_eval_data

        inputs.train_dataset, _ = load_eval_data(inputs.spec, "train")
    return inputs


def warn_about_data_splits(members: list[tuple[nn.Module, dict[str, Any]]], spec: dict[str, Any]) -> None:
    """Print a warning for each member trained on another data split than the first one."""
    for _, info in members[1:]:
        if {k: info["data"].get(k) for k in ("data", "val_per_class", "split_seed")} != {
            k: spec.get(k) for k in ("data", "val_per_class", "split_seed")
        }:
            print(
                f"warning: {info['checkpoint']} was trained on a different data split than {members[0][1]['checkpoint']}"
            )
