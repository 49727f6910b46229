"""Builders of small-on-disk bad inputs: pixel bombs, NaN images, broken bundles, hostile
pickles. Each writes one file (or folder) and returns its path; none takes more than a
fraction of a second or more than ~150 KB of disk."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np


def png_bomb(path: Path, width: int = 12_000, height: int = 12_000) -> Path:
    """A *valid* 8-bit gray PNG of ``width x height`` zeros (12000^2: 144 MP in ~140 KB).

    Written by hand (zlib over zero rows) so that building it never holds the pixels: PIL
    would need the full image in memory to encode it. 12000^2 is above our 100 MP limit but
    below Pillow's own DecompressionBombError (~179 MP), so only our check can stop it.
    """

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0 + one byte per pixel
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def tiff_bomb(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A 16x16 TIFF whose ImageWidth/ImageLength tags were rewritten to claim a huge size
    (a few hundred bytes on disk; tifffile reports the claimed series shape)."""
    import tifffile

    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        page = tif.pages[0]
        page.tags["ImageWidth"].overwrite(width)
        page.tags["ImageLength"].overwrite(height)
    return path


def dicom_bomb(path: Path, rows: int = 30_000, cols: int = 30_000) -> Path:
    """A CT DICOM file that declares ``rows x cols`` 16-bit pixels but stores 16x16."""
    from tests.core.test_dicom import make_ct_dataset

    ds = make_ct_dataset(np.zeros((16, 16), np.int16), position=(0.0, 0.0, 0.0),
                         instance_number=1, series_uid="1.2.3.4", study_uid="1.2.3")
    ds.Rows, ds.Columns = rows, cols
    ds.save_as(path, enforce_file_format=True)
    return path


def nifti_bomb(path: Path, shape: tuple[int, ...] = (20_000, 20_000, 1)) -> Path:
    """A ``.nii`` whose header declares ``shape`` (int16) but holds 16 bytes of data."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4  # 348-byte header + 4-byte extension flag
    path.write_bytes(raw + b"\0" * 16)
    return path


def nan_nifti(path: Path, image: np.ndarray, n_nan: int = 5, value: float = np.nan) -> Path:
    """A 2D float32 NIfTI of a real gray image (Y, X) with ``n_nan`` pixels set to ``value``.

    The NaNs sit in the top-left corner (outside the lesion in the real images used)."""
    import nibabel as nib

    data = np.asarray(image, np.float32).copy()
    data.reshape(-1)[:n_nan] = value
    # Our (Y, X) is nibabel's (j, i): store the transpose (core/data/nifti.py convention).
    nib.save(nib.Nifti1Image(data.T.copy(), np.eye(4)), str(path))
    return path


def nan_tiff(path: Path, image: np.ndarray, n_nan: int = 5, value: float = np.nan) -> Path:
    """A float32 TIFF of a real gray image (Y, X) with ``n_nan`` corner pixels = ``value``."""
    import tifffile

    data = np.asarray(image, np.float32).copy()
    data.reshape(-1)[:n_nan] = value
    tifffile.imwrite(path, data)
    return path


class _Touch:
    """Unpickling calls ``Path.touch(marker)``: proof of code execution if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def hostile_checkpoint(path: Path, marker: Path, keys: tuple[str, ...] = ("model",)) -> Path:
    """A ``torch.save``-style zip checkpoint whose dict holds an object that runs code
    (touches ``marker``) when unpickled; ``torch.load(weights_only=True)`` must refuse it."""
    import torch

    torch.save({k: _Touch(marker) for k in keys}, path)
    return path


def rewrite_weights(bundle: Path, change) -> None:
    """Apply ``change(state) -> state`` to a bundle's safetensors weights in place."""
    from safetensors.torch import load_file, save_file

    weights = bundle / "model.safetensors"
    save_file(change(load_file(str(weights))), str(weights), metadata={"format": "pt"})


def rewrite_config(bundle: Path, change) -> None:
    """Apply ``change(config) -> new JSON value`` to a bundle's config.json in place."""
    path = bundle / "config.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
