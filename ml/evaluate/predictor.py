"""A checkpoint or a model bundle as a `Predictor` (uint8 images in, probabilities out) and what it records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.evaluate.data import DATA_OPTION_KEYS

RUN_CHECKPOINT_NAMES = {"best", "checkpoint", "last"}  # the files ml.train and ml.speedrun write in a run folder


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
    set_thresholds: list[float] | None = None  # a bundle's answer-set thresholds, one per class (ml.conformal)
    set_coverage: float | None = None  # the coverage they were fitted for

    @property
    def name(self) -> str:
        """A run's ``best.pt``/``checkpoint.pt`` goes by its run folder; a named checkpoint (a bundle's
        ``members/01-fastnet-seed2.pt``) by its own name; a bundle by its folder."""
        p = Path(self.path)
        if p.suffix != ".pt":
            return p.name
        return p.parent.name if p.stem in RUN_CHECKPOINT_NAMES else p.stem

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
    from worker.runtime.manifest import set_thresholds

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
        set_thresholds=set_thresholds(manifest.prediction_set, len(manifest.classes)),
        set_coverage=(manifest.prediction_set or {}).get("coverage"),
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
