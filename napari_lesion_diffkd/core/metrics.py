"""Segmentation metrics for binary masks, following MONAI's conventions.

Masks are numpy arrays or torch tensors of shape (Y, X) or (Z, Y, X) (any nonzero value
is foreground); ``spacing`` gives the physical size of a pixel along each array axis in
the same order (e.g. (row_mm, col_mm)), as MONAI's ``spacing=`` and scipy's
``sampling=``. Note: SimpleITK's ``Image.SetSpacing`` takes the reverse (x, y[, z]) order.

Overlap metrics count pixels: ``dice = 2|P∩G| / (|P| + |G|)``, ``iou = |P∩G| / |P∪G|``,
``sensitivity = TP / (TP + FN)``, ``specificity = TN / (TN + FP)``,
``accuracy = (TP + TN) / n``.

Surface distances (MONAI ``compute_hausdorff_distance`` / ``compute_average_surface_
distance`` with the default ``use_subvoxels=False``): a mask's surface is its boundary
pixels, ``mask & ~binary_erosion(mask)`` with scipy's default structuring element — the
cross (face connectivity: 4-neighbourhood in 2-D, 6 in 3-D) — and everything outside the
array counted as background, so lesion pixels on the image border are surface pixels.
For each surface pixel the exact Euclidean distance (``distance_transform_edt`` with
``sampling=spacing``) to the nearest surface pixel of the other mask is taken, giving two
directed distance sets d(P→G) and d(G→P). Then:

* ``hausdorff`` = max(max d(P→G), max d(G→P));
* ``hd95`` = max(percentile95 d(P→G), percentile95 d(G→P)) — MONAI's
  ``percentile=95``: the 95th percentile of *each* directed set (linear interpolation,
  as ``torch.quantile`` / ``np.percentile``), then the larger of the two; not the
  percentile of the pooled distances;
* ``assd`` = mean of the pooled distances, (Σ d(P→G) + Σ d(G→P)) / (|∂P| + |∂G|) —
  MONAI's ``symmetric=True``.

Empty masks (documented choices; MONAI returns NaN where both are empty):

* both empty: dice = iou = 1, sensitivity = specificity = accuracy = 1, distances 0
  (perfect agreement).
* exactly one empty: dice = iou = 0; hausdorff, hd95 and assd are ``inf`` (as MONAI).
* sensitivity with no lesion in ``gt`` is 1.0 (vacuous: nothing to miss), specificity
  with no background in ``gt`` is 1.0; MONAI's confusion-matrix metrics give NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

__all__ = [
    "METRIC_NAMES",
    "accuracy",
    "all_metrics",
    "assd",
    "dice",
    "hausdorff",
    "hd95",
    "iou",
    "sensitivity",
    "specificity",
    "surface_distances",
    "surface_pixels",
]

#: Keys of :func:`all_metrics`, in CSV column order.
METRIC_NAMES: tuple[str, ...] = (
    "dice",
    "iou",
    "sensitivity",
    "specificity",
    "accuracy",
    "hd95",
    "assd",
)

ArrayLike = np.ndarray | torch.Tensor


def _as_mask(x: ArrayLike) -> np.ndarray:
    """Bool numpy view/copy of a mask: nonzero = foreground."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x if x.dtype == np.bool_ else x != 0


def _pair(pred: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_mask(pred), _as_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"masks must be (Y, X) or (Z, Y, X), got shape {p.shape}")
    return p, g


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        return (float(spacing),) * ndim
    s = tuple(float(v) for v in spacing)  # type: ignore[union-attr]
    if len(s) != ndim:
        raise ValueError(f"spacing needs {ndim} values (one per array axis), got {s}")
    if any(v <= 0 for v in s):
        raise ValueError(f"spacing must be positive, got {s}")
    return s


def _confusion(p: np.ndarray, g: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) pixel counts."""
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    tn = p.size - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(num: float, den: float, if_zero: float) -> float:
    return float(num) / float(den) if den > 0 else if_zero


def dice(pred: ArrayLike, gt: ArrayLike) -> float:
    """Dice coefficient 2|P∩G| / (|P| + |G|); 1.0 when both masks are empty."""
    tp, fp, fn, _ = _confusion(*_pair(pred, gt))
    return _ratio(2 * tp, 2 * tp + fp + fn, 1.0)


def iou(pred: ArrayLike, gt: ArrayLike) -> float:
    """Intersection over union |P∩G| / |P∪G|; 1.0 when both masks are empty."""
    tp, fp, fn, _ = _confusion(*_pair(pred, gt))
    return _ratio(tp, tp + fp + fn, 1.0)


def sensitivity(pred: ArrayLike, gt: ArrayLike) -> float:
    """Recall TP / (TP + FN); 1.0 when ``gt`` has no lesion pixel."""
    tp, _, fn, _ = _confusion(*_pair(pred, gt))
    return _ratio(tp, tp + fn, 1.0)


def specificity(pred: ArrayLike, gt: ArrayLike) -> float:
    """TN / (TN + FP); 1.0 when ``gt`` has no background pixel."""
    _, fp, _, tn = _confusion(*_pair(pred, gt))
    return _ratio(tn, tn + fp, 1.0)


def accuracy(pred: ArrayLike, gt: ArrayLike) -> float:
    """Pixel accuracy (TP + TN) / n."""
    tp, fp, fn, tn = _confusion(*_pair(pred, gt))
    return _ratio(tp + tn, tp + fp + fn + tn, 1.0)


def surface_pixels(mask: ArrayLike) -> np.ndarray:
    """Boundary pixels ``mask & ~erosion(mask)`` with the cross structuring element.

    Args:
        mask: (Y, X) or (Z, Y, X) binary mask.

    Returns:
        bool array of the same shape (outside the array counts as background, so lesion
        pixels on the border are boundary pixels; MONAI ``get_mask_edges``).
    """
    m = _as_mask(mask)
    cross = ndi.generate_binary_structure(m.ndim, 1)  # scipy's (and MONAI's) default
    return m & ~ndi.binary_erosion(m, structure=cross, border_value=0)


def surface_distances(
    pred: ArrayLike, gt: ArrayLike, spacing: float | Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances d(P→G) and d(G→P).

    Args:
        pred, gt: (Y, X) or (Z, Y, X) binary masks of equal shape.
        spacing: pixel size per array axis (same units as the result), default 1.

    Returns:
        Two float64 1-D arrays: for every surface pixel of ``pred`` (resp. ``gt``) the
        Euclidean distance to the nearest surface pixel of the other mask. If that other
        mask is empty the distances are ``inf``; an empty mask has no surface pixels
        (empty array).
    """
    p, g = _pair(pred, gt)
    sp = _spacing(spacing, p.ndim)
    ep, eg = surface_pixels(p), surface_pixels(g)
    if not ep.any() or not eg.any():
        return np.full(np.count_nonzero(ep), np.inf), np.full(np.count_nonzero(eg), np.inf)
    # Every nearest neighbour lies inside the bounding box of both surfaces, so the
    # distance transforms can run on that crop only (much smaller for small lesions).
    both = ep | eg
    box = tuple(
        slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(both)
    )
    ep, eg = ep[box], eg[box]
    to_gt = ndi.distance_transform_edt(~eg, sampling=sp)
    to_pred = ndi.distance_transform_edt(~ep, sampling=sp)
    return to_gt[ep], to_pred[eg]


def _distance_summary(
    d_pg: np.ndarray, d_gp: np.ndarray, percentile: float | None
) -> float:
    if d_pg.size == 0 and d_gp.size == 0:  # both masks empty: perfect agreement
        return 0.0
    if d_pg.size == 0 or d_gp.size == 0:  # one mask empty
        return float("inf")
    if percentile is None:
        return float(max(d_pg.max(), d_gp.max()))
    return float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


def hausdorff(
    pred: ArrayLike, gt: ArrayLike, spacing: float | Sequence[float] | None = None
) -> float:
    """Symmetric Hausdorff distance between the surfaces (MONAI, ``percentile=None``).

    0.0 when both masks are empty, ``inf`` when exactly one is.
    """
    return _distance_summary(*surface_distances(pred, gt, spacing), None)


def hd95(
    pred: ArrayLike,
    gt: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    percentile: float = 95.0,
) -> float:
    """Max over both directions of the 95th-percentile surface distance (MONAI).

    0.0 when both masks are empty, ``inf`` when exactly one is.
    """
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
    return _distance_summary(*surface_distances(pred, gt, spacing), percentile)


def assd(
    pred: ArrayLike, gt: ArrayLike, spacing: float | Sequence[float] | None = None
) -> float:
    """Average symmetric surface distance: mean of both directed distance sets pooled.

    Matches MONAI ``compute_average_surface_distance(symmetric=True)``. 0.0 when both
    masks are empty, ``inf`` when exactly one is.
    """
    d_pg, d_gp = surface_distances(pred, gt, spacing)
    return _assd(d_pg, d_gp)


def _assd(d_pg: np.ndarray, d_gp: np.ndarray) -> float:
    if d_pg.size == 0 and d_gp.size == 0:
        return 0.0
    if d_pg.size == 0 or d_gp.size == 0:
        return float("inf")
    return float((d_pg.sum() + d_gp.sum()) / (d_pg.size + d_gp.size))


def all_metrics(
    pred: ArrayLike, gt: ArrayLike, spacing: float | Sequence[float] | None = None
) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` plus ``hausdorff``, sharing one distance pass.

    Args:
        pred, gt: (Y, X) or (Z, Y, X) binary masks (numpy or torch), same shape.
        spacing: pixel size per array axis, default 1 (distances then in pixels).

    Returns:
        dict name -> float, keys in :data:`METRIC_NAMES` order then ``"hausdorff"``.
    """
    p, g = _pair(pred, gt)
    tp, fp, fn, tn = _confusion(p, g)
    d_pg, d_gp = surface_distances(p, g, spacing)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "sensitivity": _ratio(tp, tp + fn, 1.0),
        "specificity": _ratio(tn, tn + fp, 1.0),
        "accuracy": _ratio(tp + tn, p.size, 1.0),
        "hd95": _distance_summary(d_pg, d_gp, 95.0),
        "assd": _assd(d_pg, d_gp),
        "hausdorff": _distance_summary(d_pg, d_gp, None),
    }
