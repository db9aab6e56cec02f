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

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml import metrics, plots
from ml.data import ArrayDataset, load_source, stratified_split

SPLITS = ("val", "train", "all", "test")
# training-config keys (ml.train.TrainConfig) that select the data, and the load_source keyword each maps to
DATA_OPTION_KEYS = {
    "label_mode": "label_mode",
    "classes": "classes",
    "superclass": "superclass",
    "data_md5": "expected_md5",
}


# ============================================================================= models
@dataclass
class Predictor:
    """Anything that turns uint8 images N x 3 x H x W into class probabilities N x C."""

    path: str
    kind: str  # "checkpoint" | "bundle"
    classes: list[str]
    predict_fn: Callable[[torch.Tensor], torch.Tensor]
    data_spec: dict[str, Any]  # data, val_per_class, split_seed and load_source options used in training
    info: dict[str, Any] = field(default_factory=dict)  # arch, params, macs, checkpoint metrics ...
    metrics_csvs: list[tuple[str, Path]] = field(default_factory=list)  # (label, metrics.csv) for curves
    builtin_flip_tta: bool = False  # a bundle exported with --flip-tta already averages over flips

    @property
    def name(self) -> str:
        p = Path(self.path)
        return p.parent.name if p.suffix == ".pt" else p.name

    @torch.inference_mode()
    def predict(self, images: np.ndarray | torch.Tensor, batch_size: int = 500, tta: bool = False) -> np.ndarray:
        """Probabilities (float64 numpy) for uint8 images; ``tta`` averages with the mirrored images."""
        images = torch.as_tensor(images)
        out = []
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size]
            p = self.predict_fn(x).double()
            if tta and not self.builtin_flip_tta:
                p = 0.5 * (p + self.predict_fn(x.flip(3)).double())
            out.append(p.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))


def data_spec_from_config(config: dict[str, Any]) -> dict[str, Any]:
    spec = {
        "data": config.get("data"),
        "val_per_class": int(config.get("val_per_class", 0) or 0),
        "split_seed": int(config.get("split_seed", 0) or 0),
        "source_split": config.get("split") or "train",  # the part of the source trained on; val is held out of it
    }
    for key in DATA_OPTION_KEYS:
        if config.get(key) not in (None, "", [], "fine"):
            spec[key] = config[key]
    return spec


def data_spec_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's training data spec; when the config's (relative) path does not resolve from the
    current directory, the absolute source recorded at training time is used instead."""
    spec = data_spec_from_config(ckpt.get("config") or {})
    recorded = (ckpt.get("data") or {}).get("source")
    if spec.get("data") and not Path(spec["data"]).exists() and recorded and Path(recorded).exists():
        spec["data"] = recorded
    return spec


def member_info(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """What a report or a manifest records about one trained model."""
    from ml.models import build_model, count_flops, count_parameters

    ckpt_metrics = dict(ckpt.get("metrics") or {})
    params, macs = ckpt_metrics.get("params"), ckpt_metrics.get("macs")
    if params is None or macs is None:
        model = build_model(ckpt["arch"], num_classes=len(ckpt["classes"]), **ckpt.get("model_options", {}))
        params, macs = count_parameters(model), count_flops(model)
    config = ckpt.get("config") or {}
    return {
        "arch": ckpt["arch"],
        "model_options": dict(ckpt.get("model_options") or {}),
        "params": int(params),
        "macs": int(macs),
        "checkpoint": str(path),
        "epoch": int(ckpt["epoch"]) + 1 if "epoch" in ckpt else None,
        "seed": config.get("seed"),
        "metrics": {k: v for k, v in ckpt_metrics.items() if k not in ("params", "macs")},
        "data": data_spec_of(ckpt),
        "mean": list(ckpt["mean"]),
        "std": list(ckpt["std"]),
    }


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU. On CUDA, checkpoints run under bf16 autocast (as in
    training's evaluation), so their numbers can differ from the CPU's in the last digits."""
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def _checkpoint_predictor(path: Path, device: torch.device) -> Predictor:
    from ml.checkpoint import load_model
    from ml.train import infer

    model, ckpt = load_model(path)
    model.to(device)
    mean, std = torch.tensor(ckpt["mean"]), torch.tensor(ckpt["std"])

    def predict_fn(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(infer(model, x, mean, std, batch_size=len(x) or 1), dim=1)

    spec = data_spec_of(ckpt)
    csv_path = path.parent / "metrics.csv"
    return Predictor(
        path=str(path),
        kind="checkpoint",
        classes=list(ckpt["classes"]),
        predict_fn=predict_fn,
        data_spec=spec,
        info=member_info(ckpt, path),
        metrics_csvs=[(path.parent.name, csv_path)] if csv_path.is_file() else [],
    )


def _bundle_predictor(path: Path, device: torch.device, precision: str = "fp32") -> Predictor:
    from worker.runtime.bundle import load_bundle

    bundle = load_bundle(path, device=device, precision=precision)
    manifest = bundle.manifest
    spec = manifest.extra.get("data") or next((m["data"] for m in manifest.members if m.get("data")), None) or {}
    curves = []
    for m in manifest.members:
        if m.get("checkpoint"):
            csv_path = Path(m["checkpoint"]).parent / "metrics.csv"
            if csv_path.is_file():
                curves.append((Path(m["checkpoint"]).parent.name, csv_path))
    return Predictor(
        path=str(path),
        kind="bundle",
        classes=list(manifest.classes),
        predict_fn=bundle.predict,
        data_spec=dict(spec),
        info={
            "name": manifest.name,
            "version": manifest.version,
            "members": [{k: v for k, v in m.items() if k not in ("mean", "std")} for m in manifest.members],
            "params": sum(int(m.get("params") or 0) for m in manifest.members) or None,
            "flip_tta": bool(manifest.extra.get("flip_tta")),
            "precision": bundle.precision,
        },
        metrics_csvs=curves,
        builtin_flip_tta=bool(manifest.extra.get("flip_tta")),
    )


def load_predictor(path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32") -> Predictor:
    """A checkpoint file (``ml.train``'s ``best.pt``/``checkpoint.pt``) or a bundle folder, on ``device``
    (``auto``: CUDA when available). Probabilities always come back on the CPU. A bundle runs in
    ``precision`` (fp32 by default, the reference; auto | bf16 as `worker.runtime.precision`)."""
    path = Path(path)
    device = resolve_device(device) if isinstance(device, str) else device
    if path.is_dir():
        return _bundle_predictor(path, device, precision)
    if path.is_file():
        return _checkpoint_predictor(path, device)
    raise FileNotFoundError(f"{path} is neither a checkpoint file nor a model bundle folder")


# ============================================================================= data
def load_eval_data(
    spec: dict[str, Any],
    split: str = "val",
    *,
    data: str | None = None,
    val_per_class: int | None = None,
    split_seed: int | None = None,
) -> tuple[ArrayDataset, dict[str, Any]]:
    """The images to evaluate on, and a description of them for the report.

    ``spec`` is the model's training data spec; ``data``, ``val_per_class`` and ``split_seed``
    override it. ``val`` and ``train`` rebuild the seeded stratified split used in training (held out
    of the part of the source the model trained on); ``all`` is that whole part; ``test`` the source's
    test set. Class subsets and label modes of the training config are applied to any source.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    source = data or spec.get("data")
    if not source:
        raise ValueError("the model does not record its training data; pass --data PATH (and --split)")
    keys = [k for k in DATA_OPTION_KEYS if not (k == "data_md5" and data)]  # the md5 belongs to the training source
    options = {DATA_OPTION_KEYS[k]: spec[k] for k in keys if spec.get(k) not in (None, "")}
    per_class = spec.get("val_per_class", 0) if val_per_class is None else val_per_class
    seed = spec.get("split_seed", 0) if split_seed is None else split_seed
    source_split = "test" if split == "test" else (spec.get("source_split") or "train") if not data else "train"
    dataset = load_source(source, split=source_split, **options)
    description: dict[str, Any] = {"source": str(source), "split": split, "source_split": source_split}
    description.update({k: v for k, v in options.items() if k != "expected_md5"})
    if split in ("val", "train"):
        if not per_class:
            raise ValueError(
                f"split={split!r} needs a validation split but the model was trained without one "
                "(val_per_class=0); pass --val-per-class N, or --split all / --split test"
            )
        train_idx, val_idx = stratified_split(dataset.labels, per_class, seed)
        dataset = dataset.subset(val_idx if split == "val" else train_idx)
        description.update({"val_per_class": int(per_class), "split_seed": int(seed)})
    description["n"] = len(dataset)
    return dataset, description


def describe_split(d: dict[str, Any]) -> str:
    """One line, e.g. 'validation split (500 per class, seed 0) of .../train: 5000 images'."""
    what = {
        "val": f"validation split ({d.get('val_per_class')} per class, seed {d.get('split_seed')})",
        "train": f"training part of the split ({d.get('val_per_class')} per class held out, seed {d.get('split_seed')})",
        "all": "all images",
        "test": "test set",
    }[d["split"]]
    return f"{what} of {d['source']}: {d['n']} images"


def check_classes(model_classes: Sequence[str], data_classes: Sequence[str], what: str) -> None:
    if list(model_classes) != list(data_classes):
        raise ValueError(
            f"{what} predicts classes {list(model_classes)[:12]} but the data has {list(data_classes)[:12]}; "
            "evaluate on a source with the same classes in the same order (see --data)"
        )


# ============================================================================= metrics and report
def evaluate_probs(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Every metric of the report, as JSON-ready Python values."""
    probs, labels = metrics.as_numpy(probs).astype(np.float64), metrics.as_numpy(labels).astype(np.int64)
    c = len(classes)
    if probs.shape[1] != c:
        raise ValueError(f"{probs.shape[1]} probability columns but {c} classes")
    preds = probs.argmax(axis=1)
    cm = metrics.confusion_matrix(preds, labels, c)
    per = metrics.per_class_report(cm)
    cal = metrics.calibration(probs, labels)
    k = min(5, c)
    return {
        "n": int(len(labels)),
        "accuracy": metrics.accuracy(probs, labels),
        f"top{k}": metrics.top_k_accuracy(probs, labels, k=k),
        "macro_precision": per["macro_precision"],
        "macro_recall": per["macro_recall"],
        "macro_f1": per["macro_f1"],
        "ece": cal["ece"],
        "mce": cal["mce"],
        "nll": metrics.nll(probs, labels),
        "per_class": [
            {
                "class": name,
                "precision": float(per["precision"][i]),
                "recall": float(per["recall"][i]),
                "f1": float(per["f1"][i]),
                "support": int(per["support"][i]),
            }
            for i, name in enumerate(classes)
        ],
        "most_confused": metrics.most_confused(cm, list(classes), top=10),
        "confusion_matrix": cm.tolist(),
        "calibration_bins": cal["bins"],
        "classes": list(classes),
    }


def summary_line(result: dict[str, Any]) -> str:
    top = next((k for k in result if k.startswith("top") and k[3:].isdigit()), "top5")
    return (
        f"accuracy {100 * result['accuracy']:.2f}% | {top} {100 * result.get(top, float('nan')):.2f}% | "
        f"macro F1 {100 * result['macro_f1']:.2f}% | ECE {100 * result['ece']:.2f}% | NLL {result['nll']:.4f} | n {result['n']}"
    )


def _markdown(report: dict[str, Any]) -> str:
    r = report
    top = next(k for k in r if k.startswith("top") and k[3:].isdigit())
    lines = [
        f"# Evaluation: {r.get('title', '')}".rstrip(),
        "",
        f"Data: {r['data']['description']}" + (" · flip TTA" if r.get("tta") else ""),
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {100 * r['accuracy']:.2f}% |",
        f"| {top} accuracy | {100 * r[top]:.2f}% |",
        f"| macro precision | {100 * r['macro_precision']:.2f}% |",
        f"| macro recall | {100 * r['macro_recall']:.2f}% |",
        f"| macro F1 | {100 * r['macro_f1']:.2f}% |",
        f"| expected calibration error (15 bins) | {100 * r['ece']:.2f}% |",
        f"| negative log-likelihood | {r['nll']:.4f} |",
        f"| images | {r['n']} |",
        "",
    ]
    if r.get("ensemble"):
        e = r["ensemble"]
        lines += ["## Ensemble members", "", "| member | accuracy | macro F1 |", "|---|---|---|"]
        for m in e["members"]:
            lines.append(f"| {m['name']} | {100 * m['accuracy']:.2f}% | {100 * m['macro_f1']:.2f}% |")
        lines.append(f"| **mean probability** | **{100 * r['accuracy']:.2f}%** | **{100 * r['macro_f1']:.2f}%** |")
        mv = e["majority_vote"]
        lines += [f"| majority vote | {100 * mv['accuracy']:.2f}% | {100 * mv['macro_f1']:.2f}% |", ""]
    lines += ["## Per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for row in r["per_class"]:
        lines.append(
            f"| {row['class']} | {100 * row['precision']:.1f}% | {100 * row['recall']:.1f}% | {100 * row['f1']:.1f}% | {row['support']} |"
        )
    lines += [
        "",
        "## Most confused (true → predicted)",
        "",
        "| true | predicted | count | share of true class |",
        "|---|---|---|---|",
    ]
    for row in r["most_confused"]:
        lines.append(f"| {row['true']} | {row['predicted']} | {row['count']} | {100 * row['rate']:.1f}% |")
    lines += [""]
    figures = [
        f
        for f in ("confusion_matrix.png", "reliability.png", "misclassified.png", "training_curves.png")
        if f in r.get("figures", [])
    ]
    lines += [f"![{f[:-4].replace('_', ' ')}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _write_figures(
    out: Path,
    result: dict[str, Any],
    probs: np.ndarray,
    labels: np.ndarray,
    images: np.ndarray | None,
    metrics_csvs: Sequence[tuple[str, str | Path]],
) -> list[str]:
    classes = result["classes"]
    figures = []
    plots.confusion_matrix(np.array(result["confusion_matrix"]), classes, out / "confusion_matrix.png")
    figures.append("confusion_matrix.png")
    plots.reliability(
        {"bins": result["calibration_bins"], "ece": result["ece"], "n_bins": len(result["calibration_bins"])},
        out / "reliability.png",
    )
    figures.append("reliability.png")
    if images is not None:
        plots.misclassified(images, labels, probs, classes, out / "misclassified.png")
        figures.append("misclassified.png")
    runs = [(label, Path(p)) for label, p in metrics_csvs if Path(p).is_file()]
    if runs:
        plots.training_curves(runs, out / "training_curves.png")
        figures.append("training_curves.png")
    return figures


def write_report(
    out_dir: str | Path,
    result: dict[str, Any],
    *,
    probs: np.ndarray,
    labels: np.ndarray,
    images: np.ndarray | None = None,
    data: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    metrics_csvs: Sequence[tuple[str, str | Path]] = (),
    title: str = "",
    tta: bool = False,
    extra: dict[str, Any] | None = None,
    command: str | None = None,
    plots_enabled: bool = True,
) -> dict[str, Any]:
    """Write report.json, report.md, predictions.npz and (unless ``plots_enabled`` is False) the figures;
    returns the full report dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[str] = []
    if plots_enabled:
        figures = _write_figures(out, result, probs, labels, images, metrics_csvs)
    np.savez_compressed(out / "predictions.npz", probs=np.asarray(probs, dtype=np.float32), labels=np.asarray(labels))
    data = dict(data or {})
    if "description" not in data and "split" in data:
        data["description"] = describe_split(data)
    report = {
        "title": title,
        **result,
        "tta": tta,
        "data": data,
        "model": model or {},
        "figures": figures,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command or shlex.join(["python", "-m", "ml", *sys.argv[1:]]),
        **(extra or {}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    return report


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
        choices=("fp32", "bf16", "auto"),
        help="a bundle's inference precision (default fp32; auto = what the worker runs: bf16 on CPUs with bf16 in "
        "hardware)",
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
    parser = argparse.ArgumentParser(
        prog="python -m ml evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    )
    print(summary_line(result))
    print(f"report: {out}/report.json, report.md" + ("" if args.no_plots else " and PNGs"))
