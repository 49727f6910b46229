"""CT display windows (window level / width presets) in Hounsfield units.

A window ``(center, width)`` maps HU values to display intensity: values below
``center - width / 2`` are black, values above ``center + width / 2`` white, linear between.
These functions only make sense for data in HU (DICOM CT after rescale); the 8-bit CT PNG
slices in the shared data are *not* HU.
"""

from __future__ import annotations

import numpy as np

# name -> (center, width) in HU. Standard radiology presets, as tabulated in
# Radiopaedia's "Windowing (CT)" article (https://radiopaedia.org/articles/windowing-ct):
#   lung W1500 L-600, bone W1800 L400, liver W150 L30.
# soft_tissue uses the common PACS "soft tissue / abdomen" preset W400 L40 (Radiopaedia lists
# W400 L50 for abdominal soft tissue and W350 L50 for the mediastinum; the 10 HU difference
# is within the usual range of vendor presets).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "liver": (30.0, 150.0),
}

#: The window the napari reader uses for CT layers whose file has no window of its own
#: (lung: the datasets' CT lesions are lung infections; the user guide says so).
DEFAULT_CT_WINDOW = "lung"

#: The name of "the DICOM file's own window" (WindowCenter / WindowWidth) among the presets.
FILE_WINDOW = "file"


def file_window(metadata: dict | None) -> tuple[float, float] | None:
    """``(low, high)`` HU of the file's own window (``window_center`` / ``window_width``
    in a reader's metadata), or None when it has none."""
    meta = metadata or {}
    try:
        center, width = float(meta["window_center"]), float(meta["window_width"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        return None
    return center - width / 2.0, center + width / 2.0


def _lookup(name: str) -> tuple[float, float]:
    try:
        return CT_WINDOWS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(CT_WINDOWS))
        raise ValueError(f"unknown CT window {name!r}; valid names: {valid}") from None


def window_limits(name: str) -> tuple[float, float]:
    """HU range ``(low, high) = (center - width/2, center + width/2)`` of a named window.

    Args:
        name: One of :data:`CT_WINDOWS` (``"lung"``, ``"soft_tissue"``, ``"bone"``,
            ``"liver"``).

    Returns:
        ``(low, high)`` in HU, e.g. ``(-160.0, 240.0)`` for ``"soft_tissue"``.

    Raises:
        ValueError: ``name`` is not a known window (the message lists the valid names).
    """
    center, width = _lookup(name)
    return center - width / 2.0, center + width / 2.0


def apply_window(data: np.ndarray, name: str) -> np.ndarray:
    """Map HU values through a named window to display intensities.

    Args:
        data: Any-shaped array of HU values (e.g. ``(Z, Y, X)`` float32 or int16).
        name: A key of :data:`CT_WINDOWS`.

    Returns:
        float32 array of the same shape with values in ``[0, 1]``: 0 at or below the
        window's low end, 1 at or above its high end.

    Raises:
        ValueError: Unknown window name.
    """
    low, high = window_limits(name)
    out = (np.asarray(data, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out)
