"""Procedural lesion phantoms, one per modality, made by this project (no third-party image).

Used as napari sample data and as the demo image when no real data folder is available.
Each ``fetch_*`` returns ``(image, mask)``: the image in the modality's usual form and a
(Y, X) bool mask of the lesion. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _irregular_blob(shape: tuple[int, int], center: tuple[float, float], radius: float,
                    rng: np.random.Generator, roughness: float = 0.18) -> np.ndarray:
    """A star-shaped region whose radius varies smoothly with angle. Returns (Y, X) bool."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - center[0], xx - center[1]
    angle = np.arctan2(dy, dx)
    r = np.full_like(angle, radius)
    for freq in range(2, 7):
        r += radius * roughness / freq * np.cos(freq * angle + rng.uniform(0, 2 * np.pi))
    return np.hypot(dy, dx) <= r


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / (noise.std() + 1e-6)


def fetch_dermoscopy_phantom(seed: int = 0, shape: tuple[int, int] = (384, 512)
                             ) -> tuple[np.ndarray, np.ndarray]:
    """RGB skin with a pigmented, irregular lesion. Returns (Y, X, 3) uint8 and (Y, X) bool."""
    rng = np.random.default_rng(seed)
    mask = _irregular_blob(shape, (shape[0] * 0.5, shape[1] * 0.52), min(shape) * 0.27, rng)
    skin = np.array([222, 172, 150], np.float32)
    lesion = np.array([110, 70, 50], np.float32)
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 6)
    texture = _smooth_noise(shape, 3, rng)[..., None]
    blotches = _smooth_noise(shape, 12, rng)[..., None]
    img = skin * (1 - soft[..., None]) + lesion * soft[..., None]
    img = img + 8 * texture + 14 * blotches * soft[..., None]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    vignette = 1 - 0.35 * (((yy - shape[0] / 2) / shape[0]) ** 2 + ((xx - shape[1] / 2) / shape[1]) ** 2)
    img = img * vignette[..., None]
    return np.clip(img, 0, 255).astype(np.uint8), mask


def fetch_ultrasound_phantom(seed: int = 0, shape: tuple[int, int] = (320, 384)
                             ) -> tuple[np.ndarray, np.ndarray]:
    """B-mode-like speckle with a hypoechoic nodule. Returns (Y, X) uint8 and (Y, X) bool."""
    rng = np.random.default_rng(seed)
    mask = _irregular_blob(shape, (shape[0] * 0.45, shape[1] * 0.5), min(shape) * 0.18, rng, 0.1)
    depth = np.linspace(1.0, 0.55, shape[0], dtype=np.float32)[:, None]
    tissue = 0.55 + 0.12 * _smooth_noise(shape, 10, rng)
    echo = np.where(mask, 0.18, tissue)
    # Posterior acoustic shadow below the nodule.
    cols = mask.any(axis=0)
    below = np.cumsum(mask, axis=0) > 0
    echo = np.where(below & ~mask & cols[None, :], echo * 0.7, echo)
    speckle = rng.rayleigh(0.55, shape).astype(np.float32)
    img = ndimage.gaussian_filter(echo * depth * speckle, 0.8) * 255
    return np.clip(img, 0, 255).astype(np.uint8), mask


def fetch_ct_phantom(seed: int = 0, shape: tuple[int, int] = (256, 256)
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Axial chest slice in Hounsfield units with ground-glass opacities in both lungs.

    Returns (Y, X) float32 HU and (Y, X) bool (the opacities).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    cy, cx = shape[0] / 2, shape[1] / 2
    body = ((yy - cy) / (shape[0] * 0.42)) ** 2 + ((xx - cx) / (shape[1] * 0.47)) ** 2 <= 1
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        lungs |= ((yy - cy * 0.95) / (shape[0] * 0.3)) ** 2 + (
            (xx - cx - side * shape[1] * 0.2) / (shape[1] * 0.15)) ** 2 <= 1
    hu = np.full(shape, -1000.0, np.float32)
    hu[body] = 40.0
    hu[lungs] = -850.0
    mask = np.zeros(shape, bool)
    for side in (-1, 1):
        centre = (cy * rng.uniform(0.8, 1.2), cx + side * shape[1] * rng.uniform(0.15, 0.25))
        mask |= _irregular_blob(shape, centre, min(shape) * rng.uniform(0.05, 0.09), rng, 0.3)
    mask &= lungs
    hu[mask] = -450.0
    hu += 25 * _smooth_noise(shape, 1.5, rng)
    return hu.astype(np.float32), mask
