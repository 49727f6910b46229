"""Uncertainty maps and per-image scores on hand-computable and real cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_lesion_diffkd.core.ensemble.uncertainty import (
    binary_entropy,
    boundary_band,
    entropy_of_mean,
    image_scores,
    mutual_information,
    pairwise_dice,
    pixel_variance,
    uncertainty_map,
)
from napari_lesion_diffkd.core.metrics import dice


def _h(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))


@pytest.fixture()
def four_pixel_samples() -> torch.Tensor:
    """(1, 4, 1, 4): K = 4 samples; hard votes per pixel 2/4, 4/4, 1/4, 0/4."""
    x = torch.tensor([[0.6, 0.9, 0.2, -0.9], [0.8, 0.9, -0.3, -0.9],
                      [-0.7, 0.9, -0.3, -0.9], [-0.5, 0.9, -0.3, -0.9]])
    return x[None, :, None, :]


def test_variance_and_entropy_by_hand(four_pixel_samples):
    var = pixel_variance(four_pixel_samples)[0, 0]
    torch.testing.assert_close(var, torch.tensor([0.25, 0.0, 0.1875, 0.0]))
    ent = entropy_of_mean(four_pixel_samples)[0, 0]
    torch.testing.assert_close(ent, torch.tensor([1.0, 0.0, _h(0.25), 0.0]))
    # soft: mean of (x + 1) / 2
    soft_mean = ((four_pixel_samples + 1) / 2).mean(dim=1)[0, 0]
    torch.testing.assert_close(
        entropy_of_mean(four_pixel_samples, soft=True)[0, 0],
        torch.tensor([_h(float(p)) for p in soft_mean]),
    )
    # normalised maps
    torch.testing.assert_close(
        uncertainty_map(four_pixel_samples, "variance")[0, 0],
        torch.tensor([1.0, 0.0, 0.75, 0.0]),
    )
    torch.testing.assert_close(uncertainty_map(four_pixel_samples, "entropy"), ent[None, None])


def test_mutual_information_by_hand():
    # pixel 0: samples certain but contradicting (-1, 1) -> MI = 1 bit
    # pixel 1: samples both undecided (0, 0) -> p = 0.5 each, all aleatoric: MI = 0
    # pixel 2: p = 0.25 and 0.75 -> H(0.5) - H(0.25)
    x = torch.tensor([[-1.0, 0.0, -0.5], [1.0, 0.0, 0.5]])[None, :, None, :]
    mi = mutual_information(x)[0, 0]
    torch.testing.assert_close(mi, torch.tensor([1.0, 0.0, 1.0 - _h(0.25)]))
    torch.testing.assert_close(uncertainty_map(x, "mutual_information")[0, 0], mi)
    # hard (bool) samples: per-sample entropy 0, so MI = entropy of the mean vote
    b = torch.tensor([[True, False], [False, False]])[None, :, None, :]
    torch.testing.assert_close(mutual_information(b), entropy_of_mean(b))


def test_binary_entropy_edges_and_ranges():
    p = torch.tensor([0.0, 0.5, 1.0, 0.1])
    torch.testing.assert_close(binary_entropy(p), torch.tensor([0.0, 1.0, 0.0, _h(0.1)]))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1.2, 1.2, (2, 6, 16, 16)).astype(np.float32))
    for kind in ("entropy", "variance", "mutual_information"):
        u = uncertainty_map(x, kind)
        assert u.shape == (2, 16, 16) and u.dtype == torch.float32
        assert float(u.min()) >= 0.0 and float(u.max()) <= 1.0
    with pytest.raises(ValueError):
        uncertainty_map(x, "std")  # type: ignore[arg-type]


def test_boundary_band_square_and_real_mask(real_masks):
    m = torch.zeros(1, 30, 30, dtype=torch.bool)
    m[0, 10:20, 10:20] = True
    band = boundary_band(m, 1)
    assert int(band.sum()) == 12 * 12 - 8 * 8
    assert int(boundary_band(m, 0).sum()) == 0
    # equals scipy dilation minus erosion with a square on a real (interior) lesion
    gt = real_masks[2]
    r = 3
    sq = np.ones((2 * r + 1, 2 * r + 1), bool)
    expected = ndi.binary_dilation(gt, sq) & ~ndi.binary_erosion(gt, sq, border_value=1)
    got = boundary_band(torch.from_numpy(gt)[None], r)[0].numpy()
    np.testing.assert_array_equal(got, expected)
    # volumes too
    v = torch.zeros(1, 9, 9, 9, dtype=torch.bool)
    v[0, 3:6, 3:6, 3:6] = True
    assert int(boundary_band(v, 1).sum()) == 5**3 - 1


def test_pairwise_dice_matches_metric_and_empty_pairs_are_one(real_masks):
    gt = real_masks[0]
    masks = np.stack([gt, ndi.binary_erosion(gt, iterations=5), np.roll(gt, 7, axis=1),
                      np.zeros_like(gt), np.zeros_like(gt)])
    d = pairwise_dice(torch.from_numpy(masks)[None])[0]
    assert d.shape == (5, 5)
    for i in range(5):
        for j in range(5):
            assert d[i, j].item() == pytest.approx(dice(masks[i], masks[j]), abs=1e-6)
    assert d[3, 4].item() == 1.0 and d[0, 3].item() == 0.0


def test_image_scores_rank_the_more_disagreeing_set_higher(real_masks):
    rng = np.random.default_rng(5)
    gt = real_masks[4]

    def sample_set(max_px: int) -> np.ndarray:
        out = []
        for j in range(8):
            r = int(rng.integers(0, max_px + 1))
            m = ndi.binary_dilation(gt, iterations=r) if j % 2 and r else gt
            m = ndi.binary_erosion(m, iterations=r) if not j % 2 and r else m
            shift = tuple(int(v) for v in rng.integers(-max_px, max_px + 1, 2))
            out.append(np.roll(m, shift, axis=(0, 1)))
        return np.where(np.stack(out), 0.9, -0.9).astype(np.float32)

    calm, wild = sample_set(1), sample_set(8)
    x = torch.from_numpy(np.stack([calm, wild]))  # (2, 8, H, W)
    scores = image_scores(x, band_px=5)
    for key in ("boundary_entropy", "sample_disagreement", "mean_entropy", "mean_variance"):
        assert scores[key].shape == (2,) and scores[key].dtype == torch.float32
        assert scores[key][1] > scores[key][0], key
    # each image scored independently: same values one at a time
    one = image_scores(x[1:], band_px=5)
    for key, v in one.items():
        torch.testing.assert_close(v[0], scores[key][1])
    # boundary entropy by hand on the calm set: mean entropy map over the band
    from napari_lesion_diffkd.core.ensemble.fusion import fuse_samples

    cons = fuse_samples(x[:1], "mean").consensus
    band = boundary_band(cons, 5)
    ent = entropy_of_mean(x[:1])
    assert scores["boundary_entropy"][0].item() == pytest.approx(
        float(ent[band].mean()), rel=1e-5
    )


def test_image_scores_degenerate_cases():
    same = torch.ones(1, 4, 10, 10) * -1  # all samples empty
    s = image_scores(same)
    assert s["sample_disagreement"].item() == 0.0  # empty vs empty: Dice 1
    assert s["boundary_entropy"].item() == 0.0  # no consensus boundary: empty band
    assert s["mean_entropy"].item() == 0.0
    single = image_scores(torch.rand(2, 1, 8, 8) * 2 - 1)
    assert torch.equal(single["sample_disagreement"], torch.zeros(2))
    cons = torch.zeros(1, 10, 10, dtype=torch.bool)
    with pytest.raises(ValueError):
        image_scores(same, consensus=cons[:, :5])
