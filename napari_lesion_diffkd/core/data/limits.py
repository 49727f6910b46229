"""The pixel limit every image reader checks before it decodes pixel data.

Why: a few-hundred-kilobyte PNG or TIFF can declare 20,000 x 20,000 pixels (a constant image
compresses to almost nothing). Decoding it, then converting it to float and resizing K
sample maps back to it, drove ``predict`` to ~14 GB before the allocator gave up. Every
reader therefore reads the *declared* shape from the header (Pillow's lazy ``open``,
tifffile's page shapes, DICOM Rows/Columns/NumberOfFrames, the NIfTI header) and refuses it
here before any pixel is decoded.

Two numbers, both set by one environment variable:

* ``LESION_DIFFKD_MAX_PIXELS`` (default 100,000,000): the most pixels in one 2D plane
  (``Y * X``; the colour channels of an RGB pixel count as one pixel).
* a volume (``Z, Y, X``) may hold at most ``VOLUME_FACTOR`` (10) times as many voxels in
  total, so an ordinary 512 x 512 x 400 CT is fine while a header claiming 10^11 voxels is not.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from napari_lesion_diffkd.core.data.readers import ImageReadError

MAX_PIXELS_ENV_VAR = "LESION_DIFFKD_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000
VOLUME_FACTOR = 10


class PixelLimitError(ImageReadError):
    """The file declares more pixels than the limit allows (raised before decoding)."""


def max_pixels() -> int:
    """The per-plane pixel limit: ``$LESION_DIFFKD_MAX_PIXELS`` or 100 megapixels.

    Raises:
        ValueError: the variable is set but is not a positive integer (a typo must not
            silently lift or zero the limit).
    """
    raw = os.environ.get(MAX_PIXELS_ENV_VAR, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw)) if "e" in raw.lower() else int(raw)
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV_VAR}={raw!r} is not a whole number of pixels") from None
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV_VAR} must be >= 1, got {value}")
    return value


def check_pixel_count(source: object, plane: Sequence[int], planes: int = 1) -> None:
    """Refuse an image whose declared size is over the limit.

    Args:
        source: the path (or a name) for the message.
        plane: the declared 2D size ``(Y, X)`` (any length-2 sequence of ints).
        planes: number of such planes (``Z`` of a volume, frames of a multi-frame file).

    Raises:
        PixelLimitError: ``Y * X`` is over :func:`max_pixels`, or ``planes * Y * X`` is
            over ``VOLUME_FACTOR`` times that. A negative size is also refused.
    """
    dims = [int(d) for d in plane] + [int(planes)]
    if any(d < 0 for d in dims):
        raise PixelLimitError(f"{source}: the header declares a negative size {tuple(dims)}")
    try:
        limit = max_pixels()
    except ValueError as exc:  # a bad setting must read as such, not as a corrupt file
        raise PixelLimitError(f"{source}: cannot check the image size: {exc}") from None
    per_plane = math.prod(int(d) for d in plane)
    shape = "x".join(str(int(d)) for d in plane)
    if per_plane > limit:
        raise PixelLimitError(
            f"{source}: image of {shape} pixels ({per_plane / 1e6:.1f} megapixels) is over the "
            f"limit of {limit / 1e6:g} megapixels; raise {MAX_PIXELS_ENV_VAR} if it is genuine"
        )
    total = per_plane * int(planes)
    if total > limit * VOLUME_FACTOR:
        raise PixelLimitError(
            f"{source}: volume of {int(planes)} x {shape} voxels ({total / 1e6:.1f} million) is "
            f"over the limit of {limit * VOLUME_FACTOR / 1e6:g} million voxels "
            f"({VOLUME_FACTOR} x {MAX_PIXELS_ENV_VAR}); raise that variable if it is genuine"
        )
