"""The optimiser of a training run: parameter groups (no weight decay on norms and biases, a
learning-rate multiplier for the backbone), SGD or AdamW, the learning-rate schedule, and the
state an interrupted run resumes from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ml.checkpoint import read_checkpoint
from ml.training.config import TrainConfig
from ml.training.model import EMA

Plateau = torch.optim.lr_scheduler.ReduceLROnPlateau


def param_groups(
    model: nn.Module, weight_decay: float, head: str | None = None, backbone_lr_mult: float = 1.0
) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only; none on norms and biases. With
    ``backbone_lr_mult`` != 1, parameters outside module ``head`` get an ``lr_mult`` group of their own."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            in_backbone = backbone_lr_mult != 1.0 and not (head and name.startswith(head + "."))
            groups.setdefault((in_backbone, p.ndim > 1), []).append(p)
    out = []
    for in_backbone in (False, True):
        for decays in (True, False):
            if (in_backbone, decays) in groups or not in_backbone:  # keep the two plain groups for resume
                out.append(
                    {
                        "params": groups.get((in_backbone, decays), []),
                        "weight_decay": weight_decay if decays else 0.0,
                        "lr_mult": backbone_lr_mult if in_backbone else 1.0,
                    }
                )
    return out


def make_optimizer(cfg: TrainConfig, model: nn.Module, head: str) -> tuple[torch.optim.Optimizer, Plateau | None]:
    """(optimiser, plateau scheduler or None): ``cfg.optimizer`` over `param_groups`; the plateau
    scheduler only for ``schedule=plateau`` (the other schedules are `lr_factor`, set each step)."""
    groups = param_groups(model, cfg.weight_decay, head=head, backbone_lr_mult=cfg.backbone_lr_mult)
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd or adamw)")
    plateau = Plateau(opt, mode="max", factor=0.2, patience=3) if cfg.schedule == "plateau" else None
    return opt, plateau


def steps_per_epoch(images: int, batch_size: int, world: int) -> int:
    # A final batch smaller than the number of ranks would leave a rank with nothing: drop it.
    return images // batch_size + (images % batch_size >= world)


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


@dataclass
class Progress:
    """Where the run stands: the next epoch (0-based), the best validation accuracy so far, and
    the epochs since it (early stopping)."""

    epoch: int = 0
    best: float = 0.0
    stale: int = 0


def resume(
    path: str,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    plateau: Plateau | None,
    ema: EMA | None,
    device: torch.device,
) -> Progress:
    """Load an interrupted run's ``checkpoint.pt`` into the model, optimiser, scheduler and EMA;
    returns where it stopped."""
    ckpt = read_checkpoint(path)
    model.load_state_dict(ckpt.get("raw_state_dict", ckpt["state_dict"]))
    opt.load_state_dict(ckpt["optimizer"])
    if ema is not None:
        ema.shadow = {k: v.to(device) for k, v in ckpt["state_dict"].items()}
    if plateau is not None and ckpt.get("scheduler"):
        plateau.load_state_dict(ckpt["scheduler"])
    return Progress(epoch=ckpt["epoch"] + 1, best=ckpt["best"], stale=ckpt.get("stale", 0))
