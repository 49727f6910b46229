"""Which modality an image is: dermoscopy, ultrasound or CT, with a confidence.

No Qt, no torch: numpy and scipy only, a few milliseconds for a 512 px image (larger images
are strided down to at most :data:`WORK_PIXELS` on the longest side first).

Evidence, strongest first (:func:`detect_modality`):

1. **Metadata.** A DICOM ``Modality`` tag (``CT``, ``US``, ``XC`` ...) or the modality the
   project recorded for the image (the user's "import as" choice) in the layer metadata's
   ``modality``; the project's setting passed as ``project_modality`` comes next.
2. **Hounsfield units.** Signed or float pixels with air near -1000 (a minimum below -500
   and a maximum above 100): CT, whatever the container (NIfTI, DICOM, ``.npy``).
3. **Content.**

   * *Colour*: RGB whose median pixel has visible chroma and a skin-like hue (red >= green
     >= blue, within a margin) is dermoscopy. A colour image whose pixels are mostly gray
     (a screenshot, a Doppler overlay) is treated as gray.
   * *Gray*: two features separate ultrasound from CT slices exported as 8-bit images.
     ``speckle``: the correlation between horizontally neighbouring pixels of the fine
     residual (image minus a Gaussian blur of sigma 2). Ultrasound speckle grains are
     several pixels wide (correlation 0.7-0.95 in BUS-BRA and DDTI); CT noise is nearly
     white (0.0-0.5). ``body``: how much brighter the centre is than the image's border
     bands (the median of top, bottom, left and right). A CT slice is a bright body in
     dark air (0.04-0.35); an ultrasound frame is tissue to the edges, bright near the
     probe at the top (-0.25-0.35, 95% below 0.12). A fan-shaped black
     border (both top corners black, the top centre not) adds ultrasound evidence.

   Both are measured with the longest side resampled down to :data:`GRAY_PIXELS` (the
   ranges above are at the datasets' own sizes), so a 512 px export of a CT slice reads like
   the 256 px one. The gray evidence is a signed margin; only a clear margin names a modality, so **a gray
   PNG is not CT by default**: without HU, metadata or a clear body-in-air picture the
   answer is "unknown" and the project's setting (if any) decides.

The thresholds were set on the four datasets of ``shared/data`` (``benchmarks/
bench_modality.py`` measures the accuracy per modality; docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The modalities the app has models for (names as in the bundles' ``modality`` field).
MODALITIES = ("dermoscopy", "ultrasound", "ct")

#: Content analysis works on at most this many pixels along the longest side.
WORK_PIXELS = 512

#: Gray images are compared at this size (longest side; larger ones are resampled down), so
#: that the texture features do not depend on how many pixels the same field of view has.
GRAY_PIXELS = 256

#: A content guess below this confidence gives way to the project's setting.
CONFIDENT = 0.7

# DICOM Modality codes and loose spellings -> the bundle vocabulary.
_ALIASES = {
    "ct": "ct", "dermoscopy": "dermoscopy", "xc": "dermoscopy", "dermatology": "dermoscopy",
    "us": "ultrasound", "ultrasound": "ultrasound", "ultrasonography": "ultrasound",
}


def normalise_modality(text: Any) -> str | None:
    """``"CT"`` -> ``"ct"``, ``"US"`` -> ``"ultrasound"``, ...; None when unknown or empty."""
    if not text:
        return None
    return _ALIASES.get(str(text).strip().lower())


@dataclass(frozen=True)
class ModalityGuess:
    """What :func:`detect_modality` found.

    Attributes:
        modality: ``dermoscopy`` | ``ultrasound`` | ``ct``, or None (unknown).
        confidence: 0.5 (a coin toss) .. 1 (a DICOM tag).
        source: ``metadata`` | ``project`` | ``hu`` | ``content`` | ``none``.
        reason: one short line for the user (why this guess).
        features: the content features measured (empty when metadata decided).
    """

    modality: str | None
    confidence: float
    source: str
    reason: str
    features: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """``"ultrasound (87%, speckle texture)"`` or ``"unknown (...)"``."""
        name = self.modality or "unknown"
        return f"{name} ({100 * self.confidence:.0f}%, {self.reason})"


def detect_modality(image: Any, metadata: Mapping[str, Any] | None = None,
                    rgb: bool | None = None,
                    project_modality: str | None = None) -> ModalityGuess:
    """The modality of an image from its metadata, value range and content.

    Args:
        image: (Y, X), (Y, X, 3|4) colour, or (Z, Y, X) array (a volume's middle slice is
            analysed); anything ``np.asarray`` takes.
        metadata: layer / file metadata: ``modality`` (DICOM code or name; with
            ``project_image`` present it is the project's record), ``ct_window`` (the
            reader marks HU CT layers so).
        rgb: whether the last axis is colour (napari's ``layer.rgb``); None: guessed from
            the shape (last axis of 3 or 4 on a 3D array).
        project_modality: the project's setting for this image, used when metadata and
            HU say nothing and the content is not clear.
    """
    meta = dict(metadata or {})
    raw = meta.get("modality")
    named = normalise_modality(raw)
    if named is not None:
        source = "project" if meta.get("project_image") else "metadata"
        where = "project setting" if source == "project" else f"{source} {raw!s}"
        return ModalityGuess(named, 0.99 if source == "metadata" else 0.95, source, where)
    if meta.get("ct_window"):
        return ModalityGuess("ct", 0.95, "metadata", "CT window set by the reader")
    # An array-like with shape and dtype (numpy, dask, zarr) is only read where sampled.
    arr = image if hasattr(image, "shape") and hasattr(image, "dtype") else np.asarray(image)
    if int(np.prod(arr.shape)) == 0:
        return _fallback(ModalityGuess(None, 0.5, "none", "empty image"), project_modality)
    if rgb is None:
        rgb = arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4
    if _is_hu(arr):
        return ModalityGuess("ct", 0.95, "hu", "Hounsfield units (air near -1000)")
    plane = _plane(arr, rgb)
    if rgb:
        colour = _colour_guess(plane)
        if colour is not None:
            return _fallback(colour, project_modality)
        plane = plane[..., :3].astype(np.float32).mean(axis=-1)
    guess = _gray_guess(_to_unit(plane))
    return _fallback(guess, project_modality)


def _fallback(guess: ModalityGuess, project_modality: str | None) -> ModalityGuess:
    """The project's setting wins over an unsure (or empty) content guess."""
    project = normalise_modality(project_modality)
    if project is None or (guess.modality is not None and guess.confidence >= CONFIDENT):
        return guess
    return ModalityGuess(project, 0.9, "project", "project setting", guess.features)


def _is_hu(arr: np.ndarray) -> bool:
    if arr.dtype.kind not in "fi" or arr.ndim not in (2, 3):
        return False
    step = max(1, int(round((int(np.prod(arr.shape)) / 250_000) ** (1 / arr.ndim))))
    sub = np.asarray(arr[tuple(slice(None, None, step) for _ in range(arr.ndim))])
    finite = sub[np.isfinite(sub)] if sub.dtype.kind == "f" else sub
    return bool(finite.size and finite.min() < -500 and finite.max() > 100)


def _plane(arr: np.ndarray, rgb: bool) -> np.ndarray:
    """One 2D plane (colour kept), strided to at most WORK_PIXELS per side."""
    spatial = arr.ndim - (1 if rgb else 0)
    while spatial > 2:  # a volume (or time series): its middle slice
        arr = arr[arr.shape[0] // 2]
        spatial -= 1
    step = max(1, int(np.ceil(max(arr.shape[:2]) / WORK_PIXELS)))
    return np.asarray(arr[::step, ::step])


def _to_unit(plane: np.ndarray) -> np.ndarray:
    """Gray values mapped to [0, 1]: by the dtype's range for 8-bit, else 0.5-99.5 %."""
    a = plane.astype(np.float32)
    if plane.dtype == np.uint8:
        return a / 255.0
    finite = a[np.isfinite(a)]
    if not finite.size:
        return np.zeros_like(a)
    if plane.dtype.kind == "f" and finite.min() >= 0 and finite.max() <= 1:
        return np.nan_to_num(a)
    low, high = np.percentile(finite, [0.5, 99.5])
    return np.clip((np.nan_to_num(a, nan=low) - low) / max(high - low, 1e-6), 0, 1)


def _colour_guess(plane: np.ndarray) -> ModalityGuess | None:
    """Dermoscopy for a colour image with skin-like hue; None when it is really gray."""
    rgb = plane[::2, ::2, :3].astype(np.float32)  # every 4th pixel is plenty
    if plane.dtype != np.uint8:
        rgb = _to_unit(rgb) * 255
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    median_chroma = float(np.median(chroma))
    if median_chroma < 8:  # mostly gray pixels: a gray modality saved as colour
        return None
    r, g, b = (float(np.median(rgb[..., i])) for i in range(3))
    skin = r + 4 >= g and g + 4 >= b and r > b
    features = {"median_chroma": median_chroma, "r": r, "g": g, "b": b}
    if skin:
        return ModalityGuess("dermoscopy", 0.95, "content", "skin-like colour", features)
    return ModalityGuess("dermoscopy", 0.6, "content", "colour image, not skin-like",
                         features)


def gray_features(a: np.ndarray) -> dict[str, float]:
    """The gray-image features (see module docstring) of a [0, 1] image."""
    from scipy import ndimage as ndi

    h, w = a.shape
    c = max(2, min(h, w) // 8)
    corners = [a[:c, :c].mean(), a[:c, -c:].mean(), a[-c:, :c].mean(), a[-c:, -c:].mean()]
    bands = [a[:c].mean(), a[-c:].mean(), a[:, :c].mean(), a[:, -c:].mean()]
    center = a[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean()
    residual = a - ndi.gaussian_filter(a, 2)
    tissue = a > 0.08
    both = tissue[:, :-1] & tissue[:, 1:]
    speckle = 0.0
    if both.sum() > 100:
        left, right = residual[:, :-1][both], residual[:, 1:][both]
        if left.std() > 1e-6 and right.std() > 1e-6:
            speckle = float(np.corrcoef(left, right)[0, 1])
    top = a[:c]
    fan = bool(corners[0] < 0.06 and corners[1] < 0.06
               and top[:, w // 2 - c // 2: w // 2 + c // 2 + 1].mean() > 0.12)
    return {"speckle": speckle, "body": float(center - np.median(bands)),
            "fan": float(fan)}


def _gray_guess(a: np.ndarray) -> ModalityGuess:
    if min(a.shape) < 16:
        return ModalityGuess(None, 0.5, "none", "image too small to judge")
    if max(a.shape) > GRAY_PIXELS:
        from scipy import ndimage as ndi

        a = ndi.zoom(a, GRAY_PIXELS / max(a.shape), order=1)
    f = gray_features(a)
    us = float(np.clip((f["speckle"] - 0.6) / 0.1, -1, 1))    # speckle grains
    ct = float(np.clip((f["body"] - 0.1) / 0.1, -1, 1))       # bright body in dark air
    margin = us - ct + 0.5 * f["fan"]
    confidence = float(min(0.99, 0.5 + 0.25 * abs(margin)))
    if margin > 0.4:
        reason = "speckle texture" + (", fan-shaped border" if f["fan"] else "")
        return ModalityGuess("ultrasound", confidence, "content", reason, f)
    if margin < -0.4:
        return ModalityGuess("ct", confidence, "content", "body in air, fine noise", f)
    return ModalityGuess(None, 0.5, "content", "gray image, no clear ultrasound or CT "
                         "pattern", f)
