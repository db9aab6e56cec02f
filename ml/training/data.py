"""The data of a training run: the source loaded and split, the training and validation images as
uint8 tensors on the device, and the normalisation (the data's own, or the checkpoint's when
fine-tuning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ml.data import ArrayDataset, load_source, stratified_split
from ml.training.config import TrainConfig


@dataclass
class TrainData:
    dataset: ArrayDataset  # the loaded source: classes, superclasses, source, extra
    train_x: torch.Tensor  # uint8 N x 3 x H x W, on the device
    train_y: torch.Tensor  # int64, on the device
    val_x: torch.Tensor  # uint8, on the device (empty without a hold-out)
    val_y: torch.Tensor  # int64, on the CPU (compared with infer()'s CPU logits)
    mean: torch.Tensor  # per channel, 0-1 scale, on the CPU (saved in the checkpoint)
    std: torch.Tensor
    mean_d: torch.Tensor  # the same on the device
    std_d: torch.Tensor

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def has_val(self) -> bool:
        return len(self.val_y) > 0


def prepare_data(cfg: TrainConfig, device: torch.device, init: dict[str, Any] | None) -> TrainData:
    """Load ``cfg.data``, hold out the seeded stratified validation split, cut ``train_limit``, and
    move the images to ``device``."""
    data = load_source(
        cfg.data,
        split=cfg.split,
        label_mode=cfg.label_mode,
        classes=cfg.classes or None,
        superclass=cfg.superclass or None,
        expected_md5=cfg.data_md5 or None,
    )
    if cfg.val_per_class:
        train_idx, val_idx = stratified_split(data.labels, cfg.val_per_class, cfg.split_seed)
    else:
        train_idx, val_idx = np.arange(len(data)), np.array([], dtype=np.int64)
    if cfg.train_limit:
        train_idx = np.random.default_rng(cfg.seed).permutation(train_idx)[: cfg.train_limit]
    # The whole set lives on the device as uint8; batches are cut from it with index tensors.
    train_x = torch.from_numpy(data.images[train_idx]).to(device)
    train_y = torch.from_numpy(data.labels[train_idx]).to(device)
    val_x = torch.from_numpy(data.images[val_idx]).to(device)
    val_y = torch.from_numpy(data.labels[val_idx])
    if init is not None:  # the backbone expects the normalisation it was trained with
        mean, std = torch.tensor(init["mean"]), torch.tensor(init["std"])
    else:
        mean = train_x.float().mean(dim=(0, 2, 3)).div(255).cpu()
        std = train_x.float().std(dim=(0, 2, 3)).div(255).cpu()
    return TrainData(data, train_x, train_y, val_x, val_y, mean, std, mean.to(device), std.to(device))
