"""Losses of the SAM-guided semi-supervised student (seed 003), batched in torch.

* ``segmentation_loss``: ``dice_weight · soft Dice + ce_weight · BCE`` on mask logits vs a
  {0, 1} target (labels, or SAM's pseudo-labels);
* ``sdf_loss``: MSE (default) or L1 between the SDF head and the target's normalised SDF;
* ``bernoulli_kl``: per-pixel KL(SAM || student) between the two soft predictions (seed 003's
  "KL between SAM logits & student predictions"), with Hinton's temperature: both logits are
  divided by T and the result multiplied by T²;
* ``rampup``: the unsupervised weight's sigmoid ramp-up ``exp(-5 (1 - t)²)`` (Laine & Aila,
  ICLR 2017; the usual schedule of dual-task / mean-teacher SSL). Seed 003 gives no weights or
  schedule; the ones in ``SamSslConfig`` are this project's.

Shapes: logits/targets (B, 1, S, S) float32; every loss returns a scalar (batch mean).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch."""
    prob = torch.sigmoid(logits.float())
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dims)
    return (1 - (2 * inter + eps) / (prob.sum(dims) + target.sum(dims) + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                      ce_weight: float = 1.0) -> torch.Tensor:
    """Dice + binary cross-entropy on mask logits vs a {0, 1} target."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target)
    return dice_weight * dice_loss(logits, target) + ce_weight * bce


def sdf_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """MSE or L1 between predicted and target SDFs (both in [-1, 1])."""
    if kind == "mse":
        return F.mse_loss(pred.float(), target)
    if kind == "l1":
        return F.l1_loss(pred.float(), target)
    raise ValueError(f"unknown sdf loss {kind!r} (mse, l1)")


def bernoulli_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                 temperature: float = 1.0) -> torch.Tensor:
    """Mean per-pixel KL(Bern(σ(t/T)) || Bern(σ(s/T))) · T²; 0 when the logits are equal."""
    t = teacher_logits.float() / temperature
    s = student_logits.float() / temperature
    p = torch.sigmoid(t)
    # log σ(z) and log(1 - σ(z)) = log σ(-z), stable for large |z|.
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean() * temperature ** 2


def rampup(step: int, ramp_steps: int) -> float:
    """Sigmoid ramp-up in [exp(-5), 1]: ``exp(-5 (1 - min(step / ramp_steps, 1))²)``."""
    if ramp_steps <= 0:
        return 1.0
    t = min(max(step, 0) / ramp_steps, 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)
