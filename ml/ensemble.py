"""Evaluate an ensemble of models: mean of their probabilities, and majority vote.

    python -m ml ensemble runs/<a>/best.pt runs/<b>/best.pt runs/<c>/best.pt --out reports/ensemble
    python -m ml ensemble runs/<a>/best.pt bundles/<b> --tta --split test --data data/cifar-10-python.tar.gz

Members may be checkpoints or bundles with the same classes. The mean-probability ensemble gets the
full report of ``python -m ml evaluate`` (report.json, report.md, PNGs); report.json also has an
``ensemble`` section with each member's accuracy and macro F1 and the majority-vote result
(ties broken by the mean probability of the tied classes). Default data: the first member's
validation split; members trained on different splits are reported (their held-out images differ,
so some "validation" images may be training images of another member).

Measured on the 2-core CPU dev machine (shared with a training job): two ResNet-20 members (a checkpoint
and a bundle) on the 5,000 validation images, with figures: 61 s wall, 34 s CPU.

Function API: ``mean_probs(member_probs)``, ``majority_vote(member_probs)``.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml import metrics
from ml.evaluate import (
    add_data_arguments,
    check_classes,
    data_from_args,
    describe_split,
    evaluate_probs,
    load_predictor,
    summary_line,
    write_report,
)


def mean_probs(member_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Average of the members' N x C probabilities."""
    if not member_probs:
        raise ValueError("an ensemble needs at least one member")
    shapes = {np.shape(p) for p in member_probs}
    if len(shapes) != 1:
        raise ValueError(f"members disagree on the shape of their predictions: {sorted(shapes)}")
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in member_probs]), axis=0)


def majority_vote(member_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Each member votes for its top class; the most votes win, and a tie goes to the tied class with
    the highest mean probability."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in member_probs])  # M x N x C
    m, n, c = stacked.shape
    votes = np.zeros((n, c), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(n)[None, :], m, axis=0), stacked.argmax(axis=2)), 1)
    mean = stacked.mean(axis=0)
    tied = votes == votes.max(axis=1, keepdims=True)
    return np.where(tied, mean, -np.inf).argmax(axis=1)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ml ensemble", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="checkpoint files or bundle folders (two or more)")
    parser.add_argument("--out", default="reports/ensemble", help="report folder (default reports/ensemble)")
    parser.add_argument("--no-plots", action="store_true", help="write report.json, report.md and predictions only")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("give at least two models to ensemble")
    try:
        predictors = [load_predictor(p, args.device, args.precision) for p in args.models]
        for p in predictors[1:]:
            check_classes(p.classes, predictors[0].classes, p.path)
        dataset, data_desc = data_from_args(predictors[0].data_spec, args)
        check_classes(predictors[0].classes, dataset.classes, "the ensemble")
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    warnings = []
    split_keys = ("data", "val_per_class", "split_seed")
    for p in predictors[1:]:
        a = {k: predictors[0].data_spec.get(k) for k in split_keys}
        b = {k: p.data_spec.get(k) for k in split_keys}
        if a != b:
            warnings.append(
                f"{p.path} was trained on {b}, the first member on {a}: the evaluation images may include its training images"
            )
    for w in warnings:
        print(f"warning: {w}")
    print(f"ensemble of {len(predictors)} on {describe_split(data_desc)}" + (" with flip TTA" if args.tta else ""))

    member_probs, members = [], []
    for p in predictors:
        probs = p.predict(dataset.images, batch_size=args.batch_size, tta=args.tta)
        member_probs.append(probs)
        preds = probs.argmax(axis=1)
        per = metrics.per_class_report(metrics.confusion_matrix(preds, dataset.labels, len(p.classes)))
        row = {
            "name": p.name,
            "path": p.path,
            "kind": p.kind,
            "accuracy": metrics.accuracy(probs, dataset.labels),
            "macro_f1": per["macro_f1"],
            "nll": metrics.nll(probs, dataset.labels),
            "ece": metrics.calibration(probs, dataset.labels)["ece"],
            "params": p.info.get("params"),
            "arch": p.info.get("arch"),
        }
        members.append(row)
        print(f"  member {p.name}: accuracy {100 * row['accuracy']:.2f}% | macro F1 {100 * row['macro_f1']:.2f}%")
    probs = mean_probs(member_probs)
    result = evaluate_probs(probs, dataset.labels, predictors[0].classes)
    vote = majority_vote(member_probs)
    vote_per = metrics.per_class_report(metrics.confusion_matrix(vote, dataset.labels, len(predictors[0].classes)))
    ensemble: dict[str, Any] = {
        "members": members,
        "mean_probability": {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]},
        "majority_vote": {"accuracy": float((vote == dataset.labels).mean()), "macro_f1": vote_per["macro_f1"]},
        "best_member_accuracy": max(m["accuracy"] for m in members),
        "warnings": warnings,
    }
    write_report(
        Path(args.out),
        result,
        probs=probs,
        labels=dataset.labels,
        images=dataset.images,
        data=data_desc,
        model={"kind": "ensemble", "members": [{**p.info, "path": p.path} for p in predictors]},
        metrics_csvs=list(
            {Path(c[1]).resolve(): c for p in predictors for c in p.metrics_csvs}.values()
        ),  # once per run
        title=f"ensemble of {len(predictors)}: " + ", ".join(p.name for p in predictors),
        tta=args.tta,
        extra={"ensemble": ensemble},
        command=shlex.join(["python", "-m", "ml", "ensemble", *argv]),
        plots_enabled=not args.no_plots,
    )
    print(f"mean probability: {summary_line(result)}")
    print(f"majority vote: accuracy {100 * ensemble['majority_vote']['accuracy']:.2f}%")
    print(f"report: {args.out}/report.json, report.md" + ("" if args.no_plots else " and PNGs"))
