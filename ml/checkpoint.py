"""Checkpoints written by `ml.train` and read by evaluate, export and fine-tuning.

A checkpoint is a ``torch.save`` dict::

    format         "ml-checkpoint-v1"
    arch           registered model name (ml.models.MODELS)
    model_options  constructor options (width, norm, residual, ...)
    classes        class names, in label order
    superclasses   class -> superclass, or None
    mean, std      normalisation used in training (0-1 scale, per channel)
    state_dict     the weights to use (the EMA weights when EMA was on)
    raw_state_dict the optimiser's weights when EMA was on (for resuming), else absent
    optimizer, scheduler, epoch, best   for resuming
    stale          epochs since the best validation accuracy (early stopping on resume); may be absent
    data           where the data came from: source, dataset, split, label_mode, subsets; may be absent
    config         the training config (dict)
    metrics        final validation metrics
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ml.models import build_model

FORMAT = "ml-checkpoint-v1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ml checkpoint (format {FORMAT})")
    return ckpt


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the checkpoint's model with its weights, in eval mode; returns (model, checkpoint)."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["arch"], num_classes=len(ckpt["classes"]), **ckpt.get("model_options", {}))
    # member files beside a bundle (ml export --save-members) store half precision: compute in float32
    model.load_state_dict({k: v.float() if v.dtype == torch.float16 else v for k, v in ckpt["state_dict"].items()})
    model.eval()
    return model, ckpt
