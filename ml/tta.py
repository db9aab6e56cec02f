"""Test-time augmentation on batched tensors, as a TorchScript-able module.

Levels (the airbench convention): 0 = the image only; 1 = the mean of the logits of the image and
its mirror; 2 = level 1 averaged (weight 1/2) with level 1 of the two one-pixel diagonal
translations (reflect padding; weight 1/4 each). Logits are averaged, not probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TestTimeAugment(nn.Module):
    __test__ = False  # not a pytest test class

    def __init__(self, model: nn.Module, level: int = 2):
        super().__init__()
        if level not in (0, 1, 2):
            raise ValueError(f"TTA level must be 0, 1 or 2, got {level}")
        self.model = model
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # All views go through the model as one batch (one forward pass, better use of the
        # CPU's matrix units than several small ones); in eval mode the result is the same.
        if self.level == 0:
            return self.model(x)
        n = x.shape[0]
        if self.level == 1:
            logits = self.model(torch.cat([x, x.flip(3)]))
            return 0.5 * (logits[:n] + logits[n:])
        h, w = x.shape[2], x.shape[3]
        padded = F.pad(x, [1, 1, 1, 1], mode="reflect")
        up_left, down_right = padded[:, :, 0:h, 0:w], padded[:, :, 2 : h + 2, 2 : w + 2]
        views = torch.cat([x, x.flip(3), up_left, up_left.flip(3), down_right, down_right.flip(3)])
        logits = self.model(views).view(6, n, -1)
        # level 2 = 1/2 mirror(x) + 1/4 mirror(up-left) + 1/4 mirror(down-right)
        return 0.25 * (logits[0] + logits[1]) + 0.125 * (logits[2] + logits[3] + logits[4] + logits[5])
