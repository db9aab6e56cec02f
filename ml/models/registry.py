"""The model registry (``MODELS``, ``register``, ``build_model``), parameter and MAC counting,
and the ``python -m ml models`` command."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def wrap(fn):
        MODELS[name] = fn
        return fn

    return wrap


def build_model(name: str, num_classes: int = 10, **options) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, **options)


# ----------------------------------------------------------------------------- counting
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: tuple[int, int] = (32, 32)) -> int:
    """Multiply-accumulates of one forward pass on one image (convolutions and linear layers),
    counted with forward hooks on a real pass."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


# ----------------------------------------------------------------------------- python -m ml models
def main(argv: list[str]) -> None:
    """``python -m ml models``: the registry with parameter and MAC counts (10 classes, 32x32)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ml models", description=main.__doc__)
    parser.add_argument("--num-classes", type=int, default=10)
    args = parser.parse_args(argv)
    print(f"{'model':<18}{'parameters':>14}{'MACs/image':>16}")
    for name in sorted(MODELS):
        model = build_model(name, num_classes=args.num_classes)
        print(f"{name:<18}{count_parameters(model):>14,}{count_flops(model):>16,}")
