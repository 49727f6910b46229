"""Pixel uncertainty maps and per-image uncertainty scores from K diffusion samples.

Samples are (N, K, *spatial) with values in [-1, 1] (x0 estimates, > 0 = lesion) or bool.
Two views of one sample:

* **hard**: ``x > 0`` (bool input as is);
* **soft**: ``p = (x + 1) / 2`` clipped to [0, 1], the sample's own lesion probability
  (for bool input soft = hard).

Entropies are binary entropies in **bits**, so they lie in [0, 1] (maximum 1 at p = 0.5),
with ``0 · log 0 = 0``. The mutual information ``H(mean p) − mean H(p_k)`` (the BALD
score: total minus expected aleatoric entropy) also lies in [0, 1] bits; it is only
informative for soft outputs, since hard samples have zero per-sample entropy and it
reduces to the entropy of the mean.

All functions are vectorised torch code on the samples' device; none loops over images.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from napari_lesion_diffkd.core.ensemble.fusion import as_sample_tensor, fuse_samples

__all__ = [
    "UncertaintyKind",
    "binary_entropy",
    "boundary_band",
    "entropy_of_mean",
    "image_scores",
    "mutual_information",
    "pairwise_dice",
    "pixel_variance",
    "uncertainty_map",
]

UncertaintyKind = Literal["entropy", "variance", "mutual_information"]

# Largest Bernoulli variance p(1 - p), at p = 0.5: the variance map is divided by it.
_MAX_BERNOULLI_VARIANCE = 0.25


def _hard(t: torch.Tensor) -> torch.Tensor:
    """(N, K, ...) float32 {0, 1}: x > 0, or the bool masks."""
    return (t if t.dtype == torch.bool else t > 0).to(torch.float32)


def _soft(t: torch.Tensor) -> torch.Tensor:
    """(N, K, ...) float32 in [0, 1]: (x + 1) / 2 clipped, or the bool masks."""
    if t.dtype == torch.bool:
        return t.to(torch.float32)
    return ((t.to(torch.float32) + 1) / 2).clamp(0.0, 1.0)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Binary entropy in bits, elementwise, with 0·log 0 = 0.

    Args:
        p: probabilities in [0, 1], any shape, floating dtype.

    Returns:
        Same shape and dtype, values in [0, 1].
    """
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)) / np.log(2.0)


def pixel_variance(samples: torch.Tensor | np.ndarray, *, soft: bool = False) -> torch.Tensor:
    """Variance across the K samples (population variance, ddof = 0).

    Args:
        samples: (N, K, *spatial) in [-1, 1] or bool.
        soft: the variance of the soft probabilities (x + 1) / 2 instead of the hard
            masks x > 0 (the same for bool samples).

    Returns:
        (N, *spatial) float32 in [0, 0.25]; for hard masks it equals m (1 − m) with m the
        lesion vote fraction.
    """
    t = as_sample_tensor(samples)
    return (_soft(t) if soft else _hard(t)).var(dim=1, unbiased=False)


def entropy_of_mean(samples: torch.Tensor | np.ndarray, *, soft: bool = False) -> torch.Tensor:
    """Binary entropy (bits) of the mean lesion probability over the K samples.

    Args:
        samples: (N, K, *spatial) in [-1, 1] or bool.
        soft: average the soft probabilities (x + 1) / 2 instead of the hard votes x > 0.

    Returns:
        (N, *spatial) float32 in [0, 1].
    """
    t = as_sample_tensor(samples)
    p = (_soft(t) if soft else _hard(t)).mean(dim=1)
    return binary_entropy(p)


def mutual_information(samples: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Mutual information (bits) between the label and the sample index, from soft outputs.

    ``MI = H(mean_k p_k) − mean_k H(p_k)`` with p_k = (x_k + 1) / 2; ≥ 0 by concavity of
    H (rounding negatives are clipped to 0).

    Args:
        samples: (N, K, *spatial) in [-1, 1] (bool input gives the entropy of the mean).

    Returns:
        (N, *spatial) float32 in [0, 1].
    """
    p = _soft(as_sample_tensor(samples))
    mi = binary_entropy(p.mean(dim=1)) - binary_entropy(p).mean(dim=1)
    return mi.clamp(0.0, 1.0)


def uncertainty_map(
    samples: torch.Tensor | np.ndarray,
    kind: UncertaintyKind = "entropy",
    *,
    soft: bool = False,
) -> torch.Tensor:
    """Per-pixel uncertainty normalised to [0, 1].

    Args:
        samples: (N, K, *spatial) in [-1, 1] or bool.
        kind: ``"entropy"`` — :func:`entropy_of_mean` in bits (already in [0, 1]; 1 =
            half the samples say lesion); ``"variance"`` — :func:`pixel_variance` divided
            by its maximum 0.25 (so 1 = a 50/50 split, equal to 4 m (1 − m));
            ``"mutual_information"`` — :func:`mutual_information` in bits (in [0, 1]).
        soft: for ``"entropy"`` only, use the mean soft probability.

    Returns:
        (N, *spatial) float32 in [0, 1].
    """
    if kind == "entropy":
        out = entropy_of_mean(samples, soft=soft)
    elif kind == "variance":
        out = pixel_variance(samples) / _MAX_BERNOULLI_VARIANCE
    elif kind == "mutual_information":
        out = mutual_information(samples)
    else:
        raise ValueError(
            f"unknown uncertainty kind {kind!r}; use 'entropy', 'variance' or "
            "'mutual_information'"
        )
    return out.to(torch.float32).clamp(0.0, 1.0)


def boundary_band(mask: torch.Tensor, band_px: int) -> torch.Tensor:
    """Pixels within ``band_px`` (chessboard distance) of the mask boundary, both sides.

    ``dilate(mask) & ~erode(mask)`` with a (2r + 1)-wide square structuring element via
    max-pooling. Outside the image counts as neither lesion nor background (max-pooling
    pads with -inf), so the image border itself is not a lesion boundary.

    Args:
        mask: (N, *spatial) bool, 2 or 3 spatial axes.
        band_px: half-width r of the band in pixels (0 gives an empty band).

    Returns:
        (N, *spatial) bool.
    """
    if band_px <= 0:
        return torch.zeros_like(mask, dtype=torch.bool)
    nd = mask.ndim - 1
    pool = {2: F.max_pool2d, 3: F.max_pool3d}.get(nd)
    if pool is None:
        raise ValueError(f"boundary_band needs 2 or 3 spatial axes, got {nd}")
    m = mask.to(torch.float32).unsqueeze(1)  # (N, 1, *spatial)
    k = 2 * band_px + 1
    dilated = pool(m, k, stride=1, padding=band_px)
    eroded = -pool(-m, k, stride=1, padding=band_px)
    return ((dilated > 0.5) & ~(eroded > 0.5)).squeeze(1)


def pairwise_dice(samples: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Dice between every pair of hard sample masks, vectorised with one batched matmul.

    Args:
        samples: (N, K, *spatial) in [-1, 1] or bool.

    Returns:
        (N, K, K) float32 with ones on the diagonal; the Dice of two empty masks is 1.
    """
    t = as_sample_tensor(samples)
    h = _hard(t).flatten(2).to(torch.float64)  # float64: exact integer counts
    inter = torch.bmm(h, h.transpose(1, 2))  # (N, K, K) |A ∩ B|
    size = torch.diagonal(inter, dim1=1, dim2=2)  # (N, K) |A|
    denom = size[:, :, None] + size[:, None, :]
    dice = torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(inter))
    return dice.to(torch.float32)


def image_scores(
    samples: torch.Tensor | np.ndarray,
    consensus: torch.Tensor | np.ndarray | None = None,
    band_px: int = 5,
) -> dict[str, torch.Tensor]:
    """Per-image uncertainty scores for ranking images in active learning (higher = less sure).

    Args:
        samples: (N, K, *spatial) in [-1, 1] or bool.
        consensus: (N, *spatial) bool fused mask around whose boundary
            ``boundary_entropy`` is measured; default the mean fusion (mean x0 > 0).
        band_px: half-width of the boundary band in pixels.

    Returns:
        dict of (N,) float32 tensors:

        * ``boundary_entropy``: mean of the (hard) entropy-of-mean map over the band of
          ±``band_px`` around the consensus boundary (:func:`boundary_band`); 0 when the
          band is empty (empty or full consensus).
        * ``sample_disagreement``: 1 − mean Dice over the K (K − 1) / 2 sample pairs
          (two empty masks have Dice 1; K = 1 gives 0).
        * ``mean_entropy``: mean of the hard entropy-of-mean map over the whole image.
        * ``mean_variance``: mean of the normalised variance map (4 m (1 − m)).
        * ``mean_mutual_information``: mean of :func:`mutual_information` (soft outputs).
    """
    t = as_sample_tensor(samples)
    n, k = t.shape[:2]
    ent = entropy_of_mean(t)
    if consensus is None:
        cons = fuse_samples(t, "mean").consensus
    else:
        cons = torch.as_tensor(np.asarray(consensus) if not isinstance(consensus, torch.Tensor)
                               else consensus).to(device=t.device, dtype=torch.bool)
        if cons.shape != ent.shape:
            raise ValueError(
                f"consensus shape {tuple(cons.shape)} does not match {tuple(ent.shape)}"
            )
    band = boundary_band(cons, band_px).flatten(1).to(torch.float32)
    band_sum = band.sum(dim=1)
    boundary = torch.where(
        band_sum > 0, (ent.flatten(1) * band).sum(dim=1) / band_sum.clamp_min(1), 0.0
    )
    if k > 1:
        dice = pairwise_dice(t)
        iu = torch.triu_indices(k, k, offset=1, device=t.device)
        mean_dice = dice[:, iu[0], iu[1]].mean(dim=1)
    else:
        mean_dice = torch.ones(n, device=t.device)
    return {
        "boundary_entropy": boundary.to(torch.float32),
        "sample_disagreement": (1 - mean_dice).to(torch.float32),
        "mean_entropy": ent.flatten(1).mean(dim=1).to(torch.float32),
        "mean_variance": uncertainty_map(t, "variance").flatten(1).mean(dim=1),
        "mean_mutual_information": mutual_information(t).flatten(1).mean(dim=1).to(
            torch.float32
        ),
    }
