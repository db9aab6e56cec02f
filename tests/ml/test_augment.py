"""ml.augment: batched crop, flip, cutout and normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ml.augment import augment_batch, cutout, normalize, random_crop, random_flip


def batch(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_crop_returns_a_window_of_the_reflect_padded_image() -> None:
    x = batch(32)
    out = random_crop(x, padding=2, generator=torch.Generator().manual_seed(1))
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    offsets = []
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert hits, f"image {i} is not a crop"
        offsets.append(hits[0])
    assert len(set(offsets)) > 5  # offsets vary per image
    assert torch.equal(random_crop(x, padding=0), x)


def test_flip_mirrors_about_half_of_the_images() -> None:
    x = batch(200)
    out = random_flip(x, generator=torch.Generator().manual_seed(2))
    same = [torch.equal(a, b) for a, b in zip(out, x, strict=True)]
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(out, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 60 < sum(mirrored) < 140


def test_cutout_zeroes_one_square_per_image() -> None:
    x = torch.ones(50, 3, 16, 16)
    out = cutout(x, size=4, generator=torch.Generator().manual_seed(3))
    for img in out:
        zero = img[0] == 0
        assert torch.equal(zero, img[1] == 0) and torch.equal(zero, img[2] == 0)  # all channels
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 0 < zero.sum() <= 16
        assert zero.sum() == len(rows) * len(cols)  # a rectangle (clipped at the edge)
        assert len(rows) <= 4 and len(cols) <= 4
    assert torch.equal(cutout(x, size=0), x)


def test_normalize_matches_by_hand() -> None:
    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    expected = (images.float() / 255 - mean[None, :, None, None]) / std[None, :, None, None]
    assert torch.allclose(normalize(images, mean, std), expected, atol=1e-6)


def test_augment_batch_is_seeded() -> None:
    x = batch(16)

    def run(seed: int) -> torch.Tensor:
        return augment_batch(x, crop_padding=4, flip=True, cutout_size=4, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert run(0).shape == x.shape and run(0).dtype == x.dtype
    assert torch.equal(augment_batch(x, crop_padding=0, flip=False, cutout_size=0), x)
