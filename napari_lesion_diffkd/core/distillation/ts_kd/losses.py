"""TS-KD losses: the dual-level KD (seed 002 eqs. 5-6) and the 0.2·CE + 0.8·Dice task loss.

All take batched tensors; ``valid`` masks leave the zero padding of SAM's input frame out of
pixel losses (the padded region has no label and no image content).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def hidden_kd_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Eq. 5: mean squared error over every element of the (adapted) hidden states.

    Args:
        student_hidden: (B, C, g, g) student hidden states after the adapter.
        teacher_hidden: (B, C, g, g) the teacher encoder's output (SAM image embedding).
    """
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"hidden shapes differ: {tuple(student_hidden.shape)} vs "
                         f"{tuple(teacher_hidden.shape)}")
    return F.mse_loss(student_hidden.float(), teacher_hidden.float())


def logit_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6: mean squared error between mask logits at the teacher's low-res size.

    Args:
        student_logits: (B, 1, h, w); resized bilinearly to the teacher's size when they
            differ (seed 002 Table 8's "interpolated low-res logits").
        teacher_logits: (B, 1, L, L) SAM low-resolution logits.
        valid: (B, 1, L, L) float 0/1 region to average over (None: everywhere).
    """
    s = student_logits.float()
    if s.shape[-2:] != teacher_logits.shape[-2:]:
        s = F.interpolate(s, size=teacher_logits.shape[-2:], mode="bilinear",
                          align_corners=False)
    err = (s - teacher_logits.float()) ** 2
    if valid is None:
        return err.mean()
    return (err * valid).sum() / valid.sum().clamp(min=1.0)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                      ce_weight: float = 0.2, dice_weight: float = 0.8) -> torch.Tensor:
    """Seed 002 eq. 4: ``ce_weight`` · BCE + ``dice_weight`` · soft Dice, in the valid region.

    Args:
        logits: (B, 1, h, w) logits; upsampled bilinearly to the target's size.
        target, valid: (B, 1, S, S) float 0/1.

    Returns:
        Scalar: mean over images of the per-image weighted sum.
    """
    up = logits.float()
    if up.shape[-2:] != target.shape[-2:]:
        up = F.interpolate(up, size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target * valid  # labels exist only in the image region
    area = valid.sum(dim=(1, 2, 3)).clamp(min=1.0)
    bce = (F.binary_cross_entropy_with_logits(up, target, reduction="none") * valid
           ).sum(dim=(1, 2, 3)) / area
    prob = torch.sigmoid(up) * valid
    inter = (prob * target).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return (ce_weight * bce + dice_weight * dice).mean()
