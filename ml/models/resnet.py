"""The ResNets: CIFAR ResNet-(6n+2), pre-activation ResNet-18 and Wide ResNets, with the
``Pointwise`` 1x1 shortcut and the ``norm``/``residual``/``width`` ablation switches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ml.models.registry import register


def _norm(channels: int, enabled: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if enabled else nn.Identity()


# ----------------------------------------------------------------------------- ResNet (He et al. 2016, CIFAR)
class Pointwise(nn.Conv2d):
    """A 1x1 convolution (the ResNet shortcut) that takes every ``stride``-th pixel first and then
    runs at stride 1: the same numbers and the same parameters as ``nn.Conv2d(cin, cout, 1,
    stride=stride)``. oneDNN's strided 1x1 backward pass crashes the process (SIGSEGV) on CPUs
    without AVX-512 when there are fewer than 8 input channels (torch 2.13 CPU build on a 2-core
    AMD EPYC with AVX2, channels_last, e.g. a ResNet-20 at width 0.25)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, bias: bool = True):
        super().__init__(cin, cout, 1, stride=1, bias=bias)
        self.subsample = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.subsample != 1:
            x = x[:, :, :: self.subsample, :: self.subsample]
        return self._conv_forward(x, self.weight, self.bias)


class BasicBlock(nn.Module):
    """Post-activation basic block. The shortcut is a 1x1 conv when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, norm: bool = True, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not norm)
        self.bn1 = _norm(cout, norm)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=not norm)
        self.bn2 = _norm(cout, norm)
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or cin != cout):
            self.shortcut = nn.Sequential(Pointwise(cin, cout, stride=stride, bias=not norm), _norm(cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


def blocks_per_stage(depth: int, extra: int, family: str) -> int:
    """Blocks per stage of a three-stage net of ``depth`` = 6n + ``extra`` layers, or ValueError."""
    if (depth - extra) % 6:
        raise ValueError(f"{family} depth must be 6n+{extra}, got {depth}")
    return (depth - extra) // 6


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: three stages of n basic blocks, 16/32/64 channels x width."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        width: float = 1.0,
        norm: bool = True,
        residual: bool = True,
    ):
        super().__init__()
        n = blocks_per_stage(depth, 2, "CIFAR ResNet")
        widths = [int(round(c * width)) for c in (16, 32, 64)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=not norm), _norm(widths[0], norm), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        cin = widths[0]
        for stage, cout in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(cin, cout, stride, norm=norm, residual=residual))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        self.cam_layer = f"layers.{len(layers) - 1}"  # the last residual block (8x8 at 32x32 input)
        self.feature_layers = ("stem", f"layers.{len(layers) // 2}")  # first and middle stage
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    @torch.jit.export
    def cam_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = self.layers(self.stem(x))
        return act, self.fc(torch.flatten(F.adaptive_avg_pool2d(act, 1), 1))


for _depth in (20, 32, 44, 56, 110):

    def _make(depth: int):
        def build(num_classes: int = 10, **options) -> nn.Module:
            return CifarResNet(depth, num_classes=num_classes, **options)

        return build

    register(f"resnet{_depth}")(_make(_depth))


# ----------------------------------------------------------------------------- pre-activation ResNet-18
class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: bool = True, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.bn1 = _norm(cin, norm)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _norm(cout, norm)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if residual and (stride != 1 or cin != cout):
            self.shortcut = Pointwise(cin, cout, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut if self.residual else out


class _PreActNet(nn.Module):
    """What the pre-activation nets share after their stem: stages of residual blocks (the first
    block of each stage after the first strides by 2), a final norm + ReLU, global pooling and the
    linear classifier; Grad-CAM explains the last block."""

    def _stages(self, stages, cin: int, block, num_classes: int, norm: bool) -> None:
        """``stages``: (blocks, channels) per stage; ``block(cin, cout, stride)`` makes one block."""
        layers: list[nn.Module] = []
        for stage, (n, cout) in enumerate(stages):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(block(cin, cout, stride))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = _norm(cin, norm)
        self.fc = nn.Linear(cin, num_classes)
        self.cam_layer = f"layers.{len(layers) - 1}"
        self.feature_layers = ("stem", f"layers.{len(layers) // 2}")
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    @torch.jit.export
    def cam_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = self.layers(self.stem(x))  # the last residual block, before the final norm
        return act, self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.bn(act)), 1), 1))


class PreActResNet(_PreActNet):
    """Pre-activation ResNet (He et al. 2016b) for CIFAR; 18 layers = blocks (2, 2, 2, 2)."""

    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: float = 1.0,
        norm: bool = True,
        residual: bool = True,
    ):
        super().__init__()
        widths = [int(round(c * width)) for c in (64, 128, 256, 512)]
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self._stages(
            zip(blocks, widths, strict=True),
            widths[0],
            lambda cin, cout, stride: PreActBlock(cin, cout, stride, norm=norm, residual=residual),
            num_classes,
            norm,
        )


@register("preact_resnet18")
def preact_resnet18(num_classes: int = 10, **options) -> nn.Module:
    return PreActResNet((2, 2, 2, 2), num_classes=num_classes, **options)


# ----------------------------------------------------------------------------- Wide ResNet (Zagoruyko & Komodakis 2016)
class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float, norm: bool = True, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.bn1 = _norm(cin, norm)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _norm(cout, norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if residual and (stride != 1 or cin != cout):
            self.shortcut = Pointwise(cin, cout, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut if self.residual else out


class WideResNet(_PreActNet):
    """WRN-depth-k: (depth - 4) / 6 pre-activation blocks per stage, 16k/32k/64k channels."""

    def __init__(
        self,
        depth: int = 16,
        widen: int = 4,
        num_classes: int = 10,
        dropout: float = 0.0,
        width: float = 1.0,
        norm: bool = True,
        residual: bool = True,
    ):
        super().__init__()
        n = blocks_per_stage(depth, 4, "Wide ResNet")
        widths = [int(round(c * widen * width)) for c in (16, 32, 64)]
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self._stages(
            ((n, cout) for cout in widths),
            16,
            lambda cin, cout, stride: WideBlock(cin, cout, stride, dropout, norm=norm, residual=residual),
            num_classes,
            norm,
        )


@register("wrn16_4")
def wrn16_4(num_classes: int = 10, **options) -> nn.Module:
    return WideResNet(16, 4, num_classes=num_classes, **options)


@register("wrn16_8")
def wrn16_8(num_classes: int = 10, **options) -> nn.Module:
    return WideResNet(16, 8, num_classes=num_classes, **options)


@register("wrn28_10")
def wrn28_10(num_classes: int = 10, **options) -> nn.Module:
    return WideResNet(28, 10, num_classes=num_classes, **options)


# ----------------------------------------------------------------------------- helpers
def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
