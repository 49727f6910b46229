"""Batch augmentation in torch (no per-sample CPU image library in the training step).

Geometric transforms (flips, rotation by multiples of 90° and a small random affine) are
applied identically to images and masks; photometric ones (brightness, contrast, gamma) and
coarse dropout only to images. Inputs are the training tensors of
``core.data.datasets.load_tensors``: images (B, C, S, S) in [-1, 1], masks (B, 1, S, S) in {-1, 1}.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    rotate90: bool = True,
    vertical_flip: bool = True,
    max_degrees: float = 20.0,
    scale_range: tuple[float, float] = (0.85, 1.15),
    max_translate: float = 0.08,
    photometric: float = 0.15,
    dropout_holes: int = 4,
    dropout_size: float = 0.12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return augmented copies of (images, masks); masks stay in {-1, 1}.

    Args:
        images: (B, C, S, S) float in [-1, 1]. masks: (B, 1, S, S) float in {-1, 1}.
        generator: CPU generator, so augmentation is reproducible and resumable.
        rotate90, vertical_flip: allow 90-degree rotations / up-down flips (off for images
            with a fixed orientation, such as ultrasound and CT).
        photometric: strength of brightness/contrast/gamma jitter (0 disables).
        dropout_holes: up to this many rectangles of side ``dropout_size * S`` are filled with
            the image mean (coarse dropout, as in the seeds' Albumentations pipelines).
    """
    b, _, h, w = images.shape
    dev = images.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    # Flips and 90-degree rotations: exact, no interpolation.
    flip_x = rand(b) < 0.5
    flip_y = (rand(b) < 0.5) & vertical_flip
    images = torch.where(flip_x[:, None, None, None], images.flip(-1), images)
    masks = torch.where(flip_x[:, None, None, None], masks.flip(-1), masks)
    images = torch.where(flip_y[:, None, None, None], images.flip(-2), images)
    masks = torch.where(flip_y[:, None, None, None], masks.flip(-2), masks)
    if rotate90 and h == w:
        k = int(torch.randint(0, 4, (1,), generator=generator))
        images, masks = images.rot90(k, (-2, -1)), masks.rot90(k, (-2, -1))

    # Small random affine via one grid for the batch.
    angle = (rand(b) * 2 - 1) * math.radians(max_degrees)
    scale = scale_range[0] + rand(b) * (scale_range[1] - scale_range[0])
    shift = (rand(b, 2) * 2 - 1) * max_translate * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Border padding for images avoids black corners; masks pad with background.
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                           align_corners=False)
    masks = F.grid_sample((masks + 1) / 2, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    masks = (masks >= 0.5).float() * 2 - 1

    if photometric > 0:
        unit = (images + 1) / 2
        brightness = (rand(b, 1, 1, 1) * 2 - 1) * photometric
        contrast = 1 + (rand(b, 1, 1, 1) * 2 - 1) * photometric * 2
        gamma = torch.exp((rand(b, 1, 1, 1) * 2 - 1) * photometric * 2)
        mean = unit.mean(dim=(1, 2, 3), keepdim=True)
        unit = ((unit - mean) * contrast + mean + brightness).clamp(0, 1) ** gamma
        images = unit * 2 - 1

    if dropout_holes > 0:
        side = max(1, int(dropout_size * h))
        fill = images.mean(dim=(2, 3), keepdim=True)
        keep = torch.ones(b, 1, h, w, device=dev)
        n_holes = torch.randint(0, dropout_holes + 1, (b,), generator=generator)
        for i in range(b):
            for _ in range(int(n_holes[i])):
                y = int(torch.randint(0, h - side + 1, (1,), generator=generator))
                x = int(torch.randint(0, w - side + 1, (1,), generator=generator))
                keep[i, :, y : y + side, x : x + side] = 0
        images = images * keep + fill * (1 - keep)
    return images, masks
