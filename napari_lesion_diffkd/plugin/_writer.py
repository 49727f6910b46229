"""npe2 single-layer writer contributions for label layers: PNG mask and NIfTI labels.

Both follow npe2's single-layer writer signature ``(path, data, meta) -> list[str]`` and
return the one path written. They delegate to the atomic writers of
:mod:`napari_lesion_diffkd.core.data.writers`.

Errors: invalid input (a 3D label layer saved as PNG, negative labels, a wrong affine ...)
raises ``ValueError`` with a message that says what to do; napari shows it to the user and
nothing is written (the writers are atomic, an existing file is left untouched). Raising is
deliberate: returning ``[]`` would make napari report a vague "no writer" failure.

Path suffixes: if ``path`` lacks the writer's suffix it is appended (``.png`` /
``.nii.gz``), so "Save as ... mask" without an extension still gives a usable file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.data.readers import path_suffix
from napari_lesion_diffkd.core.data.writers import write_labels_nifti as _write_nifti
from napari_lesion_diffkd.core.data.writers import write_mask_png


def write_labels_png(path: str, data: Any, meta: dict) -> list[str]:
    """Save a 2D label layer as a {0, 255} uint8 PNG mask (255 where label > 0).

    Args:
        path: Destination; ``.png`` is appended when missing.
        data: The layer data, ``(Y, X)`` integer labels (or ``(1, Y, X)``).
        meta: The layer's attributes (unused; spacing cannot be stored in a PNG).

    Returns:
        ``[path_written]``.

    Raises:
        ValueError: The layer is not 2D (save volumes as NIfTI) or has invalid labels.
    """
    if path_suffix(path) != ".png":
        path = f"{path}.png"
    written = write_mask_png(path, _layer_array(data, meta))
    return [os.fspath(written)]


def write_labels_nifti(path: str, data: Any, meta: dict) -> list[str]:
    """Save a label layer as NIfTI labels (uint8 / uint16) with the layer's voxel size.

    The layer's ``scale`` is used as spacing (mm, napari axis order = our ``(z, y, x)``).
    When the layer metadata carries a NIfTI ``affine`` (labels made from an image opened
    with this plugin) and its voxel size matches ``scale``, that affine is written, so the
    labels share the source volume's world placement.

    Args:
        path: Destination; ``.nii.gz`` is appended unless it ends in ``.nii``/``.nii.gz``.
        data: ``(Z, Y, X)`` or ``(Y, X)`` integer labels.
        meta: The layer's attributes (``scale``, ``metadata``).

    Returns:
        ``[path_written]``.

    Raises:
        ValueError: Wrong dimensionality or invalid labels.
    """
    if path_suffix(path) not in (".nii", ".nii.gz"):
        path = f"{path}.nii.gz"
    arr = _layer_array(data, meta)
    spacing = meta.get("scale")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != arr.ndim:
            spacing = None
    affine = _matching_affine((meta.get("metadata") or {}).get("affine"), spacing, arr.ndim)
    if affine is not None:
        written = _write_nifti(path, arr, affine=affine)
    else:
        written = _write_nifti(path, arr, spacing=spacing)
    return [os.fspath(written)]


def _layer_array(data: Any, meta: dict) -> np.ndarray:
    if meta.get("multiscale"):
        data = data[0]  # full resolution level
    return np.asarray(data)


def _matching_affine(affine: Any, spacing: tuple[float, ...] | None, ndim: int):
    """The metadata affine if it is a 4x4 whose voxel size agrees with ``spacing``."""
    if affine is None:
        return None
    aff = np.asarray(affine, dtype=float)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        return None
    zooms_zyx = np.linalg.norm(aff[:3, :ndim], axis=0)[::-1]
    if spacing is not None and not np.allclose(zooms_zyx, spacing, rtol=1e-4, atol=1e-6):
        return None  # the user rescaled the layer: its scale wins
    return aff
