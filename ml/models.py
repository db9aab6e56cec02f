"""CIFAR models, registered by name: a plain CNN baseline and the CIFAR-style ResNet family.

All models take normalised float images N x 3 x 32 x 32 and return logits N x num_classes.
Build one with ``build_model(name, num_classes=..., **options)``; ``MODELS`` lists the names.

Grad-CAM (ml/export.py's ``explain``): every model names in ``cam_layer`` the submodule whose
output the heatmaps explain, and has a TorchScript-exportable ``cam_forward(x)`` returning
``(that submodule's output, logits)`` -- TorchScript has no hooks, so the activation is returned
explicitly; tests check it against Captum's ``LayerGradCam`` on that named layer.

Ablation switches (for hypothesis tests on model components) are constructor options of the
ResNets: ``norm=False`` (no batch norm), ``residual=False`` (no skip connections) and
``width`` (channel multiplier).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
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


def _norm(channels: int, enabled: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if enabled else nn.Identity()


# ----------------------------------------------------------------------------- plain CNN baseline
class PlainCNN(nn.Module):
    """The "from scratch" baseline of the original reports: conv-BN-ReLU blocks, max pooling,
    dropout, and a small fully connected head."""

    def __init__(self, num_classes: int = 10, width: int = 32, dropout: float = 0.3):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout(dropout),
            )

        w = width
        self.features = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 4 * w))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * w * 4 * 4, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    cam_layer = "features.2"  # the last feature block (4x4 at 32x32 input)
    feature_layers = ("features.0", "features.1")  # first and middle stage (the admin's feature maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.jit.export
    def cam_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = self.features(x)
        return act, self.head(act)


@register("plain_cnn")
def plain_cnn(num_classes: int = 10, **options) -> nn.Module:
    return PlainCNN(num_classes=num_classes, **options)


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
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
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


class PreActResNet(nn.Module):
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
        layers: list[nn.Module] = []
        cin = widths[0]
        for stage, (n, cout) in enumerate(zip(blocks, widths, strict=True)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(PreActBlock(cin, cout, stride, norm=norm, residual=residual))
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


class WideResNet(nn.Module):
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
        if (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [int(round(c * widen * width)) for c in (16, 32, 64)]
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        cin = 16
        for stage, cout in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(WideBlock(cin, cout, stride, dropout, norm=norm, residual=residual))
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


@register("wrn16_4")
def wrn16_4(num_classes: int = 10, **options) -> nn.Module:
    return WideResNet(16, 4, num_classes=num_classes, **options)


@register("wrn16_8")
def wrn16_8(num_classes: int = 10, **options) -> nn.Module:
    return WideResNet(16, 8, num_classes=num_classes, **options)


@register("wrn28_10")
def wrn28_10(num_classes: int = 10, **options) -> nn.Module:
    return WideResNet(28, 10, num_classes=num_classes, **options)


# ----------------------------------------------------------------------------- fast-training net (airbench-style)
class WhiteningConv(nn.Conv2d):
    """A 2x2 convolution whose filters whiten image patches: the eigenvectors of the patch
    covariance of training images scaled by 1/sqrt(eigenvalue), and their negatives. The weights
    are set from data (``init_from_data``) and never trained; the bias is (for a few epochs)."""

    def __init__(self, in_channels: int = 3, kernel: int = 2, eps: float = 5e-4):
        patch = in_channels * kernel * kernel
        super().__init__(in_channels, 2 * patch, kernel, padding=0, bias=True)
        self.eps = eps
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """``images``: normalised float N x C x H x W (a few thousand training images suffice)."""
        k = self.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N C H' W' k k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.in_channels * k * k)
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
        filters = (eigenvectors.T / torch.sqrt(eigenvalues[:, None] + self.eps)).float()
        filters = filters.view(-1, self.in_channels, k, k)
        self.weight.copy_(torch.cat([filters, -filters]))
        self.bias.zero_()


class FastBatchNorm(nn.BatchNorm2d):
    """Batch norm with a fixed scale of 1 (only the shift is learned) and fast-moving statistics."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """3x3 conv, 2x2 max-pool, norm, GELU, 3x3 conv, norm, GELU."""

    def __init__(self, cin: int, cout: int, norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=not norm)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FastBatchNorm(cout) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=not norm)
        self.norm2 = FastBatchNorm(cout) if norm else nn.Identity()
        for conv in (self.conv1, self.conv2):  # start near identity: the first filters pass their input through
            nn.init.dirac_(conv.weight[: min(conv.in_channels, conv.out_channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.pool(self.conv1(x))))
        return F.gelu(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    """The fast-training CIFAR net of the airbench line (Jordan 2024, arXiv 2404.00498; Page's
    ResNet-9 before it), written from the published description: a frozen patch-whitening 2x2
    conv (24 channels), GELU, three conv groups of 64/256/256 channels (x ``width``), a 3x3 max
    pool to 1x1, and a bias-free linear head scaled by ``scale``.

    Ablation switches: ``whiten=False`` (a plain learned 2x2 conv in its place), ``norm=False``
    (no batch norm; convs get biases), ``width`` (channel multiplier). ``cam_layer`` names the
    block whose output Grad-CAM explains (7x7 at 32x32 input)."""

    cam_layer = "blocks.1"
    feature_layers = ("blocks.0", "blocks.1")

    def __init__(
        self,
        num_classes: int = 10,
        width: float = 1.0,
        norm: bool = True,
        whiten: bool = True,
        residual: bool = True,  # accepted for a uniform option set; the net has no skips
        scale: float = 1 / 9,
    ):
        super().__init__()
        widths = [int(round(c * width)) for c in (64, 256, 256)]
        self.whiten = WhiteningConv(3) if whiten else nn.Conv2d(3, 24, 2, padding=0, bias=True)
        cin = self.whiten.out_channels
        groups = []
        for cout in widths:
            groups.append(ConvGroup(cin, cout, norm=norm))
            cin = cout
        self.blocks = nn.Sequential(*groups)
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(cin, num_classes, bias=False)
        self.scale = scale

    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalised training images (no-op without whitening)."""
        if isinstance(self.whiten, WhiteningConv):
            self.whiten.init_from_data(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.gelu(self.whiten(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.head(x) * self.scale

    @torch.jit.export
    def cam_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.gelu(self.whiten(x))
        act = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 1:  # cam_layer = "blocks.1"
                act = x
        return act, self.head(torch.flatten(self.pool(x), 1)) * self.scale


@register("fastnet")
def fastnet(num_classes: int = 10, **options) -> nn.Module:
    return FastNet(num_classes=num_classes, **options)


# ----------------------------------------------------------------------------- helpers
def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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
