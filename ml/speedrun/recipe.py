"""The fast recipe's pieces: Nesterov SGD with its two parameter groups, the triangular schedule,
the lookahead EMA, the batched augmentation (translation, alternating flip, cutout; mixup) and evaluation
with test-time augmentation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.augment import cutout, random_crop
from ml.speedrun.config import SpeedrunConfig
from ml.train import infer
from ml.tta import TestTimeAugment


# ============================================================================= optimiser and schedule
def nesterov_sgd(model: nn.Module, cfg: SpeedrunConfig) -> torch.optim.SGD:
    """Nesterov SGD with batch-norm biases at ``bias_scaler`` x the learning rate (first group) and
    everything else trainable (second); each group keeps its peak rate as ``base_lr``."""
    # lr and weight decay are given per 1024 images of a summed loss; PyTorch's SGD couples decay
    # to the learning rate, so each group's decay is divided by its learning rate.
    kilostep = 1024 * (1 + 1 / (1 - cfg.momentum))
    lr = cfg.lr / kilostep
    wd = cfg.weight_decay * cfg.batch_size / kilostep
    lr_bias = lr * cfg.bias_scaler
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in model.named_parameters() if "norm" not in n and p.requires_grad]
    groups = [
        {"params": norm_biases, "lr": lr_bias, "weight_decay": wd / lr_bias, "base_lr": lr_bias},
        {"params": others, "lr": lr, "weight_decay": wd / lr, "base_lr": lr},
    ]
    return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True)


def triangle(step: int, total: int, start: float = 0.2, peak_at: float = 0.23, end: float = 0.07) -> float:
    return float(np.interp(step, [0, peak_at * total, total], [start, 1.0, end]))


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    """Every group's learning rate to ``factor`` x its ``base_lr``."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


# ============================================================================= lookahead EMA
class Lookahead:
    """Every few steps, pull the weights (and batch-norm statistics) to a moving average."""

    def __init__(self, model: nn.Module):
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].lerp_(value, 1 - decay)
                value.copy_(self.shadow[key])


# ============================================================================= augmentation
def alternating_flip(x: torch.Tensor, base: torch.Tensor, epoch: int) -> torch.Tensor:
    """Flip the images whose ``base`` bit differs from the epoch's parity: each image is mirrored
    every other epoch, so two consecutive epochs see both orientations."""
    flip = base ^ bool(epoch % 2)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def augment(
    x: torch.Tensor, cfg: SpeedrunConfig, flip_base: torch.Tensor, epoch: int, generator: torch.Generator
) -> torch.Tensor:
    """The configured translation (reflect padding), alternating flip and cutout, in that order,
    of a normalised batch; ``flip_base`` is the batch's images' flip bits."""
    if cfg.translate:
        x = random_crop(x, cfg.translate, generator)
    if cfg.flip:
        x = alternating_flip(x, flip_base, epoch)
    if cfg.cutout:
        x = cutout(x, cfg.cutout, generator)
    return x


def mix(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, lam: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al., 2018) of a batch with weight ``lam`` (drawn per batch from
    Beta(alpha, alpha) by the caller): each image blended with another of the batch (a seeded
    permutation), and the labels likewise. Returns the blended images and the label distributions
    (rows summing to 1), which ``F.cross_entropy`` takes as targets. Under distillation the teacher
    labels the blended images themselves ("function matching", Beyer et al., 2022), so the student
    meets new points at every step instead of the same 45,000 again."""
    perm = torch.randperm(len(x), generator=generator, device=x.device)
    onehot = F.one_hot(y, num_classes).to(torch.float32)
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]


# ============================================================================= evaluation
def evaluate_logits(model: nn.Module, images: torch.Tensor, mean, std, tta: int, dtype) -> torch.Tensor:
    """Logits (float32, on the CPU) of uint8 ``images`` with TTA level ``tta``, in eval mode; the
    model's own training mode is restored afterwards."""
    return infer(TestTimeAugment(model, tta).train(model.training), images, mean, std, dtype=dtype)
