"""STAPLE: analytic cases, a plain per-pixel reference, SimpleITK agreement, batching."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi
from skimage.io import imread

from napari_lesion_diffkd.core.ensemble.staple import UNISEGDIFF_PARAMS, StapleResult, staple

TOL = 1e-3  # required agreement with SimpleITK (probability max-abs, sensitivity, specificity)


def _sitk_staple(masks: np.ndarray, *, max_iterations: int | None = None, weight: float = 1.0):
    """SimpleITK's STAPLEImageFilter on (K, *spatial) {0,1} masks."""
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    f.SetConfidenceWeight(weight)
    if max_iterations is not None:
        f.SetMaximumIterations(max_iterations)
    out = f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    return (
        sitk.GetArrayFromImage(out),
        np.asarray(f.GetSensitivity()),
        np.asarray(f.GetSpecificity()),
        f.GetElapsedIterations(),
    )


def _assert_matches_sitk(masks: np.ndarray, **kwargs) -> StapleResult:
    ours = staple(masks, spatial_dims=masks.ndim - 1, **kwargs)
    prob, sens, spec, it = _sitk_staple(
        masks,
        max_iterations=kwargs.get("max_iterations"),
        weight=kwargs.get("confidence_weight", 1.0),
    )
    assert np.isfinite(prob).all()
    assert np.abs(ours.probability[0].numpy() - prob).max() < TOL
    assert np.abs(ours.sensitivity[0].numpy() - sens).max() < TOL
    assert np.abs(ours.specificity[0].numpy() - spec).max() < TOL
    if bool(ours.converged[0]):
        # ITK reports the 0-based index of its last iteration; allow one off for rounding
        # exactly at the 1e-7 threshold.
        assert abs(int(ours.iterations[0]) - (it + 1)) <= 1
    else:
        assert int(ours.iterations[0]) == it
    return ours


def _raters_from_truth(rng, truth: np.ndarray, k: int) -> np.ndarray:
    """K raters with random sensitivity/specificity flipping pixels of ``truth``."""
    sens = rng.uniform(0.6, 0.99, k)
    spec = rng.uniform(0.75, 0.99, k)
    noise = rng.random((k, *truth.shape))
    return np.where(truth, noise < sens[:, None, None], noise > spec[:, None, None])


def _perturbed(rng, mask: np.ndarray, k: int) -> np.ndarray:
    """K copies of a real mask, each dilated or eroded (0-4 px) and shifted (±4 px)."""
    out = []
    for j in range(k):
        m = mask
        r = int(rng.integers(1, 5))
        if j % 3 == 0:
            m = ndi.binary_dilation(m, iterations=r)
        elif j % 3 == 1:
            m = ndi.binary_erosion(m, iterations=r)
        out.append(np.roll(m, tuple(int(v) for v in rng.integers(-4, 5, 2)), axis=(0, 1)))
    return np.stack(out)


def _reference_staple(d: np.ndarray, g: float, iters: int, init=None) -> tuple:
    """Plain per-pixel EM (Warfield 2004 eqs. 14/18/19) in the paper's product form."""
    d = d.reshape(d.shape[0], -1).astype(bool)
    if init is None:
        w = d.mean(0)
    else:
        p, q = np.full(d.shape[0], init[0]), np.full(d.shape[0], init[1])
        a = g * np.prod(np.where(d, p[:, None], 1 - p[:, None]), 0)
        b = (1 - g) * np.prod(np.where(d, 1 - q[:, None], q[:, None]), 0)
        w = a / (a + b)
    for _ in range(iters):
        p = (w * d).sum(1) / w.sum()
        q = ((1 - w) * ~d).sum(1) / (1 - w).sum()
        a = g * np.prod(np.where(d, p[:, None], 1 - p[:, None]), 0)
        b = (1 - g) * np.prod(np.where(d, 1 - q[:, None], q[:, None]), 0)
        w = a / (a + b)
    return w, p, q


# --------------------------------------------------------------------------- analytic


def test_identical_raters_give_exact_mask_and_perfect_performance(real_masks):
    mask = real_masks[0]
    res = staple(np.stack([mask] * 5))
    assert res.probability.shape == (1, *mask.shape)
    assert res.probability.dtype == torch.float32
    np.testing.assert_array_equal(res.probability[0].numpy(), mask.astype(np.float32))
    np.testing.assert_array_equal(res.sensitivity.numpy(), 1.0)
    np.testing.assert_array_equal(res.specificity.numpy(), 1.0)
    assert bool(res.converged[0])
    assert res.prior[0].item() == pytest.approx(mask.mean())


def test_flipped_rater_gets_low_sensitivity_and_no_say(real_masks):
    mask = real_masks[3]
    raters = np.stack([mask, mask, mask, mask, ~mask])
    res = staple(raters)
    sens, spec = res.sensitivity[0].numpy(), res.specificity[0].numpy()
    assert sens[4] < 1e-6 and spec[4] < 1e-6
    np.testing.assert_allclose(sens[:4], 1.0)
    np.testing.assert_array_equal(res.consensus()[0].numpy(), mask)


def test_degenerate_inputs_have_no_nan():
    empty = np.zeros((4, 16, 16), bool)
    res = staple(empty)
    assert torch.isfinite(res.probability).all()
    assert (res.probability == 0).all()
    assert (res.sensitivity == 1).all() and (res.specificity == 1).all()

    full = np.ones((3, 8, 8), bool)
    res = staple(full)
    assert (res.probability == 1).all()
    assert (res.sensitivity == 1).all() and (res.specificity == 1).all()

    raters = np.zeros((4, 16, 16), bool)
    raters[1:, 4:10, 4:10] = True  # rater 0 says "no lesion" everywhere
    res = staple(raters)
    assert torch.isfinite(res.probability).all()
    assert res.sensitivity[0, 0].item() == 0.0
    np.testing.assert_allclose(res.probability[0].numpy(), raters[1].astype(np.float32))
    # ...and SimpleITK agrees on this one (no 0/0 there)
    _assert_matches_sitk(raters)


def test_zero_by_zero_pixels_use_the_limit_instead_of_nan():
    # Starting from "perfect" raters (p = q = 1), a pixel where they disagree is impossible
    # under both hypotheses: the product form gives 0/0 (NaN), we give the limit.
    d = np.array([[1, 1, 0, 0, 1], [1, 1, 0, 0, 0], [1, 1, 0, 1, 0]], bool)[:, None, :]
    with np.errstate(invalid="ignore"):
        w_ref, _, _ = _reference_staple(d, g=0.5, iters=0, init=(1.0, 1.0))
    assert np.isnan(w_ref[3:]).all()
    res = staple(d, prior=0.5, init_sensitivity=1.0, init_specificity=1.0, max_iterations=3)
    assert torch.isfinite(res.probability).all()
    assert torch.isfinite(res.sensitivity).all() and torch.isfinite(res.specificity).all()
    # one rater against two: the majority side wins in the limit p, q -> 1
    np.testing.assert_array_equal(res.consensus()[0, 0].numpy(), [1, 1, 0, 0, 0])


def test_matches_plain_reference_itk_and_unisegdiff_modes():
    rng = np.random.default_rng(3)
    truth = rng.random((40, 50)) < 0.35
    d = _raters_from_truth(rng, truth, 6)
    w, p, q = _reference_staple(d, g=float(d.mean()), iters=7)
    res = staple(d, max_iterations=7, tolerance=0.0)
    np.testing.assert_allclose(res.probability[0].numpy().ravel(), w, atol=1e-6)
    np.testing.assert_allclose(res.sensitivity[0].numpy(), p, atol=1e-12)
    np.testing.assert_allclose(res.specificity[0].numpy(), q, atol=1e-12)

    # UniSegDiff §2.4: alpha = 0.9, beta = 0.1 (specificity 0.9), prior 0.5, 20 updates.
    w, p, q = _reference_staple(d, g=0.5, iters=20, init=(0.9, 0.9))
    res = staple(d, **UNISEGDIFF_PARAMS)
    assert res.prior[0].item() == 0.5
    assert int(res.iterations[0]) <= 20
    np.testing.assert_allclose(res.probability[0].numpy().ravel(), w, atol=1e-6)
    np.testing.assert_allclose(res.sensitivity[0].numpy(), p, atol=1e-12)


# --------------------------------------------------------------------------- SimpleITK


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_simpleitk_on_random_raters(seed):
    rng = np.random.default_rng(seed)
    truth = ndi.gaussian_filter(rng.random((96, 128)), 4) > 0.5  # blobby truth
    d = _raters_from_truth(rng, truth, 12)
    res = _assert_matches_sitk(d)
    assert bool(res.converged[0])


def test_agrees_with_simpleitk_iteration_by_iteration_on_noise():
    # Independent noise never converges; the first 1, 2 and 7 iterations must still match.
    rng = np.random.default_rng(5)
    d = rng.random((10, 48, 40)) < rng.uniform(0.2, 0.6, (10, 1, 1))
    for n in (1, 2, 7):
        res = _assert_matches_sitk(d, max_iterations=n)
        assert int(res.iterations[0]) == n and not bool(res.converged[0])


def test_agrees_with_simpleitk_confidence_weight():
    rng = np.random.default_rng(7)
    truth = ndi.gaussian_filter(rng.random((64, 64)), 3) > 0.5
    _assert_matches_sitk(_raters_from_truth(rng, truth, 8), confidence_weight=0.6)


def test_agrees_with_simpleitk_on_perturbed_real_masks(real_masks, data_root):
    rng = np.random.default_rng(11)
    ddti = sorted((data_root / "ddti_thyroid_ultrasound" / "masks").iterdir())[0]
    # PH2 (383x512), BUS-BRA, COVID CT (256x256) from the fixture, plus DDTI.
    masks = [real_masks[0], real_masks[4], real_masks[7], imread(ddti) > 127]
    for mask in masks:
        d = _perturbed(rng, mask, 8)
        res = _assert_matches_sitk(d)
        assert bool(res.converged[0])
        if mask.sum() > 5000:  # +-4 px perturbations swamp small lesions (CT)
            # the consensus of perturbed copies stays close to the original mask
            cons = res.consensus()[0].numpy()
            assert 2 * (cons & mask).sum() / (cons.sum() + mask.sum()) > 0.9


def test_volume_input_agrees_with_simpleitk():
    rng = np.random.default_rng(2)
    truth = ndi.gaussian_filter(rng.random((12, 24, 20)), 2) > 0.5
    d = _raters_from_truth(rng, truth.reshape(12, -1), 5).reshape(5, 12, 24, 20)
    res = _assert_matches_sitk(d)
    assert res.probability.shape == (1, 12, 24, 20)


# --------------------------------------------------------------------------- batching & I/O


def test_batched_equals_per_image(real_masks):
    rng = np.random.default_rng(4)
    crops = [m[:200, :200] for m in (real_masks[0], real_masks[5], real_masks[8])]
    stack = np.stack([_perturbed(rng, m, 6) for m in crops])  # (3, 6, 200, 200)
    stack[2, 3] = False  # one sample of one image is empty
    batched = staple(torch.from_numpy(stack))
    assert batched.probability.shape == (3, 200, 200)
    assert batched.sensitivity.shape == (3, 6) and batched.iterations.shape == (3,)
    for i in range(3):
        single = staple(stack[i])
        torch.testing.assert_close(batched.probability[i], single.probability[0])
        torch.testing.assert_close(batched.sensitivity[i], single.sensitivity[0])
        torch.testing.assert_close(batched.specificity[i], single.specificity[0])
        assert int(batched.iterations[i]) == int(single.iterations[0])
        assert bool(batched.converged[i]) == bool(single.converged[0])


def test_input_forms_and_validation():
    rng = np.random.default_rng(8)
    d = rng.random((3, 10, 12)) < 0.5
    a = staple(d)
    b = staple(torch.from_numpy(d.astype(np.float32)))
    c = staple([d[0], d[1], torch.from_numpy(d[2].astype(np.uint8))])
    torch.testing.assert_close(a.probability, b.probability)
    torch.testing.assert_close(a.probability, c.probability)
    # more than 63 raters pack their votes in chunks, combined by exact re-ranking
    many = rng.random((70, 9, 9)) < 0.5
    many[:, :4] = rng.random((1, 4, 9)) < 0.5
    r = staple(many, max_iterations=5)
    ref_w, _, _ = _reference_staple(many, g=float(many.mean()), iters=5)
    np.testing.assert_allclose(r.probability[0].numpy().ravel(), ref_w, atol=1e-6)
    with pytest.raises(ValueError):
        staple(d[0])  # (H, W) alone: no rater axis
    with pytest.raises(ValueError):
        staple(d, init_sensitivity=0.9)
    with pytest.raises(ValueError):
        staple(d, prior="mean")
    with pytest.raises(ValueError):
        staple(d, max_iterations=0)
    with pytest.raises(ValueError, match="negative"):
        staple(np.where(d, 1.0, -1.0))  # raw [-1, 1] samples are not masks


def test_torch_input_returns_documented_tensor_types():
    rng = np.random.default_rng(12)
    truth = ndi.gaussian_filter(rng.random((2, 30, 34)), (0, 3, 3)) > 0.5
    d = np.stack([_raters_from_truth(rng, t, 5) for t in truth])  # (2, 5, 30, 34)
    ref = staple(d)
    for t in (
        torch.from_numpy(d),  # bool
        torch.from_numpy(d).to(torch.uint8),
        torch.from_numpy(d).float().requires_grad_(),  # detached inside
        torch.from_numpy(d).permute(0, 1, 3, 2).contiguous().transpose(2, 3),  # strided
    ):
        res = staple(t)
        assert isinstance(res, StapleResult)
        dtypes = {
            "probability": torch.float32,
            "sensitivity": torch.float64,
            "specificity": torch.float64,
            "iterations": torch.int64,
            "converged": torch.bool,
            "prior": torch.float64,
        }
        shapes = {
            "probability": (2, 30, 34),
            "sensitivity": (2, 5),
            "specificity": (2, 5),
            "iterations": (2,),
            "converged": (2,),
            "prior": (2,),
        }
        for name, dtype in dtypes.items():
            value = getattr(res, name)
            assert isinstance(value, torch.Tensor), name
            assert value.dtype == dtype and tuple(value.shape) == shapes[name], name
            assert value.device == t.device and not value.requires_grad, name
            torch.testing.assert_close(value, getattr(ref, name), rtol=0, atol=0)
        assert res.consensus().dtype == torch.bool


@pytest.mark.parametrize("k", [1, 2, 3])
def test_few_raters(k):
    rng = np.random.default_rng(20 + k)
    truth = ndi.gaussian_filter(rng.random((40, 48)), 3) > 0.5
    d = _raters_from_truth(rng, truth, k)
    res = _assert_matches_sitk(d)
    assert bool(res.converged[0]) and res.sensitivity.shape == (1, k)
    if k == 1:  # a single rater is its own consensus, vacuously perfect
        np.testing.assert_array_equal(res.probability[0].numpy(), d[0].astype(np.float32))
        assert res.sensitivity.item() == 1.0 and res.specificity.item() == 1.0
    else:
        w, p, q = _reference_staple(d, g=float(d.mean()), iters=int(res.iterations[0]))
        np.testing.assert_allclose(res.probability[0].numpy().ravel(), w, atol=1e-6)
        np.testing.assert_allclose(res.sensitivity[0].numpy(), p, atol=1e-12)
    # one pixel, batched, and the UniSegDiff variant
    one = staple(torch.from_numpy(d[None, :, :1, :1]))
    assert one.probability.shape == (1, 1, 1) and torch.isfinite(one.probability).all()
    uni = staple(d, **UNISEGDIFF_PARAMS)
    assert torch.isfinite(uni.probability).all() and int(uni.iterations[0]) <= 20


@pytest.mark.parametrize("n, k", [(1, 20), (3, 7), (1, 63), (1, 64), (16, 60), (2, 130)])
def test_pattern_table_decodes_every_pixel(n, k):
    # (1, 64), (16, 60) and (2, 130) exceed 63 bits with the image index: chunked ranking.
    from napari_lesion_diffkd.core.ensemble.staple import _unique_patterns

    rng = np.random.default_rng(n * 1000 + k)
    votes = torch.from_numpy(rng.random((n, k, 150)) < 0.5)
    votes[:, :, 100:] = votes[:, :, :50]  # repeated patterns
    votes[-1, :, 50:] = votes[-1, :, :1]  # last image: few patterns, padded
    patterns, counts, inverse = _unique_patterns(votes)
    u = patterns.shape[2]
    assert patterns.shape == (n, k, u) and counts.shape == (n, u) and inverse.shape == (n, 150)
    assert patterns.dtype == counts.dtype == torch.float64 and inverse.dtype == torch.int64
    torch.testing.assert_close(counts.sum(1), torch.full((n,), 150.0, dtype=torch.float64))
    decoded = torch.gather(patterns, 2, inverse[:, None, :].expand(n, k, 150))
    assert torch.equal(decoded.bool(), votes)
    for i in range(n):
        n_unique = torch.unique(votes[i].T, dim=0).shape[0]
        assert int((counts[i] > 0).sum()) == n_unique
        assert (patterns[i][:, counts[i] == 0] == 0).all()  # padding carries no votes


def test_wide_patterns_batched_equals_per_image():
    # N = 16 images x K = 60 raters needs 64 bits: chunked ranking; one image fits in 63.
    rng = np.random.default_rng(14)
    truth = rng.random((16, 1, 12, 12)) < 0.4
    d = np.where(truth, rng.random((16, 60, 12, 12)) < 0.85, rng.random((16, 60, 12, 12)) < 0.1)
    batched = staple(d, spatial_dims=2)
    for i in (0, 7, 15):
        single = staple(d[i])
        torch.testing.assert_close(batched.probability[i], single.probability[0])
        torch.testing.assert_close(batched.sensitivity[i], single.sensitivity[0])
        assert int(batched.iterations[i]) == int(single.iterations[0])
