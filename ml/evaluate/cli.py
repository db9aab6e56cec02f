"""``python -m ml evaluate``: the data arguments shared with ensemble, compare and export, and the command."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from ml.data import ArrayDataset
from ml.evaluate.data import SPLITS, check_classes, describe_split, load_eval_data
from ml.evaluate.predictor import load_predictor
from ml.evaluate.report import evaluate_probs, summary_line, write_report


# ============================================================================= command line
def add_data_arguments(parser: argparse.ArgumentParser, tta: bool = True) -> None:
    g = parser.add_argument_group("data (default: the model's own training data and validation split)")
    g.add_argument("--data", help="data source: image folder, CIFAR archive or its folder, cifar10/cifar100")
    g.add_argument("--split", default="val", choices=SPLITS, help="val (default), train, all, or test")
    g.add_argument("--val-per-class", type=int, help="images per class held out (default: as in training)")
    g.add_argument("--split-seed", type=int, help="seed of the stratified split (default: as in training)")
    g.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default 500)")
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ... (default auto)")
    g.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "auto", "int8"),
        help="a bundle's inference precision (default fp32; auto = what the worker runs: bf16 on CPUs with bf16 in "
        "hardware; int8 = the bundle's int8 module of `ml export --int8`, on the CPU)",
    )
    if tta:
        g.add_argument("--tta", action="store_true", help="average each image's prediction with its mirror image")


def data_from_args(spec: dict[str, Any], args: argparse.Namespace) -> tuple[ArrayDataset, dict[str, Any]]:
    return load_eval_data(
        spec, args.split, data=args.data, val_per_class=args.val_per_class, split_seed=args.split_seed
    )


def default_out_dir(path: str | Path, split: str, tta: bool) -> Path:
    """Beside a checkpoint (``runs/<run>/best-eval-val``); for a bundle ``reports/<bundle>-eval-val``, so that
    evaluating a bundle never changes the bundle folder."""
    path = Path(path)
    suffix = f"eval-{split}" + ("-tta" if tta else "")
    return (
        Path("reports") / f"{path.resolve().name}-{suffix}" if path.is_dir() else path.parent / f"{path.stem}-{suffix}"
    )


def main(argv: list[str]) -> None:
    import ml.evaluate  # the package's docstring is the command's manual

    parser = argparse.ArgumentParser(
        prog="python -m ml evaluate",
        description=ml.evaluate.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="checkpoint file (runs/<run>/best.pt) or model bundle folder")
    parser.add_argument(
        "--out", help="report folder (default: <run>/<checkpoint>-eval-<split>, or reports/<bundle>-eval-<split>)"
    )
    parser.add_argument("--no-plots", action="store_true", help="write report.json, report.md and predictions only")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    try:
        predictor = load_predictor(args.model, args.device, args.precision)
        dataset, data_desc = data_from_args(predictor.data_spec, args)
        check_classes(predictor.classes, dataset.classes, args.model)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    print(
        f"evaluating {predictor.kind} {args.model} on {describe_split(data_desc)}"
        + (" with flip TTA" if args.tta else "")
    )
    probs = predictor.predict(dataset.images, batch_size=args.batch_size, tta=args.tta)
    result = evaluate_probs(probs, dataset.labels, predictor.classes)
    out = Path(args.out) if args.out else default_out_dir(args.model, args.split, args.tta)
    answer_sets = None
    if predictor.set_thresholds is not None:  # a bundle with answer sets: do they hold on these images?
        from ml import conformal

        measured = conformal.evaluate(probs, dataset.labels, np.asarray(predictor.set_thresholds))
        answer_sets = {"fitted_coverage": predictor.set_coverage, **measured}
    write_report(
        out,
        result,
        probs=probs,
        labels=dataset.labels,
        images=dataset.images,
        data=data_desc,
        model={"kind": predictor.kind, "path": predictor.path, **predictor.info},
        metrics_csvs=predictor.metrics_csvs,
        title=predictor.name,
        tta=args.tta or predictor.builtin_flip_tta,
        command=shlex.join(["python", "-m", "ml", "evaluate", *argv]),
        plots_enabled=not args.no_plots,
        extra={"prediction_set": answer_sets} if answer_sets else None,
    )
    print(summary_line(result))
    if answer_sets:
        print(
            f"answer sets (fitted for {answer_sets['fitted_coverage']}): held the true class for "
            f"{100 * answer_sets['coverage']:.2f}%, {answer_sets['mean_size']:.3f} classes per set"
        )
    print(f"report: {out}/report.json, report.md" + ("" if args.no_plots else " and PNGs"))
