"""Fuse the K sampled masks of a diffusion segmenter into one probability map and mask.

The samplers return K x0 estimates per image, each (H, W) in [-1, 1] where > 0 means
lesion (the {0, 1} mask mapped to {-1, 1}, as in the seed papers). Three fusions:

* ``"mean"`` (seed paper 000, LiteDermoSegDiff / DermoSegDiff): average the K soft
  outputs in [-1, 1], then threshold the mean at 0. ``probability = (mean + 1) / 2``
  clipped to [0, 1]; ``consensus = probability > threshold`` (0.5 ⇔ mean > 0; a mean of
  exactly 0 is background).
* ``"majority"``: binarise each sample at 0, ``probability`` = fraction of samples
  voting lesion, ``consensus = probability > threshold`` (0.5: strictly more than half
  the samples; with an even K a tie K/2 : K/2 is background).
* ``"staple"`` (seed paper 004, UniSegDiff §2.4): binarise each sample at 0 and run
  :func:`~napari_lesion_diffkd.core.ensemble.staple.staple` (ITK conventions by default);
  ``probability`` = STAPLE posterior, ``consensus = probability >= threshold`` (0.5 is
  the maximum-a-posteriori label; a posterior of exactly 0.5, which needs perfectly
  balanced evidence, counts as lesion). ITK itself returns only the posterior.

Bool input (already binary masks) is used as is: for ``"mean"`` it is mapped to ±1, so
the mean fusion then equals the majority fusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from napari_lesion_diffkd.core.ensemble.staple import staple

__all__ = ["FusionMethod", "FusionResult", "fuse_samples", "as_sample_tensor"]

FusionMethod = Literal["staple", "mean", "majority"]

#: Default probability threshold of every method (mean: ⇔ mean x0 > 0, seed paper 000).
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class FusionResult:
    """Fused output of K samples for each of N images.

    Attributes:
        probability: (N, *spatial) float32 in [0, 1], P(lesion) under the method.
        consensus: (N, *spatial) bool fused mask.
        sensitivity: (N, K) float64 STAPLE per-sample sensitivity, None for other methods.
        specificity: (N, K) float64 STAPLE per-sample specificity, None for other methods.
        method: the fusion method used.
    """

    probability: torch.Tensor
    consensus: torch.Tensor
    sensitivity: torch.Tensor | None
    specificity: torch.Tensor | None
    method: str


def as_sample_tensor(samples: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return ``samples`` as a torch tensor (N, K, *spatial), validating the rank.

    Args:
        samples: (N, K, *spatial) float in [-1, 1] or bool, tensor or ndarray.

    Returns:
        The same data as a tensor (no copy for tensors; bool or floating dtype kept).
    """
    t = samples if isinstance(samples, torch.Tensor) else torch.from_numpy(np.asarray(samples))
    if t.ndim < 3:
        raise ValueError(f"samples must be (N, K, *spatial), got shape {tuple(t.shape)}")
    if t.dtype != torch.bool and not t.is_floating_point():
        t = t.to(torch.float32)
    return t.detach()


def _hard(t: torch.Tensor) -> torch.Tensor:
    """Binarise samples: bool as is, floats in [-1, 1] at > 0 (lesion)."""
    return t if t.dtype == torch.bool else t > 0


def fuse_samples(
    samples: torch.Tensor | np.ndarray,
    method: FusionMethod = "staple",
    threshold: float = DEFAULT_THRESHOLD,
    *,
    staple_kwargs: Mapping[str, Any] | None = None,
) -> FusionResult:
    """Fuse K sampled masks per image.

    Args:
        samples: (N, K, *spatial) float tensor/ndarray in [-1, 1] (diffusion x0 outputs,
            > 0 = lesion) or bool masks; axes image, sample, then (H, W) or (Z, Y, X).
        method: ``"staple"`` (default, UniSegDiff), ``"mean"`` (seed 000) or
            ``"majority"``; see the module docstring for each convention.
        threshold: probability threshold for ``consensus`` (default 0.5: mean x0 > 0,
            strict majority, STAPLE MAP label). Strict ``>`` for mean and majority,
            ``>=`` for STAPLE.
        staple_kwargs: extra keyword arguments for :func:`staple` (e.g.
            :data:`~napari_lesion_diffkd.core.ensemble.staple.UNISEGDIFF_PARAMS`);
            ``spatial_dims`` is set from ``samples``.

    Returns:
        :class:`FusionResult` on the device of ``samples``.
    """
    t = as_sample_tensor(samples)
    if method == "mean":
        x = t.to(torch.float32) * 2 - 1 if t.dtype == torch.bool else t
        mean = x.to(torch.float32).mean(dim=1)
        prob = ((mean + 1) / 2).clamp(0.0, 1.0)
        return FusionResult(prob, prob > threshold, None, None, method)
    if method == "majority":
        prob = _hard(t).to(torch.float32).mean(dim=1)
        return FusionResult(prob, prob > threshold, None, None, method)
    if method == "staple":
        kwargs = dict(staple_kwargs or {})
        kwargs["spatial_dims"] = t.ndim - 2
        res = staple(_hard(t), **kwargs)
        prob = res.probability.to(t.device)
        return FusionResult(
            prob,
            prob >= threshold,
            res.sensitivity.to(t.device),
            res.specificity.to(t.device),
            method,
        )
    raise ValueError(f"unknown fusion method {method!r}; use 'staple', 'mean' or 'majority'")
