"""Files inside a project folder: content hashes, atomic array and label files, read-back.

Every file the store writes goes through :func:`core.data.writers.atomic_write` (temporary
file in the same folder, fsync, ``os.replace``), under a fresh unique name: an indexed file
is never rewritten, so a crash can at worst leave an unreferenced file behind (reported and
removed by :meth:`ProjectStore.check` / ``cleanup``), never a damaged referenced one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

import numpy as np

from napari_lesion_diffkd.core.data.writers import atomic_write, write_labels_nifti, write_mask_png

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes; of a folder (DICOM series): of its sorted file names
    and contents (hidden files skipped)."""
    p = Path(path)
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")) \
        if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(f.relative_to(p).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def unique_name(prefix: str = "") -> str:
    """A fresh file-name stem: 16 random hex digits (no clash between processes)."""
    return f"{prefix}{secrets.token_hex(8)}"


def label_suffix(ndim: int) -> str:
    """``.png`` for (Y, X) labels, ``.nii.gz`` for (Z, Y, X) volumes."""
    return ".png" if ndim == 2 else ".nii.gz"


def write_label_file(path: Path, labels: np.ndarray, spacing: tuple[float, ...]) -> None:
    """Write label ids atomically: (Y, X) as 8/16-bit PNG of the values themselves,
    (Z, Y, X) as NIfTI with ``spacing`` (mm, (dz, dy, dx))."""
    if labels.ndim == 2:
        write_mask_png(path, labels, binary=False)
    else:
        write_labels_nifti(path, labels, spacing=spacing)


def read_label_file(path: Path) -> np.ndarray:
    """Label ids as written by :func:`write_label_file`: (Y, X) or (Z, Y, X), uint8/uint16,
    writable (a label opened in the app is painted on; the PNG reader's array is not)."""
    from napari_lesion_diffkd.core.data.readers import read_image

    data = read_image(path).data
    if data.dtype not in (np.uint8, np.uint16):
        return data.astype(np.uint16)
    return data if data.flags.writeable else data.copy()


def write_array(path: Path, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically (no pickle)."""

    def _write(fh: BinaryIO) -> None:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    atomic_write(path, _write)


def read_array(path: Path) -> np.ndarray:
    """Load an array written by :func:`write_array` (``allow_pickle=False``)."""
    array: np.ndarray = np.load(path, allow_pickle=False)
    return array

