"""Image and mask inputs of a SAM: the one conversion used by training and by prompting.

* Images: any (Y, X) gray or (Y, X, C) array -> RGB uint8 (gray repeated; other dtypes min-max
  scaled, as ``core.data.preprocess.to_unit_range``) -> longest side resized to S with PIL
  bilinear (what ``segment_anything``'s ``ResizeLongestSide.apply_image`` does) -> a
  (1, 3, H', W') float32 tensor on the 0-255 scale. ``Sam.preprocess`` then normalises it
  and pads it to S x S at the bottom/right.
* Masks: (Y, X) image-frame masks are brought to the (H', W') model-input frame
  (antialiased bilinear, threshold 0.5) and zero-padded to S x S.
* Mask prompts: a binary mask becomes low-resolution logits (L, L) through its signed
  distance (positive inside, in low-resolution pixels), ``clip(scale · sdf, ±clip)``; SAM's
  decoder takes logits, not 0/1, at its mask input, and a distance ramp tells it how far
  each pixel is from the drawn edge instead of a hard step. The same function makes the
  degraded-mask prompts during training, so a trained model knows this convention.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional as F

from napari_lesion_diffkd.core.data.preprocess import to_unit_range
from napari_lesion_diffkd.core.sam.coords import longest_side_shape

#: Logits per low-resolution pixel of signed distance, and their clip (mask prompts).
MASK_PROMPT_SCALE = 4.0
MASK_PROMPT_CLIP = 16.0


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """(Y, X) or (Y, X, C) array of any dtype -> (Y, X, 3) uint8 RGB.

    uint8 is kept; other dtypes are min-max scaled per image (CT: window it first). Gray and
    single-channel images are repeated to three channels; an alpha channel is dropped.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected a (Y, X) or (Y, X, 3) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.round(to_unit_range(arr) * 255.0).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def resize_longest_side(image_rgb: np.ndarray, target: int) -> np.ndarray:
    """(Y, X, 3) uint8 -> (H', W', 3) uint8 with the longest side ``target`` (PIL bilinear)."""
    from PIL import Image

    new_h, new_w = longest_side_shape(image_rgb.shape[0], image_rgb.shape[1], target)
    if (new_h, new_w) == image_rgb.shape[:2]:
        return image_rgb
    return np.asarray(Image.fromarray(image_rgb).resize((new_w, new_h), Image.BILINEAR))


def image_to_input(image: np.ndarray, img_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image -> (1, 3, H', W') float32 tensor (0-255 scale, not padded) and (H', W')."""
    resized = resize_longest_side(to_uint8_rgb(image), img_size)
    tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()[None]
    return tensor, (int(resized.shape[0]), int(resized.shape[1]))


def mask_to_input_frame(mask: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """(Y, X) mask (nonzero = lesion) -> (H', W') bool in the model-input frame."""
    m = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))[None, None]
    if tuple(m.shape[-2:]) != tuple(input_hw):
        m = F.interpolate(m, size=tuple(input_hw), mode="bilinear", align_corners=False,
                          antialias=True)
    return (m[0, 0] >= 0.5).numpy()


def pad_to_square(array: np.ndarray, size: int, value: float = 0) -> np.ndarray:
    """Pad a (H', W', ...) array at the bottom/right to (size, size, ...)."""
    h, w = array.shape[:2]
    if h > size or w > size:
        raise ValueError(f"array {array.shape[:2]} larger than {size}")
    pad = [(0, size - h), (0, size - w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, constant_values=value)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance (float32, pixels) of a (H, W) bool mask: > 0 inside, < 0 outside.

    Pixels next to the edge get ±0.5 (the edge runs between pixel centres). An empty mask
    gives -inf everywhere, a full one +inf.
    """
    inside = np.asarray(mask, dtype=bool)
    if not inside.any():
        return np.full(inside.shape, -np.inf, dtype=np.float32)
    if inside.all():
        return np.full(inside.shape, np.inf, dtype=np.float32)
    d_in = ndi.distance_transform_edt(inside)
    d_out = ndi.distance_transform_edt(~inside)
    return np.where(inside, d_in - 0.5, -(d_out - 0.5)).astype(np.float32)


def padded_mask_to_logits(mask: np.ndarray, low_res_hw: tuple[int, int],
                          scale: float = MASK_PROMPT_SCALE,
                          clip: float = MASK_PROMPT_CLIP) -> np.ndarray:
    """An (S, S) padded-input-frame mask -> (L, L) float32 mask-prompt logits."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    small = F.interpolate(m, size=tuple(low_res_hw), mode="area")[0, 0].numpy() >= 0.5
    sdf = signed_distance(small)
    return np.clip(scale * sdf, -clip, clip).astype(np.float32)


def mask_to_prompt_logits(mask: np.ndarray, img_size: int,
                          low_res_hw: tuple[int, int]) -> np.ndarray:
    """An image-frame (Y, X) mask -> (L, L) float32 mask-prompt logits for a SAM.

    Args:
        mask: (Y, X) bool / 0-1 mask in the image frame.
        img_size: the SAM's input size S. low_res_hw: its mask-input size (L, L).
    """
    input_hw = longest_side_shape(mask.shape[0], mask.shape[1], img_size)
    padded = pad_to_square(mask_to_input_frame(mask, input_hw), img_size)
    return padded_mask_to_logits(padded, low_res_hw)
