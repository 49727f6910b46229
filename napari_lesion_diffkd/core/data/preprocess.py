"""Image preprocessing shared by training and inference, and resizing results back.

Frames: images are (Y, X) gray or (Y, X, 3) RGB as read from disk. A model sees
(C, S, S) float32 tensors: the image resized (bilinear, aspect ratio not kept) to its square
input size S, scaled to [0, 1], then mapped to [-1, 1]. Model outputs at S x S are resized back
to the original (Y, X) before thresholding, so masks always match the input's shape.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from napari_lesion_diffkd.core.data.finite import fill_nonfinite


def to_unit_range(image: np.ndarray) -> np.ndarray:
    """Scale an image to float32 [0, 1].

    uint8 is divided by 255; any other dtype (uint16, int16 CT in HU, float) is min-max
    scaled per image, because such images carry no fixed display range. NaN/Inf pixels are
    first replaced by the finite minimum (``core.data.finite``): left in, one NaN spreads
    through the network and empties the whole mask.

    Raises:
        NonFiniteImageError: (a ValueError) no pixel is finite.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    # Filled after the cast: float64 values beyond float32's range become Inf there.
    image, _ = fill_nonfinite(image.astype(np.float32))
    lo, hi = float(np.min(image)), float(np.max(image))
    if not np.isfinite(lo) or hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    # hi - lo in float64: near float32's range limits it would overflow to Inf (-> NaN).
    return ((image - np.float64(lo)) / (np.float64(hi) - np.float64(lo))).astype(np.float32)


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Return a (Y, X, channels) float array from a (Y, X) or (Y, X, C) one.

    Gray to RGB repeats the channel; RGB to gray uses ITU-R BT.601 luma weights.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"expected a 2D image (Y, X) or (Y, X, C), got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    have = image.shape[2]
    if have == channels:
        return image
    if channels == 1 and have == 3:
        return (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    if have == 1:
        return np.repeat(image, channels, axis=2)
    raise ValueError(f"cannot convert an image with {have} channels to {channels}")


def prepare_image(image: np.ndarray, size: int | tuple[int, int], channels: int) -> torch.Tensor:
    """Turn a 2D image into the model's input tensor.

    Args:
        image: (Y, X) or (Y, X, C) array, any numeric dtype.
        size: model input size S (or (S_y, S_x)).
        channels: channels the model expects (1 or 3).

    Returns:
        (channels, S_y, S_x) float32 tensor in [-1, 1].
    """
    out_size = (size, size) if isinstance(size, int) else tuple(size)
    arr = match_channels(to_unit_range(np.asarray(image)), channels)
    tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
    if tuple(tensor.shape[-2:]) != out_size:
        tensor = F.interpolate(tensor, size=out_size, mode="bilinear", align_corners=False,
                               antialias=True)
    return (tensor[0] * 2.0 - 1.0).clamp(-1.0, 1.0)


def prepare_mask(mask: np.ndarray, size: int | tuple[int, int]) -> torch.Tensor:
    """Binary mask (Y, X) (nonzero = lesion) -> (1, S_y, S_x) float32 in {-1, 1}.

    Resized by area averaging then thresholded at 0.5, which keeps thin structures better
    than nearest-neighbour sampling.
    """
    out_size = (size, size) if isinstance(size, int) else tuple(size)
    m = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))[None, None]
    if tuple(m.shape[-2:]) != out_size:
        m = F.interpolate(m, size=out_size, mode="area")
    return (m[0] >= 0.5).float() * 2.0 - 1.0


def resize_maps(maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize (..., S_y, S_x) float maps to (..., Y, X)."""
    if tuple(maps.shape[-2:]) == tuple(shape):
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    out = F.interpolate(flat, size=tuple(shape), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *shape)
