"""Tiny real training runs for the evaluate / ensemble / compare / export tests.

`train_tiny` trains a ResNet-20 at width 0.25 with the real `ml.train.train` (5 images per class
held out). The ``tiny_runs`` / ``tiny`` fixtures in tests/ml/conftest.py use it to train two such
runs once per session. Each run folder has the config, metrics.csv and checkpoint exactly as a
real run does.
"""

from __future__ import annotations

from pathlib import Path

from ml.train import TrainConfig, train

VAL_PER_CLASS = 5


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
