"""Seed 003's fused mask prompt: the student's mask and SDF -> one mask prompt for SAM.

Seed 003 says only that the coarse mask and the SDF map are "merged" into a boundary-aware
mask prompt for SAM's decoder; this module fixes the recipe (a project choice, documented):

1. **Fuse** the two heads into one signed score in [-1, 1], in the student's frame:
   ``f = w · (2p - 1) + (1 - w) · s`` with ``p`` the mask head's probability, ``s`` the SDF
   head's normalised signed distance (positive inside) and ``w = mask_weight`` (0.5: the two
   heads vote equally). ``f > 0`` is the fused lesion; where the heads disagree about the
   edge, the SDF head moves it.
2. **Change frame** to SAM's: the S x S student map is resized to the image's size inside
   SAM's padded input, (H', W') (longest side = SAM's input size), padded with -1
   (background) to SAM's square input and area-averaged to the decoder's mask-input size
   (L, L): 64 x 64 for ``lesion-sam-tiny``, 256 x 256 for official SAMs.
3. **Encode as logits**, two modes:
   * ``"sdf-ramp"`` (default): the fused lesion ``f > 0`` at L x L becomes
     ``clip(4 · signed_distance_px, ±16)``, exactly the convention SAM's mask prompts use in
     this project (``core/sam/inputs.padded_mask_to_logits``), which ``lesion-sam-tiny``
     was trained on with degraded masks;
   * ``"soft"``: ``clip(soft_gain · f, ±16)``, keeping the heads' confidence as magnitude.

Both are monotone: raising ``p`` or ``s`` anywhere never lowers any prompt logit (a larger
lesion set has larger signed distances everywhere). Optionally a box (the fused lesion's
bounding box in SAM's input frame) goes with the mask prompt (``prompt_box``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F

from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy
from napari_lesion_diffkd.core.sam.inputs import (
    MASK_PROMPT_CLIP,
    MASK_PROMPT_SCALE,
    signed_distance,
)

FusionMode = Literal["sdf-ramp", "soft"]
FUSION_MODES: tuple[str, ...] = ("sdf-ramp", "soft")


def fuse_scores(prob: torch.Tensor, sdf: torch.Tensor, mask_weight: float = 0.5) -> torch.Tensor:
    """(B, 1, S, S) probability in [0, 1] and SDF in [-1, 1] -> fused score in [-1, 1]."""
    w = float(mask_weight)
    return w * (2.0 * prob - 1.0) + (1.0 - w) * sdf


def to_input_frame(maps: torch.Tensor, input_hw: Sequence[tuple[int, int]],
                   sam_size: int, fill: float = -1.0) -> torch.Tensor:
    """Student-frame maps (B, 1, S, S) -> SAM's padded input frame (B, 1, S_sam, S_sam).

    Image i fills the top-left (H'_i, W'_i) (bilinear resize; the student's square frame and
    SAM's longest-side frame cover the same whole image), the rest is ``fill``.
    """
    out = torch.full((maps.shape[0], 1, sam_size, sam_size), float(fill), dtype=maps.dtype,
                     device=maps.device)
    for i, (h, w) in enumerate(input_hw):
        out[i, :, :h, :w] = F.interpolate(maps[i:i + 1].float(), size=(int(h), int(w)),
                                          mode="bilinear", align_corners=False)[0].to(maps.dtype)
    return out


def fused_mask_prompt(
    prob: torch.Tensor,
    sdf: torch.Tensor,
    input_hw: Sequence[tuple[int, int]],
    sam_size: int,
    low_res_hw: tuple[int, int],
    mode: FusionMode = "sdf-ramp",
    mask_weight: float = 0.5,
    soft_gain: float = 16.0,
) -> torch.Tensor:
    """The fused mask prompt for SAM's decoder.

    Args:
        prob: (B, 1, S, S) student lesion probability. sdf: (B, 1, S, S) student SDF [-1, 1].
        input_hw: per image, (H', W') of the image inside SAM's padded S_sam input.
        sam_size: SAM's input size S_sam. low_res_hw: its mask-input size (L, L).
        mode, mask_weight, soft_gain: see the module docstring.

    Returns:
        (B, 1, L, L) float32 mask-prompt logits in SAM's padded input frame.
    """
    if mode not in FUSION_MODES:
        raise ValueError(f"unknown fusion mode {mode!r}; known: {FUSION_MODES}")
    fused = to_input_frame(fuse_scores(prob.float(), sdf.float(), mask_weight), input_hw,
                           sam_size)
    low = F.interpolate(fused, size=tuple(low_res_hw), mode="area")
    if mode == "soft":
        return (soft_gain * low).clamp(-MASK_PROMPT_CLIP, MASK_PROMPT_CLIP)
    inside = (low > 0).cpu().numpy()
    ramps = [np.clip(MASK_PROMPT_SCALE * signed_distance(m[0]), -MASK_PROMPT_CLIP,
                     MASK_PROMPT_CLIP)[None] for m in inside]
    return torch.from_numpy(np.stack(ramps).astype(np.float32)).to(prob.device)


def fused_boxes(prob: torch.Tensor, sdf: torch.Tensor, input_hw: Sequence[tuple[int, int]],
                sam_size: int, mask_weight: float = 0.5) -> torch.Tensor:
    """(B, 4) float32 XYXY boxes (SAM's input frame) around each fused lesion ``f > 0``.

    An image whose fused lesion is empty gets the whole image (H', W') as its box, so that
    a batch keeps one box per image.
    """
    fused = to_input_frame(fuse_scores(prob.float(), sdf.float(), mask_weight), input_hw,
                           sam_size)
    boxes = []
    for i, (h, w) in enumerate(input_hw):
        box = mask_to_xyxy((fused[i, 0, :h, :w] > 0).cpu().numpy())
        boxes.append(box if box is not None else np.array([0.0, 0.0, w - 1.0, h - 1.0]))
    return torch.as_tensor(np.stack(boxes), dtype=torch.float32, device=prob.device)
