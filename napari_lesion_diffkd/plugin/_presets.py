"""Modality presets: which model a modality starts with and how its images are displayed.

No Qt here. A preset only *proposes*: the widget applies the display settings to the image
layer the user picked (contrast limits from a CT window, layer scale from the stored pixel
spacing) and selects the preset's default model in the picker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_lesion_diffkd.plugin._catalog import normalise_modality


@dataclass(frozen=True)
class Preset:
    """Display and model defaults of one modality.

    Attributes:
        modality: ``dermoscopy`` | ``ultrasound`` | ``ct``.
        ct_window: default CT window name (:data:`core.data.windows.CT_WINDOWS`), CT only.
    """

    modality: str
    ct_window: str | None = None


PRESETS: dict[str, Preset] = {
    "dermoscopy": Preset("dermoscopy"),
    "ultrasound": Preset("ultrasound"),
    # Lesions in the CT data are lung infections: the lung window shows them; the reader's
    # own default (soft tissue) is kept for volumes opened outside the app.
    "ct": Preset("ct", ct_window="lung"),
}


def detect_modality(metadata: Mapping[str, Any] | None, rgb: bool,
                    data: Any = None) -> str | None:
    """The modality of an image layer (:func:`guess_modality`'s answer), None if unknown.

    Without ``data`` only the metadata and the colour flag count (RGB -> dermoscopy)."""
    if data is None:
        found = normalise_modality((metadata or {}).get("modality"))
        if found is not None:
            return found
        return "dermoscopy" if rgb else None
    return guess_modality(data, metadata, rgb).modality


def guess_modality(data: Any, metadata: Mapping[str, Any] | None, rgb: bool) -> Any:
    """:class:`core.data.modality.ModalityGuess` of an image layer's pixels and metadata
    (DICOM tag, the project's setting, HU range, content; a gray PNG is not CT by
    default)."""
    from napari_lesion_diffkd.core.data.modality import detect_modality as detect

    return detect(data, metadata, rgb=rgb)


def looks_like_hu(data: Any, metadata: Mapping[str, Any] | None = None) -> bool:
    """True when the pixels are Hounsfield units (a CT window then makes sense).

    The 8-bit CT PNG slices in the shared data are *not* HU (``core.data.windows``): a
    window would turn them black. HU data holds air near -1000, so a minimum below -500 on
    a strided subsample (cheap even for a large volume) tells them apart.
    """
    if (metadata or {}).get("ct_window"):
        return True  # the plugin reader marks HU CT layers
    arr = np.asarray(data)
    if arr.dtype.kind not in "fi" or arr.size == 0:
        return False
    step = max(1, int(round((arr.size / 250_000) ** (1 / max(arr.ndim, 1)))))
    sub = arr[tuple(slice(None, None, step) for _ in range(arr.ndim))]
    return bool(sub.min() < -500)


def window_contrast(name: str, metadata: Mapping[str, Any] | None = None
                    ) -> tuple[float, float]:
    """Contrast limits (HU) of a named CT window (``lung``, ``soft_tissue``, ..., or
    ``file``: the DICOM file's own window, from the layer's ``metadata``)."""
    from napari_lesion_diffkd.core.data.windows import FILE_WINDOW, file_window, window_limits

    if name == FILE_WINDOW:
        own = file_window(dict(metadata or {}))
        if own is None:
            raise ValueError("this image has no window of its own")
        return own
    return window_limits(name)


def ct_window_names(metadata: Mapping[str, Any] | None = None) -> list[str]:
    """The CT window presets, in the order of :data:`core.data.windows.CT_WINDOWS`, with
    ``file`` (the DICOM file's own window) first when the layer's ``metadata`` has one."""
    from napari_lesion_diffkd.core.data.windows import CT_WINDOWS, FILE_WINDOW, file_window

    own = file_window(dict(metadata or {})) is not None
    return ([FILE_WINDOW] if own else []) + list(CT_WINDOWS)


def spacing_scale(metadata: Mapping[str, Any] | None,
                  ndim_spatial: int) -> tuple[float, ...] | None:
    """The stored pixel spacing (mm per axis, napari (Z,) Y, X order) if it fits the layer."""
    spacing = (metadata or {}).get("spacing")
    if spacing is None or len(spacing) != ndim_spatial:
        return None
    values = tuple(float(s) for s in spacing)
    return values if all(v > 0 for v in values) else None
