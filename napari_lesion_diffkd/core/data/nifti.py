"""NIfTI-1/2 volumes (``.nii``, ``.nii.gz``) with nibabel, and the axis convention we use.

Axis convention (the writer :func:`.writers.write_labels_nifti` is its exact inverse)
    nibabel returns the voxel array in NIfTI's on-disk ``(i, j, k)`` order. We do **not**
    reorient (no ``as_closest_canonical``); we only reverse the axes::

        data_zyx = nib_array.transpose(2, 1, 0)      # (i, j, k) -> (Z, Y, X) = (k, j, i)
        spacing  = (zoom_k, zoom_j, zoom_i)          # = header zooms reversed, in mm

    so ``data_zyx[z, y, x] == nib_array[x, y, z]``: ``X`` is NIfTI ``i``, ``Y`` is ``j`` and
    ``Z`` is ``k``. A 2D NIfTI (header ``dim[0] == 2``, array ``(i, j)``) gives
    ``(Y, X) = nib_array.T`` with spacing ``(zoom_j, zoom_i)``; a 3D file with one slice
    ``(i, j, 1)`` stays a ``(1, Y, X)`` volume so that write -> read is exact. 4D files are
    accepted only when every axis after the third has length 1.

    Why no reorientation: a label map drawn on the loaded array and written back with the
    same affine lands on exactly the source file's voxel grid, which is what segmentation
    tools (and the source image) expect. The price is that the on-screen orientation is the
    file's storage orientation. Everything needed to reorient is in the metadata:

    * ``metadata["affine"]``: nibabel's 4x4 ``img.affine`` (sform if set, else qform), mapping
      ``(i, j, k, 1)`` to RAS+ world mm. Pass this to ``write_labels_nifti(affine=...)``.
    * ``metadata["affine_zyx"]``: the same map for our ``(z, y, x, 1)`` indices.
    * ``metadata["axcodes"]``: world direction of increasing ``(z, y, x)``, e.g.
      ``("S", "A", "R")`` for a canonical RAS file.

Values
    The header's ``scl_slope`` / ``scl_inter`` are applied by nibabel; unscaled integer data
    keep their dtype (CT stored as int16 HU stays int16); float64 becomes float32. Spacing is
    converted to mm when ``xyzt_units`` says metres or microns (the affine is left as stored)
    and is rounded to the shortest decimal of its float32 header value (0.7, not
    0.699999988). ``modality`` is None: NIfTI does not record it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_lesion_diffkd.core.data.limits import check_pixel_count
from napari_lesion_diffkd.core.data.readers import ImageReadError, LoadedImage

# NIfTI spatial units -> factor to millimetres ('unknown' is taken as mm, the usual default).
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}


def clean_float32(value: float) -> float:
    """The shortest decimal that round-trips ``value`` as float32 (0.7, not 0.699999988)."""
    return float(str(np.float32(value)))


def ijk_to_zyx(array: np.ndarray) -> np.ndarray:
    """nibabel ``(i, j[, k])`` array -> our ``(Y, X)`` / ``(Z, Y, X)`` array (a view)."""
    return array.T  # reversing all axes: (i, j, k) -> (k, j, i); (i, j) -> (j, i)


def zyx_to_ijk(array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`ijk_to_zyx`: our ``(Y, X)`` / ``(Z, Y, X)`` -> nibabel order (a view)."""
    return array.T


def _check_header_size(p: Path, shape_ijk: tuple[int, ...]) -> None:
    """Pixel limit on the header's ``(i, j[, k, ...])`` shape: plane ``j x i``, ``k x ...``
    planes (axes past the third count as planes too; they are rejected later unless 1)."""
    if len(shape_ijk) < 2:
        return  # a 0/1-D header: the dimension check below gives the clear message
    planes = 1
    for n in shape_ijk[2:]:
        planes *= n
    check_pixel_count(p, (shape_ijk[1], shape_ijk[0]), planes)


def read_nifti(path: str | os.PathLike) -> LoadedImage:
    """Read a ``.nii`` or ``.nii.gz`` file.

    Args:
        path: The NIfTI file.

    Returns:
        ``(Z, Y, X)`` (or ``(Y, X)`` for 2D files) data with spacing in the same axis order,
        ``rgb=False``, ``modality=None`` and the affine in ``metadata`` (see module docstring).

    Raises:
        ImageReadError: Not NIfTI, truncated / corrupt, RGB, or a real 4D (time) series.
    """
    import nibabel as nib

    p = Path(path)
    try:
        # mmap=False: a real array, and no open handle that would block an atomic replace.
        img = nib.load(p, mmap=False)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            kind = type(img).__name__
            raise ImageReadError(f"{p}: not a NIfTI image (nibabel read it as {kind})")
        _check_header_size(p, tuple(int(n) for n in img.shape))  # before reading any voxel
        raw = np.asanyarray(img.dataobj)
    except ImageReadError:
        raise
    except Exception as exc:  # ImageFileError, gzip/zlib errors, short data ...
        raise ImageReadError(f"{p}: not a valid or a truncated NIfTI file ({exc})") from exc

    if raw.dtype.names is not None:
        raise ImageReadError(f"{p}: RGB/structured NIfTI data ({raw.dtype}) is not supported")
    if raw.ndim > 3:
        extra = raw.shape[3:]
        if any(n != 1 for n in extra):
            raise ImageReadError(
                f"{p}: 4D NIfTI of shape {raw.shape} (time series or vector data) is not "
                "supported; extract one 3D volume first"
            )
        raw = raw.reshape(raw.shape[:3])
    if raw.ndim not in (2, 3):
        raise ImageReadError(f"{p}: NIfTI with {raw.ndim} dimensions is not supported")
    if raw.size == 0:
        raise ImageReadError(f"{p}: the NIfTI image has no voxels (shape {raw.shape})")
    if raw.dtype == np.float64:
        raw = raw.astype(np.float32)

    unit = img.header.get_xyzt_units()[0]
    to_mm = _UNIT_TO_MM.get(unit, 1.0)
    zooms = [clean_float32(z) * to_mm for z in img.header.get_zooms()[: raw.ndim]]
    spacing = tuple(float(z) if z > 0 else 1.0 for z in reversed(zooms))

    affine = np.asarray(img.affine, dtype=np.float64)
    # Column c of the affine is the world step of voxel axis c; reverse the spatial columns.
    n = raw.ndim
    affine_zyx = affine.copy()
    affine_zyx[:3, :n] = affine[:3, :n][:, ::-1]
    axcodes_ijk = nib.aff2axcodes(affine)
    metadata = {
        "affine": affine,
        "affine_zyx": affine_zyx,
        "axcodes": tuple(reversed(axcodes_ijk[:n])),
        "sform_code": int(img.header["sform_code"]),
        "qform_code": int(img.header["qform_code"]),
        "nifti_shape_ijk": tuple(int(s) for s in raw.shape),
        "spatial_unit": unit,
    }
    return LoadedImage(
        data=np.ascontiguousarray(ijk_to_zyx(raw)),
        spacing=spacing,
        rgb=False,
        modality=None,
        source=str(p),
        metadata=metadata,
    )
