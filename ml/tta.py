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
    def __init__(self, model: nn.Module, level: int = 2):
        super().__init__()
        if level not in (0, 1, 2):
            raise ValueError(f"TTA level must be 0, 1 or 2, got {level}")
        self.model = model
        self.level = level

    def _mirror(self, x: torch.Tensor) -> torch.Tensor:
        if self.level == 0:
            return self.model(x)
        return 0.5 * (self.model(x) + self.model(x.flip(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_first(x, self.model(x))

    @torch.jit.export
    def with_first(self, x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` given ``first`` = the model's logits of ``x`` itself (Grad-CAM's explain
        computes those with gradients and reuses them here, saving one forward pass)."""
        logits = first if self.level == 0 else 0.5 * (first + self.model(x.flip(3)))
        if self.level < 2:
            return logits
        h, w = x.shape[2], x.shape[3]
        padded = F.pad(x, [1, 1, 1, 1], mode="reflect")
        shifted = self._mirror(padded[:, :, 0:h, 0:w]) + self._mirror(padded[:, :, 2 : h + 2, 2 : w + 2])
        return 0.5 * logits + 0.25 * shifted
