"""Tiny models for the ml tests: real training runs, and untrained nets that look trained.

`trained_like` builds a small model of any registered architecture with non-trivial batch-norm
statistics (so eval mode differs from a fresh init). `train_tiny` trains a ResNet-20 at width 0.25 with the real `ml.train.train` (5 images per class
held out). The ``tiny_runs`` / ``tiny`` fixtures in tests/ml/conftest.py use it to train two such
runs once per session. Each run folder has the config, metrics.csv and checkpoint exactly as a
real run does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ml.models import build_model
from ml.train import TrainConfig, train

VAL_PER_CLASS = 5


def trained_like(arch: str, num_classes: int, seed: int = 0, *, scales: bool = False, **options) -> torch.nn.Module:
    """``arch`` (with ``options``) seeded, its batch norms given random running statistics and
    shifts (and scales with ``scales=True``), in eval mode."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=num_classes, **options)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            if scales:
                m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def train_tiny(runs_dir: Path, data_root: Path, *, name: str = "tiny", seed: int = 0, epochs: int = 1) -> Path:
    cfg = TrainConfig(
        name=name,
        out_dir=str(runs_dir),
        seed=seed,
        data=str(data_root),
        val_per_class=VAL_PER_CLASS,
        model="resnet20",
        width=0.25,
        epochs=epochs,
        batch_size=16,
        lr=0.05,
        progress=False,
    )
    result = train(cfg)
    return Path(result["run_dir"]) / "checkpoint.pt"
