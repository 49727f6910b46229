"""Image preprocessing shared by training and inference, and resizing results back.

Frames: images are (Y, X) gray or (Y, X, 3) RGB as read from disk. A model sees
(C, S, S) float32 tensors: the image resized (bilinear, aspect ratio not kept) to its square
input size S, scaled to [0, 1], then mapped to [-1, 1]. Model outputs at S x S are resized back
to the original (Y, X) before thresholding, so masks always match the input's shape.

Large images: the model sees S x S whatever the input's size, so a 4000 x 3000 photo carries
no more information for it than a 512 x 384 one (S = 128). Samples, fusion (STAPLE) and uncertainty
are computed at a *working shape* (:func:`working_shape`: the input's shape scaled down so
an image longer than ``max(1024, 4 S)`` gets a longer side of ``4 S``, 512 px for a 128 px
student; smaller images, e.g. every dataset image, keep their size), then the maps are upsampled back to the
input's shape (:func:`resize_maps`; the K sample masks with :func:`upsample_masks`, on
demand).
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
    image = _shrink_large_uint8(np.asarray(image), out_size)
    arr = match_channels(to_unit_range(image), channels)
    tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
    if tuple(tensor.shape[-2:]) != out_size:
        tensor = F.interpolate(tensor, size=out_size, mode="bilinear", align_corners=False,
                               antialias=True)
    return (tensor[0] * 2.0 - 1.0).clamp(-1.0, 1.0)


#: A uint8 image with a longer side above this is resized to the model's input in uint8
#: (torch's antialiased bilinear, channels-last) before it is scaled to float: the float copy
#: of a 4000 x 3000 RGB photo alone took longer than the model (0.37 s vs 0.01 s here). The
#: result differs from the float path by under one grey level; smaller images keep that path.
LARGE_UINT8_SIDE = 2048


def _shrink_large_uint8(image: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    if image.dtype != np.uint8 or max(image.shape[:2]) <= LARGE_UINT8_SIDE:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    t = torch.from_numpy(np.ascontiguousarray(image))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=out_size, mode="bilinear", align_corners=False, antialias=True)
    out = out[0, 0] if image.ndim == 2 else out[0].permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy())


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


#: The longest side the samples, STAPLE and uncertainty are computed at, as a multiple of
#: the model's input size S: the model resolves at most S pixels across the image, and its
#: output upsampled bilinearly to 4 S already has boundaries smooth to a quarter of a model
#: pixel; going finer adds cost (STAPLE, entropy, scores grow with the pixel count), not
#: detail (docs/benchmarks.md, "Large images", measures the difference on PH2).
WORKING_SIDE_PER_INPUT = 4
#: Images up to this longer side (every image of the four datasets) keep the former path,
#: every map at their own size, so results and benchmarks on them are unchanged.
LARGE_IMAGE_SIDE = 1024


def working_shape(shape: tuple[int, int], input_size: int | tuple[int, int],
                  max_side: int | None = None) -> tuple[int, int]:
    """The (Y, X) shape samples and maps are computed at for an image of ``shape``.

    Args:
        shape: the image's (Y, X).
        input_size: the model's input size S (or (S_y, S_x)).
        max_side: the longest side allowed (None: images up to ``max(1024, 4 S)`` keep their
            shape, larger ones get ``4 S``; 0: no cap).

    Returns:
        ``shape`` itself when it fits, else ``shape`` scaled (aspect ratio kept) so its
        longer side is ``max_side``.
    """
    y, x = int(shape[0]), int(shape[1])
    if max_side is None:
        s = max(input_size) if isinstance(input_size, (tuple, list)) else int(input_size)
        if max(y, x) <= max(LARGE_IMAGE_SIDE, WORKING_SIDE_PER_INPUT * s):
            return y, x
        max_side = WORKING_SIDE_PER_INPUT * s
    if not max_side or max(y, x) <= max_side:
        return y, x
    factor = max_side / max(y, x)
    return max(1, round(y * factor)), max(1, round(x * factor))


def upsample_masks(masks: torch.Tensor | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (..., y, x) bool masks to (..., Y, X) (numpy bool).

    Pixel centres map as in ``F.interpolate(mode="nearest-exact")`` (half-pixel centres),
    so a mask upsampled this way lines up with bilinearly upsampled maps.
    """
    arr = masks.numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    arr = arr.astype(bool, copy=False)
    h, w = arr.shape[-2:]
    if (h, w) == tuple(shape):
        return arr
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.intp), w - 1)
    return arr[..., rows, :][..., cols]
