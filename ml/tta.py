"""Test-time augmentation on batched tensors, as a TorchScript-able module.

Levels (the airbench convention): 0 = the image only; 1 = the mean of the logits of the image and
its mirror; 2 = level 1 averaged (weight 1/2) with level 1 of the two one-pixel diagonal
translations (reflect padding; weight 1/4 each). Logits are averaged, not probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VIEWS = (1, 2, 6)  # forward passes per image at levels 0, 1 and 2


def views(level: int) -> int:
    """How many views of each image the model sees at TTA ``level`` (what its arithmetic costs)."""
    if level not in (0, 1, 2):
        raise ValueError(f"TTA level must be 0, 1 or 2, got {level}")
    return VIEWS[level]


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
        out = self.model(torch.cat([x, self._other_views(x)])).float()  # averaged in fp32 (bf16 models too)
        logits = out.view(-1, n, out.shape[1])
        return self._combine(logits[0], logits[1:])

    @torch.jit.export
    def with_first(self, x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` given ``first`` = the model's logits of ``x`` itself (Grad-CAM's explain
        computes those with gradients and reuses them here, saving one forward pass)."""
        if self.level == 0:
            return first
        others = self.model(self._other_views(x)).float().view(-1, x.shape[0], first.shape[1])
        return self._combine(first.float(), others)

    def _other_views(self, x: torch.Tensor) -> torch.Tensor:
        """The views besides ``x``: its mirror (level 1), and the two one-pixel diagonal
        translations and their mirrors (level 2), stacked along the batch."""
        if self.level == 1:
            return x.flip(3)
        h, w = x.shape[2], x.shape[3]
        padded = F.pad(x, [1, 1, 1, 1], mode="reflect")
        up_left, down_right = padded[:, :, 0:h, 0:w], padded[:, :, 2 : h + 2, 2 : w + 2]
        return torch.cat([x.flip(3), up_left, up_left.flip(3), down_right, down_right.flip(3)])

    def _combine(self, first: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        if self.level == 1:
            return 0.5 * (first + others[0])
        # level 2 = 1/2 mirror(x) + 1/4 mirror(up-left) + 1/4 mirror(down-right)
        return 0.25 * (first + others[0]) + 0.125 * (others[1] + others[2] + others[3] + others[4])
