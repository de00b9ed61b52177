"""Batched tensor augmentation and normalisation: no per-sample Python, no PIL."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(
    images: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random crop with zero ``padding`` plus, with ``flip``, a random horizontal flip, on a
    whole batch.

    The standard CIFAR augmentation (``RandomCrop(32, padding=4)`` followed by
    ``RandomHorizontalFlip()``), done with one gather per batch; ``flip=False`` is the crop
    alone, for images a mirror would change the meaning of (SVHN's house numbers).

    Args:
        images: (B, C, H, W) tensor of any dtype.
        generator: torch generator on the images' device.
        padding: pixels of zero padding on each side before cropping.
        flip: mirror each image with probability 1/2 (no draw is made without it).
    """
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    rows = torch.arange(h, device=device) + dy  # (B, H)
    cols = torch.arange(w, device=device).expand(b, w)
    if flip:
        mirrored = torch.rand(b, 1, device=device, generator=generator) < 0.5
        cols = torch.where(mirrored, cols.flip(-1), cols)
    cols = cols + dx  # (B, W)
    batch = torch.arange(b, device=device)[:, None, None]
    # Advanced indexing on dims (0, 2, 3) moves the channel dim last: (B, H, W, C).
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


class Normalize:
    """``(x / 255 - mean) / std`` for uint8 batches, with statistics cached on the device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std
