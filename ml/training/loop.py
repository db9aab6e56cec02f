"""One epoch of a training run: the optimiser steps over this rank's shards (`train_epoch`), the
validation of the weights that would be saved (`validate`), best accuracy and early stopping
(`track_best`), the epoch's row in metrics.csv, TensorBoard and the console (`EpochLog`), and the
checkpoint (`checkpoint_payload`)."""

from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ml import precision as prec
from ml.augment import augment_batch, normalize
from ml.finetune import train_mode
from ml.runs import progress, write_tensorboard
from ml.training.config import Runtime, TrainConfig
from ml.training.data import TrainData
from ml.training.model import EMA, TrainModel, infer
from ml.training.optim import Plateau, Progress, lr_factor


def train_epoch(
    cfg: TrainConfig,
    rt: Runtime,
    epoch: int,
    forward: nn.Module,
    net: TrainModel,
    data: TrainData,
    opt: torch.optim.Optimizer,
    ema: EMA | None,
    *,
    per_epoch: int,
    scheduled: bool,
) -> dict[str, float]:
    """Train one epoch of ``per_epoch`` steps through ``forward`` (``net.module``, maybe wrapped);
    with ``scheduled`` the learning rate follows `lr_factor` each step. Returns the row's lr,
    training loss and accuracy (over all ranks), seconds and images/s."""
    model, device, world, rank = net.module, rt.device, rt.world, rt.rank
    train_mode(model, net.frozen)
    t0 = time.perf_counter()
    # Seeded per epoch: every rank draws the same order, and a resumed run the same as an uninterrupted one.
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
    order = order.to(device)
    aug_gen = torch.Generator(device=device).manual_seed((cfg.seed * 100_003 + epoch) * world + rank)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = torch.zeros((), device=device)
    for i in progress(range(per_epoch), cfg.progress and rt.main, desc=f"epoch {epoch + 1}/{cfg.epochs}"):
        idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size][rank::world]  # this rank's shard
        x = normalize(data.train_x[idx], data.mean_d, data.std_d)
        x = augment_batch(x, crop_padding=cfg.crop_padding, flip=cfg.flip, cutout_size=cfg.cutout, generator=aug_gen)
        y = data.train_y[idx]
        if scheduled:
            factor = lr_factor(cfg, epoch * per_epoch + i, cfg.epochs * per_epoch, per_epoch)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * factor * g.get("lr_mult", 1.0)
        with prec.autocast(device, rt.dtype):
            logits = forward(x.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over ranks here
        opt.step()
        if ema is not None:
            ema.update(model)
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
    if world > 1:
        totals = torch.stack([loss_sum, correct, seen])
        dist.all_reduce(totals)
        loss_sum, correct, seen = totals
        for buffer in model.buffers():  # batch-norm statistics as rank 0 has them
            dist.broadcast(buffer, src=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    epoch_s = time.perf_counter() - t0
    return {
        "lr": max(g["lr"] for g in opt.param_groups),
        "train_loss": (loss_sum / seen).item(),
        "train_acc": (correct / seen).item(),
        "epoch_s": epoch_s,
        "images_per_s": seen.item() / epoch_s,
    }


def validate(model: nn.Module, data: TrainData, rt: Runtime) -> dict[str, float]:
    """Validation loss and accuracy of ``model`` on rank 0; NaN on the other ranks and without a hold-out."""
    row = {"val_loss": float("nan"), "val_acc": float("nan")}
    if rt.main and data.has_val:
        logits = infer(model, data.val_x, data.mean_d, data.std_d, dtype=rt.dtype)
        row["val_loss"] = F.cross_entropy(logits, data.val_y).item()
        row["val_acc"] = (logits.argmax(1) == data.val_y).float().mean().item()
    return row


def track_best(state: Progress, row: dict[str, float], has_val: bool, patience: int, world: int) -> tuple[bool, bool]:
    """Update ``state``'s best accuracy and stale epochs from the row; returns (improved, stop).
    Under torchrun rank 0's validation (the row's, the best, stale, stop) is sent to every rank, so
    it drives the schedule and early stopping everywhere."""
    improved = has_val and row["val_acc"] > state.best
    state.best = max(state.best, row["val_acc"]) if has_val else state.best
    state.stale = 0 if improved else state.stale + 1
    stop = bool(patience) and state.stale >= patience
    if world > 1:
        shared = torch.tensor(
            [row["val_loss"], row["val_acc"], state.best, float(state.stale), float(stop)], dtype=torch.float64
        )
        dist.broadcast(shared, src=0)
        row["val_loss"], row["val_acc"], state.best = shared[0].item(), shared[1].item(), shared[2].item()
        state.stale, stop = int(shared[3].item()), bool(shared[4].item())
    return improved, stop


class EpochLog:
    """metrics.csv (header written unless a resumed run has one), TensorBoard scalars and the
    console line, one row per epoch; does nothing when not ``enabled`` (ranks other than 0)."""

    FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "images_per_s"]

    def __init__(self, out: Path, cfg: TrainConfig, enabled: bool):
        self.path, self.enabled = out / "metrics.csv", enabled
        if enabled and (not cfg.resume or not self.path.exists()):
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)
        self.tb = write_tensorboard(out, cfg.tensorboard) if enabled else None

    def write(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in self.FIELDS])
        if self.tb is not None:
            for key in self.FIELDS[1:]:
                self.tb.add_scalar(key, row[key], row["epoch"])
            self.tb.flush()
        print(
            f"epoch {row['epoch']:3d} | lr {row['lr']:.4f} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
            f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
            f" | {row['epoch_s']:.1f}s {row['images_per_s']:.0f} img/s",
            flush=True,
        )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def checkpoint_payload(
    cfg: TrainConfig,
    net: TrainModel,
    data: TrainData,
    saved: nn.Module,
    ema: EMA | None,
    opt: torch.optim.Optimizer,
    plateau: Plateau | None,
    epoch: int,
    state: Progress,
    final: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint of epoch ``epoch`` (0-based), in ml.checkpoint's format: ``saved``'s weights
    (the EMA when on, with the raw weights beside them for resuming) and everything to resume."""
    payload = {
        "arch": cfg.model,
        "model_options": net.options,
        "classes": data.classes,
        "superclasses": data.dataset.superclasses,
        "mean": data.mean.tolist(),
        "std": data.std.tolist(),
        "state_dict": {k: v.detach().cpu() for k, v in saved.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": plateau.state_dict() if plateau is not None else None,
        "epoch": epoch,
        "best": state.best,
        "stale": state.stale,
        "config": dataclasses.asdict(cfg),
        "metrics": {
            **final,
            "params": net.params,
            "macs": net.macs,
            "val_split": {"per_class": cfg.val_per_class, "seed": cfg.split_seed},
        },
        "data": {k: v for k, v in data.dataset.extra.items() if k != "cache"} | {"source": data.dataset.source},
    }
    if ema is not None:
        payload["raw_state_dict"] = {k: v.detach().cpu() for k, v in net.module.state_dict().items()}
    return payload
