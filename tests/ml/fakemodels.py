"""Tiny real training runs for the evaluate / ensemble / compare / export tests.

`tiny_runs(tmp_path_factory)` writes a small image folder (tests/ml/fakedata.write_image_folder:
4 classes x 20 images, 5 per class held out) and trains two ResNet-20s at width 0.25 on it (seeds 0
and 1, one epoch each) with the real `ml.train.train`; it does so once per test session and returns
``{"data": folder, "ckpts": [ckpt_seed0, ckpt_seed1], "cache": decode cache}``. Each run folder has
the config, metrics.csv and checkpoint exactly as a real run does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ml.data
from ml.train import TrainConfig, train
from tests.ml.fakedata import write_image_folder

VAL_PER_CLASS = 5
_SESSION: dict[str, Any] = {}


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


def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not _SESSION:
        root = tmp_path_factory.mktemp("tiny-runs")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ml.data, "DEFAULT_CACHE_DIR", root / "cache")
            data = write_image_folder(root / "folder")
            ckpts = [train_tiny(root / "runs", data, name=f"tiny-seed{seed}", seed=seed) for seed in (0, 1)]
        _SESSION.update({"data": data, "ckpts": ckpts, "cache": root / "cache"})
    return _SESSION
