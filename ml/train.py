"""Train one model on a CIFAR-style data set.

    python -m ml train model=resnet20 epochs=30 name=resnet20-cpu
    python -m ml train --config ml/configs/resnet20.yaml seed=1

Config: the `TrainConfig` dataclass below; a YAML file may set any field; ``key=value`` overrides
are parsed to the field's type and unknown keys are refused. Each run writes
``runs/<YYYYmmdd-HHMMSS>-<name>/``: ``config.yaml``, ``metrics.csv`` (one row per epoch),
``checkpoint.pt`` (last) and ``best.pt`` (best validation accuracy).

On CUDA the whole data set lives on the GPU, augmentation runs on batched tensors, and the forward
pass uses bf16 autocast and channels_last. The same code runs on the CPU, slower.
Measured: see the README's "ML" section for hardware, times and accuracies.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ml.augment import augment_batch, normalize
from ml.checkpoint import save_checkpoint
from ml.data import load_source, stratified_split
from ml.models import build_model, count_flops, count_parameters


# ============================================================================= config
@dataclass
class TrainConfig:
    name: str = "run"  # run folder suffix
    out_dir: str = "runs"  # runs/<timestamp>-<name>/
    seed: int = 0
    # data
    data: str = "../shared/datasets/cifar10-jpeg/train"  # image folder, or a CIFAR archive / folder
    val_per_class: int = 500  # seeded, stratified hold-out; 0 = train on everything
    split_seed: int = 0  # the split is fixed across runs unless this changes
    train_limit: int = 0  # >0: use only this many training images (tests, smoke runs)
    # model
    model: str = "resnet20"
    width: float = 1.0  # channel multiplier (ResNets)
    norm: bool = True  # batch norm on/off (ablation)
    residual: bool = True  # skip connections on/off (ablation)
    # optimisation
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4  # not applied to norms and biases
    schedule: str = "onecycle"  # onecycle | cosine | step | plateau | constant
    warmup_epochs: float = 1.0  # linear warm-up (cosine, step, constant)
    step_milestones: str = "0.5,0.75"  # fractions of training (step schedule)
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # >0: evaluate and save an exponential moving average of the weights
    early_stop_patience: int = 0  # >0: stop after this many epochs without a better val accuracy
    # augmentation
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0  # cutout square size in pixels; 0 = off
    # runtime
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False  # torch.compile the model (CUDA)
    threads: int = 0  # >0: torch.set_num_threads
    progress: bool = True
    resume: str = ""  # checkpoint.pt of an interrupted run, resumed in place


def _parse_value(field_type: Any, raw: str) -> Any:
    origin = typing.get_origin(field_type)
    if origin in (typing.Union, types.UnionType):
        field_type = next(t for t in typing.get_args(field_type) if t is not type(None))
    if field_type is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    return field_type(raw)


def load_config(config_file: str | None, overrides: list[str], cls: type = None) -> Any:
    """Defaults, then the YAML file, then ``key=value`` overrides; unknown keys are refused."""
    cls = cls or TrainConfig
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if config_file:
        loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file} must hold a mapping of config keys")
        values.update(loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        if key not in hints:
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(hints)}")
        try:
            values[key] = _parse_value(hints[key], raw)
        except ValueError as exc:
            raise ValueError(f"bad value for {key}: {exc}") from exc
    unknown = set(values) - set(hints)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    for key, value in values.items():  # YAML values are checked too
        expected = hints[key]
        if typing.get_origin(expected) is None and expected is float and isinstance(value, int):
            values[key] = float(value)
        elif typing.get_origin(expected) is None and not isinstance(value, expected):
            raise ValueError(f"config key {key} must be {expected.__name__}, got {value!r}")
    return cls(**values)


# ============================================================================= helpers
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only; none on norms and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (plateau is handled apart)."""
    progress = step / max(1, total)
    if cfg.schedule == "onecycle":  # linear up for 25%, linear down to 0
        peak = 0.25
        return progress / peak if progress < peak else max(0.0, (1 - progress) / (1 - peak))
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        rest = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * rest))
    if cfg.schedule == "step":
        milestones = [float(m) for m in cfg.step_milestones.split(",") if m]
        return 0.1 ** sum(progress >= m for m in milestones)
    if cfg.schedule in ("constant", "plateau"):
        return 1.0
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


class EMA:
    """Exponential moving average of parameters and buffers (batch-norm statistics included)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v, 1 - self.decay)
            else:
                self.shadow[k].copy_(v)


@torch.no_grad()
def infer(model: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``model`` on uint8 images (any device), in eval mode, as float32 on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].to(device, non_blocking=True), mean, std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def run_dir(cfg: TrainConfig) -> Path:
    if cfg.resume:
        return Path(cfg.resume).parent
    path = Path(cfg.out_dir) / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.name}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, leave=False, dynamic_ncols=True, **kwargs)


# ============================================================================= train
def train(cfg: TrainConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    out = run_dir(cfg)
    (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

    # ---------------------------------------------------------------- data
    data = load_source(cfg.data)
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
    mean = train_x.float().mean(dim=(0, 2, 3)).div(255).cpu()
    std = train_x.float().std(dim=(0, 2, 3)).div(255).cpu()
    mean_d, std_d = mean.to(device), std.to(device)
    print(f"data: {data.source} | {len(train_idx)} train, {len(val_idx)} val, {len(data.classes)} classes | device {device}")

    # ---------------------------------------------------------------- model
    model_options = {"width": cfg.width, "norm": cfg.norm, "residual": cfg.residual} if cfg.model != "plain_cnn" else {}
    model = build_model(cfg.model, num_classes=len(data.classes), **model_options)
    params, flops = count_parameters(model), count_flops(model)
    print(f"model: {cfg.model} {model_options} | {params / 1e6:.2f} M parameters | {flops / 1e6:.1f} M MACs/image")
    model = model.to(device, memory_format=torch.channels_last)
    forward = torch.compile(model) if cfg.compile else model
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    # ---------------------------------------------------------------- optimiser
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd or adamw)")
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.2, patience=3) if cfg.schedule == "plateau" else None
    start_epoch, best, step = 0, 0.0, 0
    if cfg.resume:
        from ml.checkpoint import read_checkpoint

        ckpt = read_checkpoint(cfg.resume)
        model.load_state_dict(ckpt.get("raw_state_dict", ckpt["state_dict"]))
        opt.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.shadow = {k: v.to(device) for k, v in ckpt["state_dict"].items()}
        if plateau is not None and ckpt.get("scheduler"):
            plateau.load_state_dict(ckpt["scheduler"])
        start_epoch, best = ckpt["epoch"] + 1, ckpt["best"]
        step = start_epoch * steps_per_epoch
        print(f"resumed {cfg.resume} at epoch {start_epoch}")

    # ---------------------------------------------------------------- loop
    metrics_path = out / "metrics.csv"
    fields = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "images_per_s"]
    if not cfg.resume or not metrics_path.exists():
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(fields)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    stale = 0
    final: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(train_x), device=device, generator=gen)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for i in progress(range(steps_per_epoch), cfg.progress, desc=f"epoch {epoch + 1}/{cfg.epochs}"):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = normalize(train_x[idx], mean_d, std_d)
            x = augment_batch(x, crop_padding=cfg.crop_padding, flip=cfg.flip, cutout_size=cfg.cutout, generator=gen)
            y = train_y[idx]
            if plateau is None:
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(cfg, step, total_steps, steps_per_epoch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = forward(x.contiguous(memory_format=torch.channels_last))
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(model)
            step += 1
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_s = time.perf_counter() - t0

        # evaluate the weights that would be saved (EMA when on)
        eval_model = model
        if ema is not None:
            eval_model = build_model(cfg.model, num_classes=len(data.classes), **model_options).to(device)
            eval_model.load_state_dict(ema.shadow)
        row = {
            "epoch": epoch + 1,
            "lr": opt.param_groups[0]["lr"],
            "train_loss": (loss_sum / len(train_idx)).item(),
            "train_acc": (correct / len(train_idx)).item(),
            "val_loss": float("nan"),
            "val_acc": float("nan"),
            "epoch_s": epoch_s,
            "images_per_s": len(train_idx) / epoch_s,
        }
        if len(val_idx):
            logits = infer(eval_model, val_x, mean_d, std_d)
            row["val_loss"] = F.cross_entropy(logits, val_y).item()
            row["val_acc"] = (logits.argmax(1) == val_y).float().mean().item()
        if plateau is not None:
            plateau.step(row["val_acc"] if len(val_idx) else -row["train_loss"])
        with open(metrics_path, "a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in fields])
        print(
            f"epoch {epoch + 1:3d} | lr {row['lr']:.4f} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
            f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | {epoch_s:.1f}s {row['images_per_s']:.0f} img/s",
            flush=True,
        )

        # ------------------------------------------------------------ save
        improved = len(val_idx) and row["val_acc"] > best
        best = max(best, row["val_acc"]) if len(val_idx) else best
        final = {"val_acc": row["val_acc"], "val_loss": row["val_loss"], "best_val_acc": best, "epoch": epoch + 1}
        payload = {
            "arch": cfg.model,
            "model_options": model_options,
            "classes": data.classes,
            "superclasses": data.superclasses,
            "mean": mean.tolist(),
            "std": std.tolist(),
            "state_dict": {k: v.detach().cpu() for k, v in eval_model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "scheduler": plateau.state_dict() if plateau is not None else None,
            "epoch": epoch,
            "best": best,
            "config": dataclasses.asdict(cfg),
            "metrics": {**final, "params": params, "macs": flops, "val_split": {"per_class": cfg.val_per_class, "seed": cfg.split_seed}},
        }
        if ema is not None:
            payload["raw_state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(out / "checkpoint.pt", payload)
        if improved:
            save_checkpoint(out / "best.pt", payload)
            stale = 0
        else:
            stale += 1
        if cfg.early_stop_patience and stale >= cfg.early_stop_patience:
            print(f"early stop: no better val accuracy for {stale} epochs")
            break

    print(f"done: {out} | {final}")
    return {"run_dir": str(out), **final}


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ml train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with TrainConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of TrainConfig fields")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ValueError as exc:
        parser.error(str(exc))
    train(cfg)
