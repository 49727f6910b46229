"""Non-finite pixels (NaN, +Inf, -Inf): the documented fill, instead of a silent empty mask.

Float images (NIfTI, float TIFF, DICOM float pixel data) can carry NaN outside a scan's
field of view or Inf from a bad conversion. One NaN reaches every output pixel through the
network's convolutions and normalisations, so the model used to return an empty consensus
without any error. The rule applied everywhere a model sees an image:

* non-finite pixels are replaced by the image's **finite minimum** (the background value in
  CT / MR / ultrasound: the fill then reads as "nothing there", never as lesion);
* the count is returned so that callers can warn (``predict`` puts it in its JSON line);
* an image with no finite pixel at all is an error: there is nothing to segment.
"""

from __future__ import annotations

import numpy as np


class NonFiniteImageError(ValueError):
    """Every pixel of the image is NaN or infinite."""


def fill_nonfinite(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN/Inf pixels with the finite minimum of the image.

    Args:
        image: any-shape numeric array, e.g. (Y, X) or (Y, X, 3); integer and bool arrays
            cannot hold NaN and are returned as they are (no copy).

    Returns:
        ``(image, n_filled)``: the same array when every pixel is finite, else a filled copy
        of the same shape and dtype; ``n_filled`` counts the array *elements* replaced
        (an RGB pixel with one NaN channel counts 1).

    Raises:
        NonFiniteImageError: no element is finite.
    """
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating) and not np.issubdtype(
            image.dtype, np.complexfloating):
        return image, 0
    bad = ~np.isfinite(image)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return image, 0
    if n_bad == image.size:
        raise NonFiniteImageError(
            f"every pixel of the image is NaN or infinite ({image.size} values); nothing to "
            "segment")
    out = image.copy()
    out[bad] = np.min(image[~bad])
    return out, n_bad


def nonfinite_warning(n_filled: int, n_total: int) -> str:
    """The one-line warning text for ``n_filled`` replaced values out of ``n_total``."""
    return (f"{n_filled} of {n_total} pixel values were NaN or infinite and were replaced by "
            "the image's finite minimum")
