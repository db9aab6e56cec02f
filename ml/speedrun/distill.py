"""Knowledge distillation for the fast recipe: ``teacher=`` trains a student on a teacher
ensemble's softened predictions as well as the labels.

The teacher is one or more trained checkpoints (``ml.checkpoint`` files: run folders' ``best.pt``
or a bundle's ``members/``), averaged in probability. It sees the same augmented batch as the
student, every step (the consistent teaching of Beyer et al. 2022, "Knowledge distillation: a good
teacher is patient and consistent"), in eval mode and without gradients, at the run's precision.
The loss per image is Hinton et al.'s (2015):

    (1 - alpha) * CE(student, label; label smoothing) + alpha * T^2 * KL(teacher_T || student_T)

with both distributions at temperature T (``distill_temperature``) and alpha ``distill_alpha``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ml import precision as prec
from ml.checkpoint import load_model


def teacher_paths(spec: str) -> list[Path]:
    """``a.pt,b.pt`` or a folder of ``*.pt`` (a bundle's ``members/``) -> the checkpoint files."""
    paths: list[Path] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        path = Path(part)
        if path.is_dir():
            found = sorted(path.glob("*.pt"))
            if not found:
                raise SystemExit(f"teacher={part}: the folder holds no .pt checkpoint")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise SystemExit(f"teacher={part}: no such checkpoint file or folder")
    if not paths:
        raise SystemExit("teacher= names no checkpoint")
    return paths


class Teacher:
    """The members of ``spec`` on ``device``; ``probs(x, T)`` is their mean softmax at temperature
    T for a batch ``x`` normalised with the student's ``mean``/``std`` (re-normalised per member
    when a member was trained with other statistics)."""

    def __init__(self, spec: str, classes: list[str], mean: torch.Tensor, std: torch.Tensor, device, dtype):
        self.members: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        self.device, self.dtype = device, dtype
        self.paths = teacher_paths(spec)
        for path in self.paths:
            model, ckpt = load_model(path)
            if list(ckpt["classes"]) != list(classes):
                raise SystemExit(f"teacher {path}: its classes {ckpt['classes']} are not the data's {classes}")
            # x_member = (x * std + mean - m_mean) / m_std, as scale and shift per channel
            m_mean = torch.tensor(ckpt["mean"], device=device)
            m_std = torch.tensor(ckpt["std"], device=device)
            scale = (std.to(device) / m_std)[None, :, None, None]
            shift = ((mean.to(device) - m_mean) / m_std)[None, :, None, None]
            self.members.append((model.to(device, memory_format=torch.channels_last), scale, shift))

    @torch.no_grad()
    def probs(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        total = None
        for model, scale, shift in self.members:
            with prec.autocast(self.device, self.dtype):
                logits = model((x * scale + shift).contiguous(memory_format=torch.channels_last))
            p = F.softmax(logits.float() / temperature, dim=1)
            total = p if total is None else total + p
        return total / len(self.members)


def distill_loss(
    logits: torch.Tensor, y: torch.Tensor, teacher_probs: torch.Tensor, *, alpha: float, temperature: float,
    label_smoothing: float,
) -> torch.Tensor:  # fmt: skip
    """The batch's summed loss (the recipe sums over images): the mix above, ``logits`` in float32;
    ``y`` holds class indices, or label distributions (rows summing to 1) under mixup."""
    hard = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="sum")
    log_student = F.log_softmax(logits / temperature, dim=1)
    soft = F.kl_div(log_student, teacher_probs, reduction="sum") * temperature**2
    return (1 - alpha) * hard + alpha * soft
