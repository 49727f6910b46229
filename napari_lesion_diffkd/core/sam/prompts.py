"""Simulated prompts from a ground-truth mask: boxes, clicks and degraded masks.

Used by training (random, from a ``numpy.random.Generator``) and by evaluation
(deterministic variants). Masks are (Y, X) bool arrays; clicks are ``(x, y, label)`` with
label 1 = positive (lesion) and 0 = negative; boxes are (4,) float64 XYXY in the same pixel
frame (see ``coords.py``).

Click placement follows what an annotator does: click in the middle of what is wrong. The
"middle" of a region is the maximum of its distance transform (the point farthest from the
region's edge), which for thin slivers still lies inside the sliver.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_lesion_diffkd.core.sam.coords import clip_xyxy, mask_to_xyxy

Click = tuple[float, float, int]


def equivalent_radius(mask: np.ndarray) -> float:
    """Radius of the disc with the mask's area, in pixels."""
    return float(np.sqrt(np.count_nonzero(mask) / np.pi))


def erode_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels farther than ``radius`` from the background (Euclidean erosion)."""
    m = np.asarray(mask, dtype=bool)
    if radius <= 0 or not m.any():
        return m.copy()
    return ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1] > radius


def dilate_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within ``radius`` of the mask (Euclidean dilation)."""
    m = np.asarray(mask, dtype=bool)
    if radius <= 0 or not m.any():
        return m.copy()
    return ndi.distance_transform_edt(~m) <= radius


def shift_mask(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate a mask by (dy, dx) pixels; what leaves the image is lost, the rest is 0."""
    m = np.asarray(mask, dtype=bool)
    out = np.zeros_like(m)
    h, w = m.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = m[ys, xs]
    return out


def bad_mask(mask: np.ndarray, mode: str, strength: float) -> np.ndarray:
    """Deterministic degradation for evaluation.

    Args:
        mode: ``"erode"`` (radius ``strength`` x equivalent radius), ``"dilate"`` (same) or
            ``"shift"`` (by ``strength`` x the box height and width, down and right).
    """
    if mode in ("erode", "dilate"):
        r = strength * equivalent_radius(mask)
        return erode_mask(mask, r) if mode == "erode" else dilate_mask(mask, r)
    if mode == "shift":
        box = mask_to_xyxy(mask)
        if box is None:
            return np.asarray(mask, dtype=bool).copy()
        dy = int(round(strength * (box[3] - box[1] + 1)))
        dx = int(round(strength * (box[2] - box[0] + 1)))
        return shift_mask(mask, dy, dx)
    raise ValueError(f"unknown degradation {mode!r} (erode, dilate, shift)")


def random_bad_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random degradation: erosion, dilation (5-35% of the equivalent radius), a shift
    (5-25% of the box size, random direction) or a shift plus erosion/dilation."""
    m = np.asarray(mask, dtype=bool)
    kind = rng.choice(["erode", "dilate", "shift", "shift+morph"])
    out = m
    if kind in ("shift", "shift+morph"):
        box = mask_to_xyxy(m)
        if box is not None:
            fy, fx = rng.uniform(0.05, 0.25, size=2) * rng.choice([-1, 1], size=2)
            out = shift_mask(out, int(round(fy * (box[3] - box[1] + 1))),
                             int(round(fx * (box[2] - box[0] + 1))))
    if kind != "shift":
        r = rng.uniform(0.05, 0.35) * equivalent_radius(m)
        grow = kind == "dilate" or (kind == "shift+morph" and rng.random() < 0.5)
        out = dilate_mask(out, r) if grow else erode_mask(out, r)
    return out


def expand_box(box: np.ndarray, factor: float, shape: tuple[int, ...]) -> np.ndarray:
    """Scale an XYXY box about its centre (width and height x ``factor``), clipped."""
    b = np.asarray(box, dtype=np.float64)
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    hw, hh = (b[2] - b[0]) * factor / 2, (b[3] - b[1]) * factor / 2
    return clip_xyxy([cx - hw, cy - hh, cx + hw, cy + hh], shape)


def jitter_box(box: np.ndarray, rng: np.random.Generator, shape: tuple[int, ...],
               low: float = 0.05, high: float = 0.10) -> np.ndarray:
    """Move each side of an XYXY box in or out by a random 5-10% of the box's size
    (``low``-``high``, random sign per side), clipped and kept at least 1 px wide."""
    b = np.asarray(box, dtype=np.float64).copy()
    w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
    mags = rng.uniform(low, high, size=4) * rng.choice([-1.0, 1.0], size=4)
    b += mags * np.array([w, h, w, h]) * np.array([-1, -1, 1, 1])  # + = outward
    b = clip_xyxy(b, shape)
    if b[2] - b[0] < 1:
        b[2] = min(b[0] + 1, shape[1] - 1)
    if b[3] - b[1] < 1:
        b[3] = min(b[1] + 1, shape[0] - 1)
    return b


def _interior_point(region: np.ndarray) -> tuple[int, int]:
    """(y, x) of the distance-transform maximum of a non-empty bool region.

    Elongated regions have a ridge of equal maxima; the one nearest the region's centroid
    is taken (the middle of the ridge, not its first pixel in raster order).
    """
    dist = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    ridge = np.argwhere(dist >= dist.max() - 1e-6)
    centroid = np.argwhere(region).mean(axis=0)
    y, x = ridge[int(np.argmin(((ridge - centroid) ** 2).sum(axis=1)))]
    return int(y), int(x)


def largest_error_click(pred: np.ndarray, gt: np.ndarray,
                        positive_only: bool = False) -> Click | None:
    """One corrective click at the centre of the largest connected error region.

    Args:
        pred, gt: (Y, X) bool masks.
        positive_only: consider only missed lesion (gt & ~pred), i.e. a positive click.

    Returns:
        ``(x, y, label)``: label 1 if the region is missed lesion, 0 if it is a false
        positive; None when there is no error of the asked kind.
    """
    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    error = (g & ~p) if positive_only else (g ^ p)
    if not error.any():
        return None
    labels, n = ndi.label(error)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    region = labels == (int(np.argmax(sizes)) + 1)
    y, x = _interior_point(region)
    return float(x), float(y), int(g[y, x])


def _sample_weighted(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """(y, x) drawn with probability proportional to the distance to the region's edge."""
    if not region.any():
        return None
    dist = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1].ravel()
    total = dist.sum()
    idx = int(rng.choice(dist.size, p=dist / total))
    y, x = np.unravel_index(idx, region.shape)
    return int(y), int(x)


def sample_error_click(pred: np.ndarray, gt: np.ndarray,
                       rng: np.random.Generator) -> Click | None:
    """A random corrective click in the error region (interior pixels favoured); label 1
    inside the lesion (missed), 0 outside (false positive). None if there is no error."""
    g = np.asarray(gt, dtype=bool)
    yx = _sample_weighted(np.asarray(pred, dtype=bool) ^ g, rng)
    if yx is None:
        return None
    return float(yx[1]), float(yx[0]), int(g[yx])


def sample_positive_click(gt: np.ndarray, rng: np.random.Generator) -> Click | None:
    """A positive click inside the lesion (interior favoured), None if the mask is empty."""
    yx = _sample_weighted(np.asarray(gt, dtype=bool), rng)
    return None if yx is None else (float(yx[1]), float(yx[0]), 1)


def sample_negative_click(gt: np.ndarray, rng: np.random.Generator,
                          margin: float = 0.3) -> Click | None:
    """A negative click on background near the lesion (inside its box grown by ``margin``)."""
    g = np.asarray(gt, dtype=bool)
    box = mask_to_xyxy(g)
    if box is None:
        return None
    b = expand_box(box, 1.0 + 2 * margin, g.shape).round().astype(int)
    near = np.zeros_like(g)
    near[b[1]:b[3] + 1, b[0]:b[2] + 1] = True
    candidates = np.flatnonzero(near & ~g)
    if candidates.size == 0:
        candidates = np.flatnonzero(~g)
        if candidates.size == 0:
            return None
    y, x = np.unravel_index(int(rng.choice(candidates)), g.shape)
    return float(x), float(y), 0
