"""The fast-training net of the airbench line (``fastnet``): patch whitening, conv groups, a
scaled linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ml.models.registry import register


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


def whitening_sample(images: torch.Tensor, n: int = 5000, seed: int = 0) -> torch.Tensor:
    """``n`` images drawn at random (seeded) from all of ``images``, for the whitening statistics.

    Training arrays here are ordered by class (image folders, and the stratified split keeps that
    order), so the first ``n`` images, which the published recipe takes from CIFAR's shuffled
    batches, would be one or two classes (4,500 airplanes and 500 automobiles of the CIFAR-10
    copy): their patch covariance is not the data's."""
    if len(images) <= n:
        return images
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=generator)[:n].sort().values
    return images[idx.to(images.device)]


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
    (no batch norm; convs get biases), ``width`` (channel multiplier), ``widths`` (the three
    groups' channels, in place of 64/256/256 x ``width``: 128/384/384 is the published
    95%-in-15-epochs variant). ``cam_layer`` names the
    block whose output Grad-CAM explains (7x7 at 32x32 input)."""

    cam_layer = "blocks.1"
    feature_layers = ("blocks.0", "blocks.1")
    int8_float_layers = ("whiten",)  # ml.quantize: the whitening conv sees raw pixels; it stays in float

    def __init__(
        self,
        num_classes: int = 10,
        width: float = 1.0,
        norm: bool = True,
        whiten: bool = True,
        residual: bool = True,  # accepted for a uniform option set; the net has no skips
        scale: float = 1 / 9,
        widths: Sequence[int] | None = None,
    ):
        super().__init__()
        if widths is None:
            widths = [int(round(c * width)) for c in (64, 256, 256)]
        elif len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must give three positive channel counts, got {list(widths)}")
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
