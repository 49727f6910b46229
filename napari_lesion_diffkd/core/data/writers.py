"""Write masks and label maps: 2D PNG masks and NIfTI label volumes, atomically.

Atomic writes
    Every writer encodes into a temporary file created *in the destination folder* (same
    file system, so the final :func:`os.replace` is an atomic rename), flushes and fsyncs it,
    then replaces the destination. If encoding fails or the process dies, the destination
    either keeps its previous content or does not exist; on an exception the temporary file
    is removed. Parent folders are created. New files get the usual ``0o666 & ~umask``
    permissions (``mkstemp`` would give 0600).

Axis convention
    :func:`write_labels_nifti` is the exact inverse of :func:`.nifti.read_nifti`: our
    ``(Z, Y, X)`` array is written as NIfTI ``(i, j, k) = (X, Y, Z)`` (``array.transpose(2,
    1, 0)``), ``(Y, X)`` as a 2D NIfTI ``(i, j) = (X, Y)``.
"""

from __future__ import annotations

import errno
import gzip
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from napari_lesion_diffkd.core.data.nifti import zyx_to_ijk
from napari_lesion_diffkd.core.data.readers import path_suffix


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Create or replace ``path`` atomically with what ``write(fileobj)`` writes.

    Args:
        path: Destination file. Its parent folders are created.
        write: Called once with a binary file object open on a temporary file in the same
            folder; it must write the complete content. Any exception it raises propagates
            after the temporary file is deleted, leaving ``path`` untouched.

    Returns:
        The destination as a :class:`~pathlib.Path`.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _open_temp(dest)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object (never half-written)."""
    return atomic_write(path, lambda fh: fh.write(data))


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _open_temp(dest: Path) -> tuple[Path, int]:
    # os.open with mode 0o666 lets the OS apply the umask (unlike tempfile.mkstemp's 0600),
    # without the thread-unsafe os.umask() dance. Hidden name so file browsers ignore it.
    for _ in range(100):
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, _TEMP_FLAGS, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not create a unique temporary file", str(dest))


# --------------------------------------------------------------------------- PNG masks


def write_mask_png(path: str | os.PathLike, mask: np.ndarray, *, binary: bool = True) -> Path:
    """Save a 2D mask or label image as an 8-bit PNG, atomically.

    Args:
        path: Destination ``.png`` file (written as PNG whatever the suffix).
        mask: ``(Y, X)`` bool or integer (or integer-valued float) array. A ``(1, Y, X)``
            array is accepted as one slice.
        binary: True (default): write a {0, 255} uint8 mask, 255 where ``mask > 0``, the
            format of the dataset masks. False: write the label values themselves (uint8
            when all labels <= 255, else 16-bit PNG).

    Returns:
        The path written.

    Raises:
        ValueError: ``mask`` is not 2D (e.g. a volume; use :func:`write_labels_nifti`), is
            empty, has negative / non-integer labels, or labels above 65535.
    """
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(
            f"write_mask_png needs a 2D (Y, X) mask, got shape {arr.shape}; save volumes with "
            "write_labels_nifti"
        )
    if arr.size == 0:
        raise ValueError(f"write_mask_png got an empty mask of shape {arr.shape}")
    if binary:
        out = np.where(arr > 0, np.uint8(255), np.uint8(0))
    else:
        out = _as_label_dtype(arr, "write_mask_png")

    from PIL import Image

    image = Image.fromarray(out)

    def _write(fh: BinaryIO) -> None:
        image.save(fh, format="PNG")

    return atomic_write(path, _write)


# --------------------------------------------------------------------------- NIfTI labels


def write_labels_nifti(
    path: str | os.PathLike,
    labels: np.ndarray,
    spacing: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Save a label map as NIfTI (``.nii`` or gzip-compressed ``.nii.gz``), atomically.

    Args:
        path: Destination; must end in ``.nii`` or ``.nii.gz``.
        labels: ``(Z, Y, X)`` or ``(Y, X)`` bool / non-negative integer labels (integer-
            valued floats accepted). Stored as uint8 when the maximum is <= 255, else uint16.
        spacing: Voxel size in mm in the *array's* axis order ``(dz, dy, dx)`` / ``(dy, dx)``
            (e.g. :attr:`LoadedImage.spacing`). Used to build a diagonal affine when
            ``affine`` is None; 1.0 per axis if both are None.
        affine: 4x4 voxel-to-world matrix in **nibabel's (i, j, k) convention**, e.g.
            ``LoadedImage.metadata["affine"]`` of the image the labels belong to. Written as
            both sform and qform (code 1, scanner). If ``spacing`` is given too it must agree
            with the affine's column lengths.

    Returns:
        The path written.

    Raises:
        ValueError: Wrong suffix, wrong number of dimensions, bad label values, a malformed
            affine, or ``spacing`` that contradicts ``affine``.
    """
    import nibabel as nib

    suffix = path_suffix(path)
    if suffix not in (".nii", ".nii.gz"):
        raise ValueError(f"write_labels_nifti: {path} must end in .nii or .nii.gz")
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"write_labels_nifti needs (Z, Y, X) or (Y, X) labels, got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"write_labels_nifti got empty labels of shape {arr.shape}")
    out = _as_label_dtype(arr, "write_labels_nifti")
    n = arr.ndim

    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != n or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(
                f"write_labels_nifti: spacing {spacing} must be {n} positive numbers for "
                f"labels of shape {arr.shape}"
            )
    if affine is not None:
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
            raise ValueError(
                f"write_labels_nifti: affine must be a finite 4x4 matrix, got shape {aff.shape}"
            )
        if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise ValueError("write_labels_nifti: affine is singular")
        if spacing is not None:
            zooms_zyx = tuple(np.linalg.norm(aff[:3, :n], axis=0)[::-1])
            if not np.allclose(zooms_zyx, spacing, rtol=1e-4, atol=1e-6):
                raise ValueError(
                    f"write_labels_nifti: spacing {spacing} disagrees with the affine's voxel "
                    f"size {tuple(round(z, 6) for z in zooms_zyx)} (both in (z, y, x) order)"
                )
    else:
        aff = np.eye(4)
        if spacing is not None:
            aff[np.arange(n), np.arange(n)] = spacing[::-1]  # (z, y, x) -> (i, j, k) = (x, y, z)

    img = nib.Nifti1Image(np.ascontiguousarray(zyx_to_ijk(out)), aff)
    img.set_sform(aff, code="scanner")
    img.set_qform(aff, code="scanner")
    img.header.set_xyzt_units(xyz="mm")
    payload = img.to_bytes()

    def _write(fh: BinaryIO) -> None:
        if suffix == ".nii.gz":
            # mtime=0: identical labels give identical files (reproducible outputs).
            with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
                gz.write(payload)
        else:
            fh.write(payload)

    return atomic_write(path, _write)


def _as_label_dtype(arr: np.ndarray, who: str) -> np.ndarray:
    """Labels as uint8 (max <= 255) or uint16; bool -> {0, 1}."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{who}: labels must be bool or integer, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{who}: float labels must be whole numbers (got dtype {arr.dtype})")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ValueError(f"{who}: labels must be >= 0, found {lo}")
    if hi > np.iinfo(np.uint16).max:
        raise ValueError(f"{who}: labels above 65535 are not supported (max {hi})")
    return arr.astype(np.uint8 if hi <= 255 else np.uint16)


__all__ = ["atomic_write", "write_labels_nifti", "write_mask_png"]
