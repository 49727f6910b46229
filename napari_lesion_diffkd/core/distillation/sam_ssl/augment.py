"""Paired augmentation for the student: one geometry for the image and all its target maps.

Images (B, C, S, S) in [-1, 1]; target maps (B, 1, S, S) float (masks in {0, 1}, SAM logits):
the same flips, 90° turns and mild affine are applied to all of them (bilinear; masks are
thresholded back to {0, 1} by the caller through ``binary``); brightness/contrast only to the
image. All randomness comes from one ``torch.Generator``, so a resumed run repeats it exactly.
SDF targets are not warped: they are recomputed from the warped masks (``sdf.sdf_batch``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F


def augment_pair(images: torch.Tensor, maps: Sequence[torch.Tensor], binary: Sequence[bool],
                 gen: torch.Generator, rotate_flip: bool = True, max_degrees: float = 15.0,
                 scale: tuple[float, float] = (0.9, 1.1), translate: float = 0.06,
                 photometric: float = 0.1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Augmented copies of ``images`` and of each map in ``maps``.

    Args:
        binary: per map, threshold the warped map at 0.5 back to {0, 1}.
        rotate_flip: allow up-down flips and 90° turns (images without a fixed orientation).
    """
    b = images.shape[0]
    dev = images.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dev)

    flip_x = rand(b)[:, None, None, None] < 0.5
    flip_y = (rand(b)[:, None, None, None] < 0.5) & rotate_flip
    k = int(torch.randint(0, 4, (1,), generator=gen)) if rotate_flip else 0
    angle = (rand(b) * 2 - 1) * math.radians(max_degrees)
    zoom = scale[0] + rand(b) * (scale[1] - scale[0])
    shift = (rand(b, 2) * 2 - 1) * translate * 2
    brightness = (rand(b, 1, 1, 1) * 2 - 1) * photometric
    contrast = 1 + (rand(b, 1, 1, 1) * 2 - 1) * photometric * 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)

    def geometry(x: torch.Tensor, padding: str) -> torch.Tensor:
        x = torch.where(flip_x, x.flip(-1), x)
        x = torch.where(flip_y, x.flip(-2), x)
        if k:
            x = x.rot90(k, (-2, -1))
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)

    out_images = geometry(images, "border")
    mean = out_images.mean(dim=(1, 2, 3), keepdim=True)
    out_images = ((out_images - mean) * contrast + mean + brightness).clamp(-1, 1)
    out_maps = []
    for m, is_binary in zip(maps, binary):
        warped = geometry(m.float(), "zeros" if is_binary else "border")
        out_maps.append((warped >= 0.5).float() if is_binary else warped)
    return out_images, out_maps
