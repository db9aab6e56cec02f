"""Fine-tuning helpers: which units of a model can be frozen, loading a backbone from a
checkpoint with or without its classifier, and training mode that keeps frozen units in eval.

* `head_name`: the classifier, the model's last ``nn.Linear`` (``fc``, ``head.4``).
* `backbone_units`: the freezable units, input to output (CIFAR ResNet-20: stem, layers.0 ... layers.8).
* `parse_freeze`: ``freeze=`` ("", "3", "backbone", "stem,layers.0-2") to unit names.
* `load_backbone`: the checkpoint's weights into the model; the classifier only when asked.
* `train_mode`: ``model.train()``, but frozen units stay in eval (fixed batch-norm statistics).
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn


def head_name(model: nn.Module) -> str:
    """Name of the classifier: the last nn.Linear of the model (``fc``, ``head.4``)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier")
    return names[-1]


def backbone_units(model: nn.Module) -> list[str]:
    """The freezable units, input to output: each top-level child, except that a Sequential of
    blocks (``layers``, ``features``) is split into its blocks; the child holding the classifier is
    left out. CIFAR ResNet-20: stem, layers.0 ... layers.8."""
    head = head_name(model)
    units = []
    for name, child in model.named_children():
        if head == name or head.startswith(name + "."):
            continue
        blocks = list(child.named_children()) if isinstance(child, nn.Sequential) else []
        if blocks and all(any(True for _ in b.children()) for _, b in blocks):
            units += [f"{name}.{i}" for i, _ in blocks]
        else:
            units.append(name)
    return units


def parse_freeze(spec: str, model: nn.Module) -> list[str]:
    """``freeze=`` to unit names: "" (none), "3" (the first three units), "backbone" (all but the
    classifier) or a comma list of units and ranges, e.g. "stem,layers.0-2"."""
    units = backbone_units(model)
    spec = spec.strip()
    if not spec:
        return []
    if spec.isdigit():
        if int(spec) > len(units):
            raise ValueError(f"freeze={spec}: the model has only {len(units)} units ({', '.join(units)})")
        return units[: int(spec)]
    if spec in ("backbone", "all"):
        return units
    chosen: list[str] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        match = re.fullmatch(r"(.+)\.(\d+)-(\d+)", item)
        names = [f"{match[1]}.{i}" for i in range(int(match[2]), int(match[3]) + 1)] if match else [item]
        for name in names:
            if name not in units:
                raise ValueError(f"freeze: unknown unit {name!r}; this model's units are {', '.join(units)}")
            chosen.append(name)
    return [u for u in units if u in chosen]


def load_backbone(model: nn.Module, ckpt: dict[str, Any], keep_head: bool) -> list[str]:
    """Copy the checkpoint's weights into ``model``; the classifier only when ``keep_head``.
    Returns the names that were not loaded (the new head's)."""
    head = head_name(model)
    state = {k: v for k, v in ckpt["state_dict"].items() if keep_head or not k.startswith(head + ".")}
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"init_from: shapes differ for {', '.join(wrong[:5])}; is it the same model and width?")
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith(head + ".")] + list(unexpected)
    if bad:
        raise ValueError(f"init_from: the checkpoint does not fit this model ({', '.join(bad[:5])})")
    return list(missing)


def train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Training mode, except frozen units stay in eval so their batch-norm statistics stay fixed."""
    model.train()
    for module in frozen:
        module.eval()
