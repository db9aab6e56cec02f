"""Export one or more trained models as the model bundle the worker loads (worker/runtime/bundle.py).

    python -m ml export runs/<run>/best.pt [more checkpoints ...] --out bundles/<name>

The TorchScript module takes uint8 N x 3 x H x W RGB and returns N x C probabilities: it
normalises with each member's own mean and std, runs the members, and averages their softmax
outputs (optionally over a horizontal flip too).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worker.runtime.bundle import DEFAULT_MODULE_FILE, Manifest, sha256_file, write_manifest


class Member(nn.Module):
    """One model with its normalisation: uint8 images -> probabilities."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return torch.softmax(self.model(x).float(), dim=1)


class Ensemble(nn.Module):
    """Average of the members' probabilities; with ``flip_tta`` also over the mirrored images."""

    def __init__(self, members: list[Member], flip_tta: bool = False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.flip_tta = flip_tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError("expected uint8 images N x 3 x H x W")
        total = torch.zeros(0)
        n = 0
        for member in self.members:
            p = member(images)
            if self.flip_tta:
                p = 0.5 * (p + member(images.flip(3)))
            total = p if n == 0 else total + p
            n += 1
        return total / n


def export_bundle(
    members: list[tuple[nn.Module, dict[str, Any]]],
    out_dir: str | Path,
    *,
    classes: list[str],
    name: str,
    version: str,
    metrics: dict[str, Any] | None = None,
    superclasses: dict[str, str] | None = None,
    input_size: tuple[int, int] = (32, 32),
    flip_tta: bool = False,
    command: str | None = None,
    report_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Script the ensemble of ``members`` (model, info) and write a bundle folder.

    Each ``info`` holds at least ``mean`` and ``std`` (0-1 scale) and is recorded in the manifest's
    ``members`` list (arch, params, metrics, checkpoint ...).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    wrapped = []
    for model, info in members:
        model = model.float().eval().cpu()
        wrapped.append(Member(model, info["mean"], info["std"]))
    ensemble = Ensemble(wrapped, flip_tta=flip_tta).eval()
    scripted = torch.jit.script(ensemble)
    module_path = out_dir / DEFAULT_MODULE_FILE
    scripted.save(str(module_path))
    manifest = Manifest(
        name=name,
        version=version,
        classes=list(classes),
        superclasses=superclasses,
        input_size=list(input_size),
        mean=list(members[0][1]["mean"]),
        std=list(members[0][1]["std"]),
        members=[{k: v for k, v in info.items()} for _, info in members],
        metrics=metrics or {},
        sha256=sha256_file(module_path),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=command or " ".join(shlex.quote(a) for a in ["python", "-m", "ml", *sys.argv[1:]]),
        extra={"flip_tta": flip_tta},
    )
    write_manifest(out_dir, manifest)
    if report_dir is not None:
        shutil.copytree(report_dir, out_dir / "report")
    return manifest

