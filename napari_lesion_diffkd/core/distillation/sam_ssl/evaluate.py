"""Scoring a SAM-SSL student: validation metrics and pseudo-label quality.

* ``evaluate_student``: the student's mask on each validation image, resized back to the
  image's own (Y, X) (bilinear on the probability, threshold 0.5, as ``predict`` does), scored
  with ``core.metrics`` (Dice, IoU, sensitivity, specificity) at the original resolution.
* ``pseudo_label_quality``: on unlabelled training images whose masks exist, the Dice of the
  student's own mask and of SAM's refinement of its fused prompt (the pseudo-label), both in
  the student's S x S frame against the mask resized to S x S. Measurement only: these masks
  never enter a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_lesion_diffkd.core import metrics
from napari_lesion_diffkd.core.data.preprocess import resize_maps


@torch.no_grad()
def student_maps(net: nn.Module, images: torch.Tensor,
                 chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, S, S) images -> probability and SDF, each (N, 1, S, S) float32 (eval mode)."""
    was_training = net.training
    net.eval()
    probs, sdfs = [], []
    for start in range(0, images.shape[0], chunk):
        logits, sdf = net(images[start:start + chunk])
        probs.append(torch.sigmoid(logits.float()))
        sdfs.append(sdf.float())
    net.train(was_training)
    if not probs:
        return torch.zeros(0, 1, *images.shape[-2:]), torch.zeros(0, 1, *images.shape[-2:])
    return torch.cat(probs), torch.cat(sdfs)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def evaluate_student(net: nn.Module, images: torch.Tensor,
                     masks: Sequence[np.ndarray]) -> dict[str, Any]:
    """Mean Dice / IoU / sensitivity / specificity at each image's own resolution.

    Returns:
        ``{"n", "dice", "iou", "sensitivity", "specificity", "per_image_dice": [...]}``.
    """
    prob, _ = student_maps(net, images)
    rows: dict[str, list[float]] = {"dice": [], "iou": [], "sensitivity": [], "specificity": []}
    for p, gt in zip(prob, masks):
        pred = resize_maps(p[0], tuple(gt.shape)).numpy() >= 0.5
        for key in rows:
            rows[key].append(getattr(metrics, key)(pred, gt))
    out: dict[str, Any] = {"n": len(masks), **{k: _mean(v) for k, v in rows.items()}}
    out["per_image_dice"] = [round(v, 5) for v in rows["dice"]]
    return out


def dice_batch(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) {0, 1} masks -> (B,) Dice (1 when both are empty)."""
    dims = (1, 2, 3)
    inter = (pred * gt).sum(dims)
    total = pred.sum(dims) + gt.sum(dims)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


@torch.no_grad()
def pseudo_label_quality(net: nn.Module, teacher: Any, embeddings: torch.Tensor,
                         input_hw: Sequence[tuple[int, int]], images: torch.Tensor,
                         gts: torch.Tensor, refine_kwargs: dict[str, Any],
                         chunk: int = 16) -> dict[str, float]:
    """Student vs SAM-refined Dice on unlabelled images with known masks.

    Args:
        teacher: a ``pseudo.SamTeacher``. embeddings, input_hw: its cache for ``images``.
        images: (N, C, S, S); gts: (N, 1, S, S) {0, 1}.
        refine_kwargs: fusion settings passed to ``SamTeacher.refine``.

    Returns:
        ``{"n", "student_dice", "pseudo_dice", "pseudo_better_fraction", "sam_score"}``.
    """
    st, ps, sc = [], [], []
    for start in range(0, images.shape[0], chunk):
        sl = slice(start, start + chunk)
        prob, sdf = student_maps(net, images[sl])
        ref = teacher.refine(embeddings[sl], input_hw[sl], prob, sdf, **refine_kwargs)
        st.append(dice_batch((prob >= 0.5).float(), gts[sl]))
        ps.append(dice_batch(ref.pseudo_labels, gts[sl]))
        sc.append(ref.score.cpu())
    if not st:
        return {"n": 0}
    s, p = torch.cat(st), torch.cat(ps)
    return {"n": int(s.numel()), "student_dice": float(s.mean()), "pseudo_dice": float(p.mean()),
            "pseudo_better_fraction": float((p > s).float().mean()),
            "sam_score": float(torch.cat(sc).mean())}
