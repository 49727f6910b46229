"""The simulated annotator's hands: the standard corrective click and the lesion box.

Frames: masks are (Y, X) bool in the image's pixel frame; a :class:`Click` is in the napari
data frame ``(row, col)`` (what a user's click on the layer gives); boxes are napari
rectangle vertices (4, 2) ``(row, col)``. Conversion to SAM's ``(x, y)`` happens in
``core/sam/coords.py`` only (callers pass these to the correction backend, which converts).

The click rule is the standard one of interactive segmentation (RITM, SAM, micro-sam):
one click at the centre of the largest connected error region, positive where lesion is
missed, negative where background was taken. The "centre" is the point farthest from the
region's boundary (maximum of its distance transform), so it lies inside the region even for
thin or curved slivers; the rule itself is ``core.sam.prompts.largest_error_click``, the one
the SAM benchmarks use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy, xyxy_to_napari_rectangle
from napari_lesion_diffkd.core.sam.prompts import expand_box, largest_error_click

#: A box "around the lesion": its tight bounding box grown by 5% (as the SAM benchmarks).
BOX_EXPAND = 1.05


@dataclass(frozen=True)
class Click:
    """One click in the napari data frame.

    Attributes:
        row, col: pixel indices (int) of the clicked pixel.
        positive: True = "this is lesion" (label 1), False = background (label 0).
    """

    row: int
    col: int
    positive: bool

    @property
    def label(self) -> int:
        """SAM's point label: 1 positive, 0 negative."""
        return int(self.positive)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"expected two (Y, X) masks of one shape, got {p.shape} and {g.shape}")
    return p, g


def standard_click(pred: np.ndarray, gt: np.ndarray) -> Click | None:
    """The standard corrective click for ``pred`` against the oracle ``gt``.

    Args:
        pred: (Y, X) bool, the current mask. gt: (Y, X) bool, the oracle.

    Returns:
        The :class:`Click` at the centre of the largest connected region of ``pred ^ gt``
        (positive if that region is missed lesion), or None when ``pred == gt``.
    """
    p, g = _check_pair(pred, gt)
    found = largest_error_click(p, g)
    if found is None:
        return None
    x, y, label = found
    return Click(row=int(y), col=int(x), positive=bool(label))


def region_click(pred: np.ndarray, gt: np.ndarray, region: np.ndarray,
                 min_pixels: int = 1) -> Click | None:
    """The standard click restricted to a region the app proposed (uncertainty guidance).

    The annotator looks only inside ``region``: the click goes to the centre of the largest
    connected piece of ``(pred ^ gt) & region``, positive or negative per the oracle.

    Args:
        pred, gt, region: (Y, X) bool.
        min_pixels: a piece smaller than this is not worth a click (returns None).

    Returns:
        A :class:`Click`, or None when the region holds no error piece of ``min_pixels``.
    """
    p, g = _check_pair(pred, gt)
    r = np.asarray(region, dtype=bool)
    if r.shape != p.shape:
        raise ValueError(f"region {r.shape} does not match the masks {p.shape}")
    error = (p ^ g) & r
    if not error.any():
        return None
    labels, n = ndi.label(error)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    biggest = int(np.argmax(sizes))
    if sizes[biggest] < max(1, int(min_pixels)):
        return None
    piece = labels == biggest + 1
    # The centre of the piece alone: the same distance-transform rule as standard_click.
    x, y, _ = largest_error_click(np.zeros_like(piece), piece)
    row, col = int(y), int(x)
    return Click(row=row, col=col, positive=bool(g[row, col]))


def lesion_box(gt: np.ndarray, expand: float = BOX_EXPAND) -> np.ndarray:
    """The box an annotator draws around the lesion: napari rectangle (4, 2) ``(row, col)``.

    Args:
        gt: (Y, X) bool oracle, non-empty (all components inside one box).
        expand: width and height factor about the box centre (clipped to the image).

    Raises:
        ValueError: an empty ``gt``.
    """
    g = np.asarray(gt, dtype=bool)
    box = mask_to_xyxy(g)
    if box is None:
        raise ValueError("no lesion in the mask: nothing to draw a box around")
    return xyxy_to_napari_rectangle(expand_box(box, expand, g.shape))
