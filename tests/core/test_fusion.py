"""Fusion of K samples: mean (seed 000), majority, STAPLE (seed 004) on known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_lesion_diffkd.core.ensemble.fusion import FusionResult, fuse_samples
from napari_lesion_diffkd.core.ensemble.staple import UNISEGDIFF_PARAMS, staple


def _x0(masks: np.ndarray, rng, noise: float = 0.3) -> torch.Tensor:
    """Masks {0,1} -> soft diffusion-like outputs in [-1, 1] (sign kept)."""
    x = np.where(masks, 1.0, -1.0) * (1 - noise * rng.random(masks.shape))
    return torch.from_numpy(x.astype(np.float32))


def test_mean_thresholds_the_average_at_zero():
    # one image, K = 3, four pixels; per-pixel values in [-1, 1]
    s = torch.tensor([[[[0.5, 0.9, -1.0, 0.2]], [[-0.2, 0.9, -1.0, -0.1]],
                       [[-0.4, -0.9, -1.0, -0.1]]]])
    res = fuse_samples(s, "mean")
    mean = torch.tensor([-0.1 / 3, 0.9 / 3, -1.0, 0.0])
    torch.testing.assert_close(res.probability[0, 0], (mean + 1) / 2)
    # mean exactly 0 (last pixel) is background: strict > 0, as the seed paper's x0 > 0
    assert res.consensus[0, 0].tolist() == [False, True, False, False]
    assert res.sensitivity is None and res.specificity is None and res.method == "mean"
    assert res.probability.dtype == torch.float32 and res.consensus.dtype == torch.bool


def test_majority_ties_are_background():
    s = torch.tensor([[[[1.0, 1.0, 1.0]], [[1.0, 1.0, -1.0]], [[-1.0, -1.0, -1.0]],
                       [[-1.0, 0.5, -1.0]]]])  # K = 4: votes 2, 3, 1
    res = fuse_samples(s, "majority")
    torch.testing.assert_close(res.probability[0, 0], torch.tensor([0.5, 0.75, 0.25]))
    assert res.consensus[0, 0].tolist() == [False, True, False]
    # odd K: 2 of 3 is a majority
    assert fuse_samples(s[:, :3], "majority").consensus[0, 0].tolist() == [True, True, False]
    # a higher threshold asks for more votes
    assert fuse_samples(s, "majority", threshold=0.8).consensus.sum() == 0


def test_bool_samples_mean_equals_majority():
    rng = np.random.default_rng(0)
    b = torch.from_numpy(rng.random((2, 5, 8, 9)) < 0.5)
    m, v = fuse_samples(b, "mean"), fuse_samples(b, "majority")
    torch.testing.assert_close(m.probability, v.probability)
    assert torch.equal(m.consensus, v.consensus)


def test_staple_fusion_binarises_at_zero_and_matches_staple(real_masks):
    rng = np.random.default_rng(1)
    gt = real_masks[1][::2, ::2]
    masks = []
    for j in range(6):
        m = ndi.binary_dilation(gt, iterations=2) if j % 2 else ndi.binary_erosion(gt, iterations=2)
        masks.append(np.roll(m, int(rng.integers(-2, 3)), axis=1))
    masks = np.stack(masks)[None]  # (1, 6, H, W)
    x = _x0(masks, rng)
    res = fuse_samples(x, "staple")
    ref = staple(masks[0])
    torch.testing.assert_close(res.probability, ref.probability)
    torch.testing.assert_close(res.sensitivity, ref.sensitivity)
    assert torch.equal(res.consensus, res.probability >= 0.5)
    assert res.sensitivity.shape == (1, 6) and res.method == "staple"
    dice = 2 * (res.consensus[0].numpy() & gt).sum() / (res.consensus[0].numpy().sum() + gt.sum())
    assert dice > 0.95
    # UniSegDiff settings go through staple_kwargs
    u = fuse_samples(x, "staple", staple_kwargs=UNISEGDIFF_PARAMS)
    torch.testing.assert_close(u.probability, staple(masks[0], **UNISEGDIFF_PARAMS).probability)


def test_identical_samples_fuse_to_the_mask_with_every_method(real_masks):
    gt = real_masks[6]
    x = torch.from_numpy(np.where(np.stack([gt] * 4), 0.8, -0.8).astype(np.float32))[None]
    for method in ("staple", "mean", "majority"):
        res = fuse_samples(x, method)
        assert isinstance(res, FusionResult)
        assert res.probability.shape == (1, *gt.shape)
        np.testing.assert_array_equal(res.consensus[0].numpy(), gt)
        assert float(res.probability.min()) >= 0 and float(res.probability.max()) <= 1


def test_batched_staple_fusion_equals_per_image():
    rng = np.random.default_rng(2)
    truth = ndi.gaussian_filter(rng.random((3, 40, 40)), (0, 3, 3)) > 0.5
    masks = np.stack([
        np.stack([np.roll(t, int(rng.integers(-3, 4)), axis=0) for _ in range(5)]) for t in truth
    ])
    x = _x0(masks, rng)
    batched = fuse_samples(x, "staple")
    for i in range(3):
        single = fuse_samples(x[i : i + 1], "staple")
        torch.testing.assert_close(batched.probability[i], single.probability[0])
        assert torch.equal(batched.consensus[i], single.consensus[0])


def test_numpy_input_and_bad_arguments():
    x = np.zeros((1, 3, 4, 4), np.float32) - 1
    x[:, :, 1:3, 1:3] = 1
    res = fuse_samples(x, "mean")
    assert isinstance(res.probability, torch.Tensor) and int(res.consensus.sum()) == 4
    with pytest.raises(ValueError):
        fuse_samples(x, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fuse_samples(x[0, 0], "mean")
