"""Evaluate a checkpoint or a model bundle: report.json, report.md, predictions.npz and PNGs.

    python -m ml evaluate runs/<run>/best.pt                       # its own held-out validation split
    python -m ml evaluate bundles/<name> --tta --out reports/<name>
    python -m ml evaluate runs/<run>/best.pt --data data/cifar-10-python.tar.gz --split test

By default the data and the validation split (``val_per_class``, ``split_seed``) come from the
checkpoint's training config (for a bundle: from its manifest), so the report is on images the
model never trained on. ``--split train`` is the complement, ``all`` the whole source, ``test``
the source's test set (CIFAR archives, or a folder holding train/ and test/).

Writes to ``--out`` (default: ``runs/<run>/<checkpoint>-eval-<split>``, or ``reports/<bundle>-eval-<split>``):
report.json (accuracy, top-5, macro and per-class precision/recall/F1, confusion matrix, most-confused
pairs, ECE with its bins, NLL, data and model info), report.md, predictions.npz (probabilities and
labels, for ``python -m ml compare``), confusion_matrix.png, reliability.png, misclassified.png and,
when a metrics.csv lies beside the checkpoint, training_curves.png.

Function API: ``evaluate_probs(probs, labels, classes) -> dict``, ``write_report(out_dir, ...)``,
``load_predictor(path)``, ``load_eval_data(...)``.
Measured on the 2-core CPU dev machine, shared with a training job and other tests: ResNet-20 on the
5,000 validation images of cifar10-jpeg/train takes 48-52 s wall, 16-18 s of CPU (59 s, 26 s CPU with --tta).
"""

from __future__ import annotations

# The package: data (the images to evaluate on), predictor (a checkpoint or bundle as probabilities),
# report (metrics, report.json/.md, figures), cli (the command). The names below are its interface.
from ml.evaluate.cli import add_data_arguments, data_from_args, default_out_dir, main
from ml.evaluate.data import DATA_OPTION_KEYS, SPLITS, check_classes, describe_split, load_eval_data
from ml.evaluate.predictor import (
    Predictor,
    _bundle_predictor,
    _checkpoint_predictor,
    data_spec_from_config,
    data_spec_of,
    load_predictor,
    member_info,
    resolve_device,
)
from ml.evaluate.report import _markdown, _write_figures, evaluate_probs, summary_line, write_report

__all__ = [
    "DATA_OPTION_KEYS",
    "SPLITS",
    "Predictor",
    "_bundle_predictor",
    "_checkpoint_predictor",
    "_markdown",
    "_write_figures",
    "add_data_arguments",
    "check_classes",
    "data_from_args",
    "data_spec_from_config",
    "data_spec_of",
    "default_out_dir",
    "describe_split",
    "evaluate_probs",
    "load_eval_data",
    "load_predictor",
    "main",
    "member_info",
    "resolve_device",
    "summary_line",
    "write_report",
]
