"""Whole-batch augmentation on the training device: random crop with padding, horizontal flip.

Both are single gathers over the batch (no per-sample Python loop), so augmentation costs about
as much as one elementwise pass over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each NCHW image by ``padding`` and crop back at a random offset per image."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(2 * padding + 1, (n,), generator=generator, device=generator.device)
    dx = torch.randint(2 * padding + 1, (n,), generator=generator, device=generator.device)
    dy, dx = dy.to(x.device), dx.to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each NCHW image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


#: Augmentation recipes by name: (crop padding, flip). He et al. for CIFAR; no flip for digits.
RECIPES: dict[str, tuple[int, bool]] = {
    "none": (0, False),
    "crop": (4, False),
    "crop-flip": (4, True),
}


def augment(x: torch.Tensor, recipe: str, generator: torch.Generator) -> torch.Tensor:
    padding, flip = RECIPES[recipe]
    if padding:
        x = random_crop(x, padding, generator)
    if flip:
        x = random_flip(x, generator)
    return x
