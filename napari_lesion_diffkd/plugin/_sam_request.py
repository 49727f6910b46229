"""napari prompt layers -> one :class:`._correction.CorrectionRequest` (no Qt).

The correction panel's prompt layers share the image layer's scale and translate, so their
data frame is the image's: points ``(row, col)`` or ``(z, row, col)``, rectangles (4, 2) or
(4, 3) vertices. For a volume only the current slice's prompts count (``coords.
points_on_slice``); SAM takes one box, so the last drawn rectangle of the slice wins.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_lesion_diffkd.plugin._correction import CorrectionRequest


def slice_points(points_layer: Any, z: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) ``(row, col)`` clicks and (N,) labels (1 lesion, 0 background) of a points
    layer with a boolean ``positive`` feature, restricted to slice ``z`` of a volume."""
    from napari_lesion_diffkd.core.sam.coords import points_on_slice

    if points_layer is None or not len(points_layer.data):
        return np.zeros((0, 2)), np.zeros(0, int)
    data = np.asarray(points_layer.data, dtype=np.float64)
    labels = np.asarray(points_layer.features["positive"], bool).astype(int)
    if z is not None:
        keep = points_on_slice(data, (z,))
        data, labels = data[keep], labels[keep]
    return data[:, -2:], labels


def slice_box(shapes_layer: Any, z: int | None) -> np.ndarray | None:
    """The last shape's (V, 2) ``(row, col)`` vertices on slice ``z`` (any shape counts by
    its bounding box), or None."""
    from napari_lesion_diffkd.core.sam.coords import points_on_slice

    if shapes_layer is None:
        return None
    for vertices in reversed(list(shapes_layer.data)):
        vertices = np.asarray(vertices, dtype=np.float64)
        if z is None or points_on_slice(vertices, (z,)).all():
            return vertices[:, -2:]
    return None


def build_request(image_layer: Any, base: np.ndarray, points_layer: Any, shapes_layer: Any,
                  z: int | None) -> CorrectionRequest:
    """The request for the image (or slice ``z``) from the prompt layers.

    Args:
        image_layer: napari image layer, (Y, X[, 3]) or (Z, Y, X[, 3]).
        base: the mask the correction started from, the image's spatial shape.
        points_layer, shapes_layer: the prompt layers (None when absent).
        z: the slice of a volume, None for a 2D image.
    """
    pixels = np.asarray(image_layer.data if z is None else image_layer.data[z])
    start = np.asarray(base if z is None else base[z]) > 0
    points, labels = slice_points(points_layer, z)
    return CorrectionRequest(pixels, start, points, labels, box=slice_box(shapes_layer, z),
                             key=(image_layer.name, z))
