"""Uncertainty evaluation (variance correlation, error-detection AUROC, Spearman) on real masks.

Sample stacks are built from real PH2 lesion masks by growing, shrinking and shifting them,
so the variance lies in known bands: along the lesion boundary, or in a ring deep inside.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from scipy.stats import mannwhitneyu

from napari_lesion_diffkd.core.data.readers import read_image
from napari_lesion_diffkd.core.ensemble.fusion import fuse_samples
from napari_lesion_diffkd.core.ensemble.uncertainty import uncertainty_map
from napari_lesion_diffkd.core.ensemble.uncertainty_eval import (
    auroc,
    auroc_from_counts,
    error_counts,
    error_detection_auroc,
    spearman,
    variance_correlation,
)


@pytest.fixture(scope="module")
def masks(ph2_pairs) -> list[np.ndarray]:
    """The first three real PH2 lesion masks, (Y, X) bool."""
    return [read_image(m).data > 127 for _, m in ph2_pairs[:3]]


def _grow(mask: np.ndarray, r: float) -> np.ndarray:
    """Mask grown (r > 0) or shrunk (r < 0) by |r| pixels (Euclidean)."""
    if r >= 0:
        return ndi.distance_transform_edt(~mask) <= r
    return ndi.distance_transform_edt(mask) > -r


def _boundary_stack(mask: np.ndarray) -> np.ndarray:
    """(6, Y, X) bool: the mask grown, shrunk and shifted by a few pixels (boundary variance)."""
    return np.stack([mask, _grow(mask, 4), _grow(mask, -4), np.roll(mask, 3, axis=0),
                     np.roll(mask, -3, axis=1), _grow(mask, 2)])


def _inner_ring_stack(mask: np.ndarray) -> np.ndarray:
    """(4, Y, X) bool: deep erosions, so the samples disagree only 25-35 px inside the lesion."""
    return np.stack([_grow(mask, -25), _grow(mask, -35), _grow(mask, -25), _grow(mask, -30)])


def test_real_masks_are_usable(masks):
    for m in masks:
        assert m.ndim == 2 and m.any() and not m.all()
        assert _grow(m, -35).any()  # the inner ring exists


# -- variance correlation -----------------------------------------------------------------------
def test_stack_correlates_perfectly_with_itself(masks):
    stack = _boundary_stack(masks[0])
    assert variance_correlation(stack, stack) == pytest.approx(1.0, abs=1e-12)
    # (K, 1, H, W), float x0-like values and torch tensors are the same stack
    x0 = torch.from_numpy(np.where(stack, 0.7, -0.4).astype(np.float32))[:, None]
    assert variance_correlation(x0, stack) == pytest.approx(1.0, abs=1e-12)


def test_correlation_is_low_when_variance_lies_elsewhere(masks):
    for m in masks:
        boundary, inner = _boundary_stack(m), _inner_ring_stack(m)
        r = variance_correlation(boundary, inner)
        # disjoint bands of nonzero variance: slightly negative, near 0
        assert -0.2 < r < 0.05, r
        # a partly matching stack (same boundary, half the perturbations) lies in between
        partial = np.stack([m, _grow(m, 4), _grow(m, -4)])
        assert 0.3 < variance_correlation(boundary, partial) < 1.0


def test_soft_variance_sees_agreement_near_the_threshold(masks):
    """Two stacks whose hard masks never disagree (variance 0, correlation undefined) but
    whose soft values hesitate in the same boundary band correlate with soft=True."""
    m = masks[0]
    band = _grow(m, 4) & ~_grow(m, -4)
    rng = np.random.default_rng(0)

    def soft_stack(amplitude: float) -> torch.Tensor:
        base = np.where(m, 0.8, -0.8).astype(np.float32)
        # inside the band every sample stays on the mask's side of 0 but wobbles
        wobble = amplitude * rng.uniform(-1, 1, size=(5, *m.shape)).astype(np.float32)
        x = np.where(band, np.where(m, 0.3, -0.3) + wobble, base)
        return torch.from_numpy(x)

    a, b = soft_stack(0.25), soft_stack(0.2)
    assert np.all((a.numpy() > 0) == m) and np.all((b.numpy() > 0) == m)
    assert math.isnan(variance_correlation(a, b))  # hard: no variance at all
    r = variance_correlation(a, b, soft=True)
    assert 0.5 < r < 1.0, r
    # bool stacks give the same value either way
    stack = _boundary_stack(m)
    assert variance_correlation(stack, stack[:4], soft=True) == pytest.approx(
        variance_correlation(stack, stack[:4]), abs=1e-12)


def test_correlation_is_nan_for_identical_samples(masks):
    m = masks[1]
    same = np.stack([m] * 4)
    assert math.isnan(variance_correlation(same, _boundary_stack(m)))
    assert math.isnan(variance_correlation(_boundary_stack(m), m[None]))  # K = 1


def test_correlation_rejects_mismatched_grids(masks):
    with pytest.raises(ValueError, match="pixel grids"):
        variance_correlation(_boundary_stack(masks[0]), _boundary_stack(masks[0])[:, :-1])
    with pytest.raises(ValueError, match="K, H, W"):
        variance_correlation(masks[0], masks[0])


# -- AUROC --------------------------------------------------------------------------------------
def test_auroc_by_hand_with_ties():
    # positives score 1, 2, 3; negatives 1, 2: pairs (1,1) ½, (1,2) 0, (2,1) 1, (2,2) ½,
    # (3,1) 1, (3,2) 1 -> 4 / 6
    scores = np.array([1.0, 1.0, 2.0, 2.0, 3.0])
    pos = np.array([False, True, False, True, True])
    assert auroc(scores, pos) == pytest.approx(4 / 6)
    # scikit-learn's documented example: 0.75
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)


def test_auroc_matches_mann_whitney_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 2000).astype(float)  # heavy ties
    pos = rng.random(2000) < 0.3 + 0.1 * scores / 4
    u = mannwhitneyu(scores[pos], scores[~pos]).statistic
    assert auroc(scores, pos) == pytest.approx(u / (pos.sum() * (~pos).sum()), abs=1e-12)


def test_error_indicator_gives_perfect_auroc(masks):
    gt = masks[0]
    consensus = np.roll(_grow(gt, -3), 2, axis=1)  # a real-looking, slightly wrong mask
    wrong = consensus != gt
    assert 0 < wrong.sum() < wrong.size
    indicator = wrong.astype(np.float32)
    assert error_detection_auroc(indicator, consensus, gt) == 1.0
    assert error_detection_auroc(-indicator, consensus, gt) == 0.0
    assert error_detection_auroc(np.full(gt.shape, 0.3), consensus, gt) == 0.5
    # torch input and uint8 {0, 255} masks are the same
    assert error_detection_auroc(torch.from_numpy(indicator), torch.from_numpy(consensus),
                                 gt.astype(np.uint8) * 255) == 1.0


def test_auroc_pools_images_of_different_sizes(masks):
    gts = [masks[0], masks[1][:-7, :-5]]  # two different grids
    cons = [_grow(g, 3) for g in gts]
    ind = [(c != g).astype(np.float32) for c, g in zip(cons, gts)]
    assert error_detection_auroc(ind, cons, gts) == 1.0
    # pooled over both = the AUROC of the concatenated pixels
    rng = np.random.default_rng(1)
    noisy = [i + rng.random(i.shape) for i in ind]
    flat = np.concatenate([n.ravel() for n in noisy])
    lab = np.concatenate([(c != g).ravel() for c, g in zip(cons, gts)])
    pooled = error_detection_auroc(noisy, cons, gts)
    assert pooled == pytest.approx(auroc(flat, lab), abs=1e-12)
    # the same from per-image counts joined afterwards (how the student benchmark pools)
    parts = [error_counts(n, c, g) for n, c, g in zip(noisy, cons, gts)]
    joined = [np.concatenate([p[i] for p in parts]) for i in range(3)]
    assert auroc_from_counts(*joined) == pytest.approx(pooled, abs=1e-12)
    levels, wrong, right = parts[0]
    assert np.all(np.diff(levels) > 0) and wrong.sum() + right.sum() == gts[0].size


def test_sample_entropy_detects_boundary_errors(masks):
    """The entropy of real perturbed samples ranks the consensus's (boundary) errors high."""
    gt = masks[2]
    samples = torch.from_numpy(_boundary_stack(np.roll(gt, 2, axis=0)))[None]  # (1, K, Y, X)
    consensus = fuse_samples(samples, "staple").consensus[0]
    unc = uncertainty_map(samples, "entropy")[0]
    assert error_detection_auroc(unc, consensus, gt) > 0.9


def test_auroc_is_nan_without_wrong_or_right_pixels(masks):
    gt = masks[0]
    assert math.isnan(error_detection_auroc(np.zeros(gt.shape), gt, gt))
    assert math.isnan(error_detection_auroc(np.zeros(gt.shape), ~gt, gt))


def test_auroc_checks_shapes(masks):
    gt = masks[0]
    with pytest.raises(ValueError, match="pixels"):
        error_detection_auroc(np.zeros(gt.shape)[:-1], gt, gt)
    with pytest.raises(ValueError, match="maps"):
        error_detection_auroc([np.zeros(gt.shape)], [gt, gt], [gt, gt])


# -- Spearman -----------------------------------------------------------------------------------
def test_spearman_of_monotone_transform_is_one():
    rng = np.random.default_rng(2)
    x = rng.random(20)
    assert spearman(x, np.exp(3 * x) + 1) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)


def test_spearman_drops_non_finite_pairs_and_is_nan_when_constant():
    x = np.array([0.1, 0.2, np.nan, 0.4, 0.5])
    y = np.array([1.0, 2.0, 3.0, np.inf, 5.0])
    assert spearman(x, y) == pytest.approx(1.0)  # pairs 0, 1, 4 remain
    assert math.isnan(spearman([0.0, 0.0, 0.0], [0.1, 0.5, 0.2]))
    assert math.isnan(spearman([1.0], [2.0]))
