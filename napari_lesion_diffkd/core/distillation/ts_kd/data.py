"""Images for TS-KD in SAM's input frame, the views both models see, and logits -> masks.

Frames (the same as ``core/sam/inputs.py``, whose functions are reused):

* image frame: the file's (Y, X);
* input frame: (h, w), the image resized with its longest side S (PIL bilinear), uint8 RGB;
* padded frame: (S, S), the input frame zero-padded at the bottom/right; the teacher and the
  student both take ``(x - pixel_mean) / pixel_std`` of this (float32, 0-255 scale before
  normalising), and both return logits over it at (L, L) = (4·S/16, 4·S/16).

A *view* is a flip / quarter turn applied to the input-frame image *before* padding, so the
padding stays at the bottom/right as SAM was trained. Teacher outputs are cached per
(image, view) because the KD stage only ever shows the student these exact tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from napari_lesion_diffkd.core.data.datasets import PairRecord, read_image_file, read_pair
from napari_lesion_diffkd.core.sam.inputs import (
    mask_to_input_frame,
    resize_longest_side,
    to_uint8_rgb,
)

#: Views by name; each maps a (..., h, w) tensor to the viewed tensor.
VIEWS: tuple[str, ...] = ("identity", "hflip", "vflip", "rot180")


@dataclass
class Item:
    """One image in the input frame.

    Attributes:
        image: (3, h, w) uint8 RGB. mask: (h, w) bool, or None for an unlabelled image.
        id: record id (or ``gen-0007`` for a generated image). source: ``"real"``,
            ``"unlabeled"`` or ``"generated"``.
    """

    image: torch.Tensor
    mask: torch.Tensor | None
    id: str
    source: str = "real"


def image_to_item(image: np.ndarray, size: int, id: str, mask: np.ndarray | None = None,
                  source: str = "real") -> Item:
    """(Y, X[, 3]) image (+ (Y, X) mask) -> :class:`Item` at input size ``size``."""
    resized = resize_longest_side(to_uint8_rgb(image), size)
    m = None
    if mask is not None:
        m = torch.from_numpy(mask_to_input_frame(mask, resized.shape[:2]))
    return Item(torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))), m, id,
                source)


def load_pair_items(records: Sequence[PairRecord], size: int) -> list[Item]:
    """Labelled items (image + mask) of ``records``."""
    out = []
    for r in records:
        image, mask = read_pair(r)
        out.append(image_to_item(image, size, r.id, mask))
    return out


def load_image_items(paths: Sequence[tuple[str, str]], size: int, source: str) -> list[Item]:
    """Unlabelled items from ``(id, path)`` pairs."""
    return [image_to_item(read_image_file(p), size, i, None, source) for i, p in paths]


def apply_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """Apply a named view to the last two axes of ``x``."""
    if view == "identity":
        return x
    if view == "hflip":
        return x.flip(-1)
    if view == "vflip":
        return x.flip(-2)
    if view == "rot180":
        return x.flip(-1).flip(-2)
    raise ValueError(f"unknown view {view!r}; known: {VIEWS}")


def normalise_pad(image: torch.Tensor, size: int, mean: Sequence[float],
                  std: Sequence[float]) -> torch.Tensor:
    """(3, h, w) 0-255 (any dtype) -> (3, S, S) float32 normalised, zero-padded bottom/right.

    The same maths as ``segment_anything``'s ``Sam.preprocess``.
    """
    x = image.float()
    m = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
    x = (x - m) / s
    h, w = x.shape[-2:]
    return F.pad(x, (0, size - w, 0, size - h))


def pad_mask(mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, w) bool -> ((1, S, S) float target, (1, S, S) float valid-region mask)."""
    h, w = mask.shape
    target = torch.zeros(1, size, size)
    target[0, :h, :w] = mask.float()
    valid = torch.zeros(1, size, size)
    valid[0, :h, :w] = 1.0
    return target, valid


def valid_region(hw: tuple[int, int], size: int) -> torch.Tensor:
    """(1, S, S) float mask of the non-padded region of an (h, w) input."""
    valid = torch.zeros(1, size, size)
    valid[0, : hw[0], : hw[1]] = 1.0
    return valid


def logits_to_image(low_res: torch.Tensor, input_hw: tuple[int, int], size: int,
                    image_hw: tuple[int, int]) -> torch.Tensor:
    """(1, 1, L, L) padded-frame logits -> (Y, X) float32 image-frame logits.

    Upsample to (S, S) bilinearly, crop the (h, w) input region, resize to (Y, X)
    (``Sam.postprocess_masks``' steps).
    """
    up = F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)
    up = up[..., : input_hw[0], : input_hw[1]]
    return F.interpolate(up, size=tuple(image_hw), mode="bilinear", align_corners=False)[0, 0]


def typical_input_hw(items: Sequence[Item]) -> tuple[int, int]:
    """The most common (h, w) among items (the shape generated images are given)."""
    shapes = [tuple(int(v) for v in it.image.shape[-2:]) for it in items]
    values, counts = np.unique(np.array(shapes), axis=0, return_counts=True)
    best = values[int(np.argmax(counts))]
    return int(best[0]), int(best[1])
