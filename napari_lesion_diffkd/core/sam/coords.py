"""The one place where prompt coordinates change frame: napari <-> SAM <-> SAM model input.

Frames (all in pixels of the 2D image, no physical spacing):

* **napari data frame**: points are rows ``(..., row, col)``; the last two columns are the
  image's (Y, X) axes, any leading columns index slices of an nD stack (e.g. ``(z, row,
  col)``). Pixel ``[r, c]`` is centred on the integer coordinate ``(r, c)``. Rectangle shapes
  are (4, D) vertex arrays in the same frame (napari also accepts the 2 opposite corners).
  Callers convert napari *world* coordinates (layer scale/translate) to the image layer's
  data frame first (``layer.world_to_data``).
* **SAM image frame**: points ``(x, y)`` = ``(col, row)``; boxes ``(x0, y0, x1, y1)`` (XYXY,
  x0 <= x1, y0 <= y1). SAM also puts pixel ``[y, x]`` at the integer coordinate (its prompt
  encoder adds 0.5 to reach the pixel centre), so napari -> SAM is a pure axis swap.
* **model-input frame**: the image frame scaled by ``ResizeLongestSide``: longest side ->
  S (``img_size``), x scaled by ``W'/W`` and y by ``H'/H`` with ``(H', W') =
  longest_side_shape(H, W, S)``; the rest of the S x S input is padding.

Rotated napari rectangles are reduced to the axis-aligned box around their vertices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_2d(data: np.ndarray | Sequence, name: str, min_cols: int = 2) -> np.ndarray:
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] < min_cols:
        raise ValueError(f"{name}: expected an (N, D >= {min_cols}) array, got shape {arr.shape}")
    return arr


# ------------------------------------------------------------------------------ points


def napari_points_to_xy(points: np.ndarray | Sequence) -> np.ndarray:
    """napari points (N, D) ``(..., row, col)`` -> SAM points (N, 2) float64 ``(x, y)``."""
    arr = _as_2d(points, "points")
    return np.ascontiguousarray(arr[:, [-1, -2]])


def xy_to_napari_points(xy: np.ndarray | Sequence, leading: Sequence[float] = ()) -> np.ndarray:
    """SAM points (N, 2) ``(x, y)`` -> napari points (N, len(leading) + 2) ``(..., row, col)``.

    Args:
        leading: slice coordinates to prepend (e.g. ``(z,)`` for a 3D stack).
    """
    arr = _as_2d(xy, "xy")
    lead = np.broadcast_to(np.asarray(leading, dtype=np.float64), (len(arr), len(leading)))
    return np.concatenate([lead, arr[:, [1, 0]]], axis=1)


def points_on_slice(points: np.ndarray | Sequence, leading: Sequence[float],
                    tol: float = 0.5) -> np.ndarray:
    """Bool (N,) selecting nD napari points whose leading coordinates lie on a slice.

    Args:
        points: (N, D) napari points. leading: the slice's D - 2 leading coordinates.
        tol: a point is on the slice when every leading coordinate is within ``tol``.
    """
    arr = _as_2d(points, "points")
    lead = np.asarray(leading, dtype=np.float64)
    if arr.shape[1] - 2 != lead.size:
        raise ValueError(f"points have {arr.shape[1] - 2} leading axes, slice has {lead.size}")
    if lead.size == 0:
        return np.ones(len(arr), dtype=bool)
    return np.all(np.abs(arr[:, :-2] - lead) <= tol, axis=1)


# ------------------------------------------------------------------------------- boxes


def napari_rectangle_to_xyxy(vertices: np.ndarray | Sequence) -> np.ndarray:
    """napari rectangle vertices (4 or 2, D) ``(..., row, col)`` -> SAM box (4,) XYXY."""
    arr = _as_2d(vertices, "rectangle")
    rows, cols = arr[:, -2], arr[:, -1]
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64)


def xyxy_to_napari_rectangle(box: np.ndarray | Sequence,
                             leading: Sequence[float] = ()) -> np.ndarray:
    """SAM box (4,) XYXY -> napari rectangle vertices (4, len(leading) + 2).

    Vertex order: top-left, top-right, bottom-right, bottom-left, as ``(..., row, col)``.
    """
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    corners_xy = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return xy_to_napari_points(corners_xy, leading)


def clip_xyxy(box: np.ndarray | Sequence, shape: Sequence[int]) -> np.ndarray:
    """Clip an XYXY box to an image of shape (Y, X, ...): x in [0, X-1], y in [0, Y-1]."""
    b = np.asarray(box, dtype=np.float64).reshape(4).copy()
    b[[0, 2]] = np.clip(b[[0, 2]], 0, shape[1] - 1)
    b[[1, 3]] = np.clip(b[[1, 3]], 0, shape[0] - 1)
    return b


def box_region(box: np.ndarray | Sequence, image_hw: Sequence[int],
               points_xy: np.ndarray | None = None) -> np.ndarray:
    """(Y, X) bool: the pixels a box prompt allows, for clipping a box-prompted mask.

    A box says "the lesion is in here", so a pixel whose centre lies outside the XYXY box
    (inclusive, with half a pixel of tolerance) cannot be lesion. Positive clicks outside the
    box widen the region to the bounding box of box and clicks, so a click never contradicts
    the clip. Coordinates are the SAM image frame (pixel ``[y, x]`` at integer ``(x, y)``).
    """
    b = np.asarray(box, dtype=np.float64).reshape(4)
    x0, x1 = min(b[0], b[2]), max(b[0], b[2])
    y0, y1 = min(b[1], b[3]), max(b[1], b[3])
    if points_xy is not None and len(points_xy):
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        x0, x1 = min(x0, pts[:, 0].min()), max(x1, pts[:, 0].max())
        y0, y1 = min(y0, pts[:, 1].min()), max(y1, pts[:, 1].max())
    height, width = int(image_hw[0]), int(image_hw[1])
    region = np.zeros((height, width), dtype=bool)
    c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.floor(x1 + 0.5)), width - 1)
    r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.floor(y1 + 0.5)), height - 1)
    if c0 <= c1 and r0 <= r1:
        region[r0:r1 + 1, c0:c1 + 1] = True
    return region


def mask_to_xyxy(mask: np.ndarray) -> np.ndarray | None:
    """Tight XYXY box of a (Y, X) mask's nonzero pixels (inclusive indices), None if empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    if ys.size == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


# ------------------------------------------------------------------ model-input frame


def longest_side_shape(height: int, width: int, target: int) -> tuple[int, int]:
    """(H', W') after resizing the longest side to ``target`` (rounded half up, as SAM)."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def xy_to_input_frame(xy: np.ndarray | Sequence, image_hw: Sequence[int],
                      target: int) -> np.ndarray:
    """Image-frame ``(x, y)`` points (..., 2) -> model-input frame (same shape, float64)."""
    arr = np.asarray(xy, dtype=np.float64)
    new_h, new_w = longest_side_shape(int(image_hw[0]), int(image_hw[1]), target)
    out = arr.copy()
    out[..., 0] *= new_w / image_hw[1]
    out[..., 1] *= new_h / image_hw[0]
    return out


def input_frame_to_xy(xy: np.ndarray | Sequence, image_hw: Sequence[int],
                      target: int) -> np.ndarray:
    """Inverse of :func:`xy_to_input_frame`."""
    arr = np.asarray(xy, dtype=np.float64)
    new_h, new_w = longest_side_shape(int(image_hw[0]), int(image_hw[1]), target)
    out = arr.copy()
    out[..., 0] *= image_hw[1] / new_w
    out[..., 1] *= image_hw[0] / new_h
    return out


def xyxy_to_input_frame(box: np.ndarray | Sequence, image_hw: Sequence[int],
                        target: int) -> np.ndarray:
    """Image-frame XYXY box(es) (..., 4) -> model-input frame (same shape)."""
    arr = np.asarray(box, dtype=np.float64)
    return xy_to_input_frame(arr.reshape(*arr.shape[:-1], 2, 2), image_hw,
                             target).reshape(arr.shape)
