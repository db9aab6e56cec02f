"""The model of a training run: built for the data's classes, started from an ``init_from``
checkpoint and partly frozen when fine-tuning; its exponential moving average (`EMA`); and
`infer`, its logits on uint8 images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ml import precision as prec
from ml.augment import normalize
from ml.finetune import head_name, load_backbone, parse_freeze
from ml.models import build_model, count_flops, count_parameters
from ml.models.fast import whitening_sample
from ml.training.config import TrainConfig
from ml.training.data import TrainData


@dataclass
class TrainModel:
    module: nn.Module  # on the device, channels_last; not wrapped (no DDP, no torch.compile)
    options: dict[str, Any]  # constructor options, saved as the checkpoint's model_options
    head: str  # the classifier's name (it keeps the full learning rate)
    frozen: list[nn.Module]  # units without gradients that stay in eval mode
    params: int
    macs: int  # per image


def build_train_model(
    cfg: TrainConfig,
    data: TrainData,
    device: torch.device,
    init: dict[str, Any] | None,
    log: Callable[..., None] = print,
) -> TrainModel:
    """A fresh ``cfg.model`` for the data's classes, or the ``init`` checkpoint's backbone (its
    classifier too when the classes match and ``new_head`` is off), with ``cfg.freeze`` applied."""
    options = {"width": cfg.width, "norm": cfg.norm, "residual": cfg.residual} if cfg.model != "plain_cnn" else {}
    model = build_model(cfg.model, num_classes=len(data.classes), **options)
    head = head_name(model)
    if init is None and hasattr(model, "init_from_data"):  # e.g. the fast net's whitening layer
        model.init_from_data(normalize(whitening_sample(data.train_x, seed=cfg.seed), data.mean_d, data.std_d).cpu())
    if init is not None:
        keep_head = not cfg.new_head and list(init["classes"]) == list(data.classes)
        load_backbone(model, init, keep_head)
        log(f"init_from {cfg.init_from}: backbone loaded, classifier {head!r} {'kept' if keep_head else 'new'}")
    frozen_names = parse_freeze(cfg.freeze, model)
    frozen = [model.get_submodule(n) for n in frozen_names]
    for module in frozen:
        module.requires_grad_(False)
    if frozen_names:
        n_frozen = sum(p.numel() for m in frozen for p in m.parameters())
        log(f"frozen: {', '.join(frozen_names)} ({n_frozen:,} parameters)")
    params, macs = count_parameters(model), count_flops(model)
    log(f"model: {cfg.model} {options} | {params / 1e6:.2f} M parameters | {macs / 1e6:.1f} M MACs/image")
    model = model.to(device, memory_format=torch.channels_last)
    return TrainModel(model, options, head, frozen, params, macs)


def parallel(model: nn.Module, cfg: TrainConfig, device: torch.device, world: int) -> nn.Module:
    """What the loop calls: ``model`` in DistributedDataParallel under torchrun, compiled when asked."""
    wrapped: nn.Module = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(wrapped) if cfg.compile else wrapped


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


def saved_weights(
    net: TrainModel, ema: EMA | None, cfg: TrainConfig, num_classes: int, device: torch.device
) -> nn.Module:
    """The weights that are evaluated and saved: the model itself, or a copy holding the EMA."""
    if ema is None:
        return net.module
    model = build_model(cfg.model, num_classes=num_classes, **net.options).to(device)
    model.load_state_dict(ema.shadow)
    return model


@torch.no_grad()
def infer(
    model: nn.Module,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int = 1000,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits of ``model`` on uint8 images (any device), in eval mode, as float32 on the CPU;
    ``dtype`` is the autocast dtype (None = fp32)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].to(device, non_blocking=True), mean, std)
        with prec.autocast(device, dtype):
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
