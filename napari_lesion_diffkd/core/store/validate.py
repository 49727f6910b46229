"""Checks run before the store writes anything: readable images, well-formed label masks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_lesion_diffkd.core.store.errors import InvalidInputError
from napari_lesion_diffkd.core.store.files import sha256_file

#: Largest label id a mask may hold (16-bit PNG / uint16 NIfTI).
MAX_LABEL = 65535


@dataclass(frozen=True)
class ImageInfo:
    """What the store records about an image file.

    Attributes:
        path: the resolved path of the file (or DICOM series folder).
        sha256: hex digest of its bytes (see :func:`files.sha256_file`).
        shape: spatial shape, ``(Y, X)`` or ``(Z, Y, X)``.
        channels: 3 for RGB, 1 otherwise.
        spacing: mm per spatial axis, same order as ``shape``.
        modality: the caller's modality, else the file's (DICOM), else None.
    """

    path: Path
    sha256: str
    shape: tuple[int, ...]
    channels: int
    spacing: tuple[float, ...]
    modality: str | None


def inspect_image(path: str | os.PathLike, modality: str | None = None) -> ImageInfo:
    """Read an image fully (so a corrupt file is caught now) and describe it.

    Raises:
        InvalidInputError: missing, empty, corrupt or unsupported file.
    """
    from napari_lesion_diffkd.core.data.readers import ImageReadError, read_image

    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise InvalidInputError(f"{p}: image file not found")
    try:
        loaded = read_image(p)
    except ImageReadError as exc:
        raise InvalidInputError(f"corrupt or unreadable image: {exc}") from exc
    shape = loaded.data.shape[:-1] if loaded.rgb else loaded.data.shape
    return ImageInfo(path=p, sha256=sha256_file(p), shape=tuple(int(s) for s in shape),
                     channels=3 if loaded.rgb else 1,
                     spacing=tuple(float(s) for s in loaded.spacing),
                     modality=modality or loaded.modality)


def check_labels(labels: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Validate a label mask for an image of spatial ``shape``; return it as uint8/uint16.

    Args:
        labels: ``(Y, X)`` or ``(Z, Y, X)`` bool or non-negative integer label ids
            (0 = background). Floats are refused, even whole-valued ones: a probability
            map passed by mistake must not become a label.
        shape: the image's spatial shape.
        what: names the mask in error messages (e.g. ``"mask for IMD002"``).

    Raises:
        InvalidInputError: wrong shape, dtype or values.
    """
    arr = np.asarray(labels)
    if tuple(arr.shape) != tuple(shape):
        raise InvalidInputError(
            f"{what}: shape {tuple(arr.shape)} does not match the image's {tuple(shape)}")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise InvalidInputError(
            f"{what}: labels must be bool or integer ids, got dtype {arr.dtype} "
            "(threshold probabilities before saving them as a label)")
    if arr.size and arr.min() < 0:
        raise InvalidInputError(f"{what}: label ids must be >= 0, found {arr.min()}")
    top = int(arr.max()) if arr.size else 0
    if top > MAX_LABEL:
        raise InvalidInputError(f"{what}: label ids above {MAX_LABEL} are not supported "
                                f"(found {top})")
    return arr.astype(np.uint8 if top <= 255 else np.uint16)


def read_mask_file(path: str | os.PathLike, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Read a dataset mask (PNG {0, 255} or label ids, or NIfTI) as label ids for ``shape``.

    A mask whose values are exactly {0, 255} or {255} (the datasets' binary format) becomes
    {0, 1}; other values are kept as label ids.

    Raises:
        InvalidInputError: missing, unreadable, RGB, or failing :func:`check_labels`.
    """
    from napari_lesion_diffkd.core.data.readers import ImageReadError, read_image

    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{what}: mask file {p} not found")
    try:
        loaded = read_image(p)
    except ImageReadError as exc:
        raise InvalidInputError(f"{what}: corrupt or unreadable mask: {exc}") from exc
    data = loaded.data
    if loaded.rgb:
        raise InvalidInputError(f"{what}: {p} is an RGB image, not a mask (expected gray "
                                "{0, 255} or label ids)")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise InvalidInputError(f"{what}: {p} holds non-integer values")
        data = data.astype(np.int64)
    values = np.unique(data)
    if values.size and set(values.tolist()) <= {0, 255}:
        data = (data > 0).astype(np.uint8)
    return check_labels(data, shape, what)
