"""Tests of the boundary-aware loss and EFKD edge/body split (``core/training/losses.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_lesion_diffkd.core.training.losses import (
    boundary_aware_loss,
    boundary_distance,
    boundary_pixels,
    boundary_weight_map,
    edge_body_masks,
    timestep_exponent,
)

T = 250  # seed 000 §IV-A


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ph2_masks(ph2_pairs: list[tuple[Path, Path]]) -> torch.Tensor:
    """Four real PH2 masks resized (nearest) to 128 x 128: (4, 1, 128, 128) float {0, 1}."""
    from skimage.io import imread
    from skimage.transform import resize

    masks = [
        resize(imread(m) > 127, (128, 128), order=0, anti_aliasing=False)
        for _, m in ph2_pairs[:4]
    ]
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))


def _scipy_boundary(mask: np.ndarray) -> np.ndarray:
    """The same inner 8-connected contour, computed with scipy (reference only)."""
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3)), border_value=1)
    return mask & ~eroded


def test_torch_distance_matches_scipy_edt(ph2_masks: torch.Tensor) -> None:
    dist = boundary_distance(ph2_masks)
    capped = boundary_distance(ph2_masks, max_distance=12)
    assert dist.shape == ph2_masks.shape and dist.dtype == torch.float32
    bound = boundary_pixels(ph2_masks)
    for i, mask_t in enumerate(ph2_masks[:, 0]):
        mask = mask_t.numpy() > 0.5
        ref_boundary = _scipy_boundary(mask)
        assert ref_boundary.any() and np.array_equal(bound[i, 0].numpy(), ref_boundary)
        # Exact Euclidean distance to the contour (float32 rounding only).
        ref = ndimage.distance_transform_edt(~ref_boundary)
        np.testing.assert_allclose(dist[i, 0].numpy(), ref, atol=1e-4)
        np.testing.assert_allclose(capped[i, 0].numpy(), np.minimum(ref, 12), atol=1e-4)
        # And within sqrt(2) px of the mask's own distance transform: exact outside, an
        # inner-contour offset of at most one diagonal step inside.
        signed = np.where(mask, ndimage.distance_transform_edt(mask),
                          ndimage.distance_transform_edt(~mask))
        diff = dist[i, 0].numpy() - signed
        assert np.abs(diff[~mask]).max() < 1e-4
        assert diff[mask].min() >= -np.sqrt(2) - 1e-4 and diff[mask].max() < 1e-4


def test_batch_call_equals_per_sample_calls(ph2_masks: torch.Tensor) -> None:
    t = torch.tensor([0, 60, 150, 249])
    together = boundary_weight_map(ph2_masks, t=t, num_timesteps=T)
    for i in range(len(t)):
        alone = boundary_weight_map(ph2_masks[i : i + 1], t=t[i : i + 1], num_timesteps=T)
        torch.testing.assert_close(together[i : i + 1], alone)
    assert not torch.equal(together[0], together[1])  # different masks, different maps


def test_weights_peak_on_boundary_and_sharpen_at_low_noise(ph2_masks: torch.Tensor) -> None:
    bound = boundary_pixels(ph2_masks)
    low = boundary_weight_map(ph2_masks, t=torch.zeros(4), num_timesteps=T)
    high = boundary_weight_map(ph2_masks, t=torch.full((4,), T - 1.0), num_timesteps=T)
    for w in (low, high):
        assert float(w.min()) >= 0 and float(w.max()) <= 1
        assert bool((w[bound] == 1).all()) and bool((w[~bound] < 1).all())
    # Low noise (small t): larger exponent, so weights fall off faster away from the border.
    assert bool((low <= high + 1e-6).all())
    for i in range(4):
        off = ~bound[i]
        assert float(low[i][off].mean()) < float(high[i][off].mean()) - 0.05
    # Weight decreases with distance (monotone in d for a fixed image).
    dist = boundary_distance(ph2_masks)
    near, far = dist <= 2, dist >= 20
    for i in range(4):
        assert float(low[i][near[i]].min()) > float(low[i][far[i]].max())
    exps = timestep_exponent(torch.tensor([0.0, 100.0, 249.0]), T)
    assert bool((exps[1:] < exps[:-1]).all())
    assert abs(float(exps[0]) - 0.2**0.2) < 1e-6  # e(0) = gamma**gamma, gamma = 0.2


def test_uniform_weights_without_boundary_or_tiny_lesion() -> None:
    masks = torch.zeros(3, 1, 64, 64)
    masks[1] = 1.0  # full mask: no boundary
    masks[2, :, 10:14, 10:14] = 1.0  # 16 px < 1% of 4096
    for cap in (None, 10):
        w = boundary_weight_map(masks, max_distance=cap, t=torch.zeros(3), num_timesteps=T)
        assert bool((w == 1).all())
    assert bool(torch.isinf(boundary_distance(masks[:2])).all())


def test_loss_differentiable_and_matches_eq1(ph2_masks: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(4, 1, 128, 128, generator=gen)
    pred = torch.randn(4, 1, 128, 128, generator=gen, requires_grad=True)
    t = torch.tensor([0, 10, 100, 240])
    term = boundary_aware_loss(pred, target, ph2_masks, t, T)
    full = boundary_aware_loss(pred, target, ph2_masks, t, T, alpha=0.25)
    assert term.dim() == 0 and full.dim() == 0
    w = boundary_weight_map(ph2_masks, t=t, num_timesteps=T)
    sq = (pred - target) ** 2
    torch.testing.assert_close(term, (w * sq).mean())
    # Eq. 1 = MSE + alpha * boundary term (how the trainer composes it).
    torch.testing.assert_close(full, sq.mean() + 0.25 * term)
    full.backward()
    assert pred.grad is not None and bool(torch.isfinite(pred.grad).all())
    # Errors on the boundary cost more than the same errors far from it.
    bound = boundary_pixels(ph2_masks).float()
    far = (boundary_distance(ph2_masks) > 30).float()
    on_edge = boundary_aware_loss(bound, torch.zeros_like(bound), ph2_masks, t, T)
    away = boundary_aware_loss(far, torch.zeros_like(far), ph2_masks, t, T)
    assert float(on_edge) / float(bound.sum()) > float(away) / float(far.sum())


def test_edge_and_body_partition_the_image(ph2_masks: torch.Tensor) -> None:
    t = torch.tensor([0, 0, 125, 249])
    w = boundary_weight_map(ph2_masks, t=t, num_timesteps=T, gamma=1.5)  # EFKD's split
    edge, body = edge_body_masks(w, tau=0.6)
    assert edge.shape == body.shape == ph2_masks.shape
    assert bool(((edge == 0) | (edge == 1)).all())
    torch.testing.assert_close(edge + body, torch.ones_like(edge))
    assert float((edge * body).sum()) == 0
    assert bool((edge[boundary_pixels(ph2_masks)] == 1).all())  # contour is always edge
    assert float(body[:2].sum()) > 0 and float(edge[:2].sum()) > 0
    # Larger tau: thinner band; later timestep: wider band.
    thin, _ = edge_body_masks(w, tau=0.9)
    assert float(thin.sum()) < float(edge.sum())
    same = ph2_masks[:1].expand(2, -1, -1, -1)
    w_t = boundary_weight_map(same, t=torch.tensor([0, 200]), num_timesteps=T, gamma=1.5)
    band, _ = edge_body_masks(w_t)
    assert float(band[1].sum()) > float(band[0].sum())
