"""One entry point to read any supported image or volume: :func:`read_image`.

The format modules (:mod:`.images`, :mod:`.dicom`, :mod:`.nifti`) all return a
:class:`LoadedImage` and report every failure as :class:`ImageReadError`, so callers (the
CLI, the napari reader, training datasets) need to handle exactly one exception type.

Dispatch rules of :func:`read_image`:

* a directory -> a DICOM series folder (:func:`.dicom.read_dicom_series`);
* ``.nii`` / ``.nii.gz`` -> NIfTI (:func:`.nifti.read_nifti`);
* ``.dcm`` / ``.dicom`` / ``.ima``, or any file whose bytes 128..131 are ``b"DICM"`` (DICOM
  files often have no suffix at all) -> a single DICOM file (:func:`.dicom.read_dicom_file`);
* ``.png`` ``.jpg`` ``.jpeg`` ``.bmp`` ``.tif`` ``.tiff`` -> :func:`.images.read_2d_image`.

Suffixes are matched case-insensitively. Array conventions of :class:`LoadedImage`:

* ``(Y, X)`` gray, any dtype the file stores (uint8, uint16, int16, float32 ...);
* ``(Y, X, 3)`` uint8 (or uint16 for 16-bit RGB TIFF) RGB, ``rgb=True``;
* ``(Z, Y, X)`` volume (DICOM series, multi-frame DICOM, multi-page TIFF, NIfTI).

Row ``Y`` is the image row (top to bottom as stored), ``X`` the column, ``Z`` the slice.
``spacing`` is in millimetres, one value per spatial axis in the same order as the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Plain 2D raster formats, read with Pillow (tifffile for TIFF).
SUPPORTED_2D_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Suffixes that mark a single DICOM file (files without a suffix are sniffed instead).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
#: NIfTI-1/2 single-file formats. ``.nii.gz`` is a double suffix: use :func:`path_suffix`.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
#: Every suffix :func:`read_image` accepts for a file.
SUPPORTED_SUFFIXES: tuple[str, ...] = SUPPORTED_2D_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES

#: How many directory entries :func:`is_supported` sniffs before giving up on a folder.
_MAX_SNIFF = 64


class ImageReadError(ValueError):
    """A file or folder could not be read as an image.

    The message always names the path and says what is wrong (missing, empty, corrupt,
    unsupported format, inconsistent series ...).
    """


@dataclass
class LoadedImage:
    """An image or volume in memory, with its physical pixel size.

    Attributes:
        data: ``(Y, X)`` gray, ``(Y, X, 3)`` RGB (``rgb=True``) or ``(Z, Y, X)`` volume.
            DICOM CT is in Hounsfield units (float32, rescale slope/intercept applied).
        spacing: Pixel size in mm per *spatial* axis, in the data's axis order: ``(dy, dx)``
            or ``(dz, dy, dx)``. 1.0 where the file gives no physical size (PNG, JPEG ...).
        rgb: True when the last axis of ``data`` holds the three colour channels.
        modality: DICOM Modality (``"CT"``, ``"US"``, ``"MR"`` ...); None when unknown.
        source: The path that was read, as a string.
        metadata: Format-specific extras, e.g. ``window_center``/``window_width`` and
            ``series_instance_uid`` (DICOM) or ``affine``/``axcodes`` (NIfTI).
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    rgb: bool
    modality: str | None
    source: str
    metadata: dict = field(default_factory=dict)

    @property
    def ndim_spatial(self) -> int:
        """Number of spatial axes: 2 for ``(Y, X)`` and ``(Y, X, 3)``, 3 for ``(Z, Y, X)``."""
        return self.data.ndim - 1 if self.rgb else self.data.ndim


def path_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix of ``path``, treating ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def output_stem(path: str | os.PathLike) -> str:
    """``case.nii.gz`` -> ``case``; ``img.png`` -> ``img``."""
    path = Path(path)
    suffix = path_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.stem


def has_dicom_magic(path: str | os.PathLike) -> bool:
    """True if ``path`` is a file with the DICOM Part 10 marker ``b"DICM"`` at byte 128.

    Reads 132 bytes only; any OS error counts as "not DICOM".
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_supported(path: str | os.PathLike) -> bool:
    """Cheap check whether :func:`read_image` will try to read ``path`` (no full read).

    Files are judged by suffix (or by the DICOM marker when there is no known suffix);
    a directory is supported when it holds at least one DICOM file among its first
    entries. A True answer does not guarantee the file is intact.

    Args:
        path: A file or directory.

    Returns:
        Whether ``path`` looks like something :func:`read_image` handles.
    """
    p = Path(path)
    if p.is_dir():
        return _folder_has_dicom(p)
    if path_suffix(p) in SUPPORTED_SUFFIXES:
        return True
    return p.is_file() and has_dicom_magic(p)


def _folder_has_dicom(folder: Path) -> bool:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return False
    checked = 0
    for entry in entries:
        if not entry.is_file() or entry.name.startswith("."):
            continue
        if path_suffix(entry.name) in DICOM_SUFFIXES:
            return True
        # Only files without a known suffix can be suffix-less DICOM: don't sniff PNGs.
        if path_suffix(entry.name) not in SUPPORTED_SUFFIXES and has_dicom_magic(entry.path):
            return True
        checked += 1
        if checked >= _MAX_SNIFF:
            break
    return False


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read an image file, a DICOM series folder or a NIfTI volume.

    Args:
        path: File or directory; see the module docstring for the dispatch rules.

    Returns:
        The pixels with spacing, modality and metadata (see :class:`LoadedImage`).

    Raises:
        ImageReadError: For a missing, empty, corrupt or unsupported path. No other
            exception type escapes (unexpected errors are wrapped with the path).
    """
    p = Path(path)
    try:
        return _dispatch(p)
    except ImageReadError:
        raise
    except Exception as exc:  # a decoder bug or odd file must not crash callers
        raise ImageReadError(f"{p}: could not be read ({type(exc).__name__}: {exc})") from exc


def _dispatch(p: Path) -> LoadedImage:
    if not p.exists():
        raise ImageReadError(f"{p}: no such file or directory")
    if p.is_dir():
        from napari_lesion_diffkd.core.data.dicom import read_dicom_series

        return read_dicom_series(p)
    if not p.is_file():
        raise ImageReadError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: the file is empty (0 bytes)")
    suffix = path_suffix(p)
    if suffix in NIFTI_SUFFIXES:
        from napari_lesion_diffkd.core.data.nifti import read_nifti

        return read_nifti(p)
    if suffix in DICOM_SUFFIXES or (suffix not in SUPPORTED_2D_SUFFIXES and has_dicom_magic(p)):
        from napari_lesion_diffkd.core.data.dicom import read_dicom_file

        return read_dicom_file(p)
    if suffix in SUPPORTED_2D_SUFFIXES:
        from napari_lesion_diffkd.core.data.images import read_2d_image

        return read_2d_image(p)
    raise ImageReadError(
        f"{p}: unsupported file type {suffix or '(no suffix)'!r}; supported: "
        f"{', '.join(SUPPORTED_SUFFIXES)}, DICOM files without suffix, and DICOM series folders"
    )
