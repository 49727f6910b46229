"""Metrics: agreement with MONAI and SimpleITK on real masks, hand cases, empty masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi
from skimage.io import imread

from napari_lesion_diffkd.core import metrics as M

SPACINGS = [None, (0.7, 0.5)]


def _perturb(rng, gt: np.ndarray) -> np.ndarray:
    """A plausible wrong prediction: dilated or eroded, shifted, plus a stray blob."""
    r = int(rng.integers(1, 4))
    p = ndi.binary_dilation(gt, iterations=r) if rng.random() < 0.5 else ndi.binary_erosion(
        gt, iterations=r
    )
    p = np.roll(p, tuple(int(v) for v in rng.integers(-4, 5, 2)), axis=(0, 1))
    y, x = (int(rng.integers(0, s - 6)) for s in gt.shape)
    p[y : y + 5, x : x + 5] = True
    return p


@pytest.fixture(scope="module")
def mask_pairs(real_masks, data_root) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pred, gt) pairs from four datasets (PH2, BUS-BRA, COVID CT from the fixture; DDTI)."""
    rng = np.random.default_rng(0)
    ddti = sorted((data_root / "ddti_thyroid_ultrasound" / "masks").iterdir())[:2]
    gts = [real_masks[i] for i in (0, 2, 3, 5, 6, 8)] + [imread(p) > 127 for p in ddti]
    return [(_perturb(rng, g), g) for g in gts]


def _monai(pred: np.ndarray, gt: np.ndarray, spacing) -> dict[str, float]:
    from monai.metrics import (
        DiceMetric,
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_iou,
    )

    p = torch.from_numpy(pred)[None, None].float()
    g = torch.from_numpy(gt)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": DiceMetric(include_background=True)(p, g).item(),
            "iou": compute_iou(p, g, include_background=True).item(),
            "hd95": compute_hausdorff_distance(
                p, g, include_background=True, percentile=95, spacing=spacing
            ).item(),
            "hausdorff": compute_hausdorff_distance(
                p, g, include_background=True, spacing=spacing
            ).item(),
            "assd": compute_average_surface_distance(
                p, g, include_background=True, symmetric=True, spacing=spacing
            ).item(),
        }


@pytest.mark.parametrize("spacing", SPACINGS)
def test_agrees_with_monai_on_perturbed_real_masks(mask_pairs, spacing):
    for pred, gt in mask_pairs:
        ours = M.all_metrics(pred, gt, spacing=spacing)
        ref = _monai(pred, gt, spacing)
        assert ours["dice"] == pytest.approx(ref["dice"], abs=1e-6)
        assert ours["iou"] == pytest.approx(ref["iou"], abs=1e-6)
        for key in ("hd95", "assd", "hausdorff"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-3), key
        # single-metric functions give the same numbers as all_metrics
        assert M.hd95(pred, gt, spacing) == ours["hd95"]
        assert M.assd(pred, gt, spacing) == ours["assd"]
        assert M.dice(pred, gt) == ours["dice"]


def test_hausdorff_agrees_with_simpleitk(mask_pairs):
    spacing = (0.7, 0.5)  # (row, col); SimpleITK wants (x, y)
    for pred, gt in mask_pairs:
        a = sitk.GetImageFromArray(pred.astype(np.uint8))
        b = sitk.GetImageFromArray(gt.astype(np.uint8))
        a.SetSpacing(spacing[::-1])
        b.SetSpacing(spacing[::-1])
        f = sitk.HausdorffDistanceImageFilter()
        f.Execute(a, b)
        assert M.hausdorff(pred, gt, spacing) == pytest.approx(f.GetHausdorffDistance(), abs=1e-3)


def test_overlap_metrics_by_hand():
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True  # 16 px
    pred = np.zeros_like(gt)
    pred[4:8, 2:6] = True  # 16 px, 8 overlap
    assert M.dice(pred, gt) == 0.5
    assert M.iou(pred, gt) == pytest.approx(8 / 24)
    assert M.sensitivity(pred, gt) == 0.5
    assert M.specificity(pred, gt) == pytest.approx(76 / 84)
    assert M.accuracy(pred, gt) == pytest.approx(84 / 100)
    # torch input and {0, 255} uint8 are accepted
    assert M.dice(torch.from_numpy(pred), (gt * 255).astype(np.uint8)) == 0.5


def test_surface_distances_by_hand_with_anisotropic_spacing():
    gt = np.zeros((20, 20), bool)
    gt[5:10, 5:10] = True
    pred = np.roll(gt, 3, axis=0)  # shifted 3 rows down
    assert M.hausdorff(pred, gt) == 3.0
    assert M.hausdorff(pred, gt, spacing=(2.0, 1.0)) == 6.0
    assert M.hausdorff(np.roll(gt, 3, axis=1), gt, spacing=(2.0, 1.0)) == 3.0
    assert M.hd95(gt, gt) == 0.0 and M.assd(gt, gt) == 0.0
    # surface = mask minus its cross erosion: a 5x5 square has 16 boundary pixels
    assert int(M.surface_pixels(gt).sum()) == 16
    # a lesion touching the image border has its border pixels on the surface
    edge = np.zeros((6, 6), bool)
    edge[:, :3] = True
    assert M.surface_pixels(edge)[:, 0].all()
    with pytest.raises(ValueError):
        M.hd95(pred, gt, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        M.dice(pred, gt[:10])


def test_empty_masks():
    empty = np.zeros((8, 8), bool)
    full = np.zeros((8, 8), bool)
    full[2:5, 2:5] = True
    both = M.all_metrics(empty, empty)
    assert both["dice"] == 1.0 and both["iou"] == 1.0
    assert both["hd95"] == 0.0 and both["assd"] == 0.0 and both["hausdorff"] == 0.0
    assert both["sensitivity"] == 1.0 and both["specificity"] == 1.0
    one = M.all_metrics(empty, full)
    assert one["dice"] == 0.0 and one["sensitivity"] == 0.0
    assert math.isinf(one["hd95"]) and math.isinf(one["assd"]) and math.isinf(one["hausdorff"])
    assert math.isinf(M.all_metrics(full, empty)["hd95"])
    d_pg, d_gp = M.surface_distances(full, empty)
    assert d_pg.size == 8 and np.isinf(d_pg).all() and d_gp.size == 0


def test_volume_agrees_with_monai():
    rng = np.random.default_rng(3)
    gt = ndi.gaussian_filter(rng.random((12, 40, 40)), 3) > 0.5
    pred = np.roll(ndi.binary_dilation(gt), 1, axis=0)
    spacing = (2.5, 0.7, 0.5)
    ours = M.all_metrics(pred, gt, spacing)
    ref = _monai(pred, gt, spacing)
    for key in ("dice", "iou"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-6)
    for key in ("hd95", "assd", "hausdorff"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-3)
    assert list(ours)[: len(M.METRIC_NAMES)] == list(M.METRIC_NAMES)
