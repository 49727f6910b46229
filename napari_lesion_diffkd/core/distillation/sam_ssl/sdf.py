"""The signed-distance target of the student's second head (seed 003's "SDF" output).

Convention (the same sign as ``core/sam/inputs.signed_distance``): **positive inside** the
lesion, negative outside, 0 on the edge between pixel centres. Each side is normalised by its
own largest distance, so the map lies in [-1, 1] whatever the lesion's size (the dual-task
SSL convention of Luo et al., AAAI 2021, with the sign flipped to match SAM's mask prompts):

    sdf(x) =  d_in(x)  / max d_in    inside
    sdf(x) = -d_out(x) / max d_out   outside

An empty mask gives -1 everywhere, a full one +1.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi


def normalised_sdf(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool/0-1 mask -> (H, W) float32 normalised signed distance in [-1, 1]."""
    inside = np.asarray(mask) > 0
    if not inside.any():
        return np.full(inside.shape, -1.0, dtype=np.float32)
    if inside.all():
        return np.ones(inside.shape, dtype=np.float32)
    # The edge runs between pixel centres: pixels beside it are 0.5 px away.
    d_in = ndi.distance_transform_edt(inside) - 0.5
    d_out = ndi.distance_transform_edt(~inside) - 0.5
    out = np.where(inside, d_in / max(d_in.max(), 0.5), -d_out / max(d_out.max(), 0.5))
    return out.astype(np.float32)


def sdf_batch(masks: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) masks (> 0.5 = lesion) -> (B, 1, H, W) float32 normalised SDF (CPU scipy,
    returned on the masks' device)."""
    arr = (masks.detach().float().cpu().numpy() > 0.5)
    out = np.stack([normalised_sdf(m[0])[None] for m in arr])
    return torch.from_numpy(out).to(masks.device)
