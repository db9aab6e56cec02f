"""The plain CNN baseline (``plain_cnn``)."""

from __future__ import annotations

import torch
from torch import nn

from ml.models.registry import register


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
