"""Augmentation on batched tensors (no torchvision): random crop with padding, flip, cutout.

Each function takes a float batch N x C x H x W on any device and a `torch.Generator` or None,
and returns a new batch; nothing loops over images in Python.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=generator.device if generator is not None else device, generator=generator).to(device)


def _randint(high: int, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), device=gen_device, generator=generator).to(device)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    flip = _rand(len(x), x.device, generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad by ``padding`` (reflect) and crop back to H x W at a random offset per image."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect")
    dy = _randint(2 * padding + 1, n, x.device, generator)
    dx = _randint(2 * padding + 1, n, x.device, generator)
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # N x H
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # N x W
    index_rows = rows[:, None, :, None].expand(-1, x.shape[1], -1, padded.shape[3])
    out = padded.gather(2, index_rows)  # N x C x H x (W + 2p)
    index_cols = cols[:, None, None, :].expand(-1, x.shape[1], h, -1)
    return out.gather(3, index_cols)


def cutout(x: torch.Tensor, size: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square at a random centre of each image (may be clipped by the edge)."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = _randint(h, n, x.device, generator)
    cx = _randint(w, n, x.device, generator)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= (cy - size // 2)[:, None]) & (ys < (cy - size // 2 + size)[:, None])
    in_x = (xs >= (cx - size // 2)[:, None]) & (xs < (cx - size // 2 + size)[:, None])
    mask = in_y[:, :, None] & in_x[:, None, :]  # N x H x W
    return x.masked_fill(mask[:, None], 0.0)


def normalize(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 N x 3 x H x W -> normalised float; mean and std on the 0-1 scale, shape (3,)."""
    x = images_uint8.to(dtype).div_(255.0)
    return (x - mean.to(x)[None, :, None, None]) / std.to(x)[None, :, None, None]


def augment_batch(
    x: torch.Tensor,
    *,
    crop_padding: int = 4,
    flip: bool = True,
    cutout_size: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    if crop_padding:
        x = random_crop(x, crop_padding, generator)
    if flip:
        x = random_flip(x, generator)
    if cutout_size:
        x = cutout(x, cutout_size, generator)
    return x
