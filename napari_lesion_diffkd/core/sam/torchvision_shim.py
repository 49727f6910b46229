"""Pure torch/PIL stand-ins for the four torchvision names ``segment_anything`` imports.

``segment_anything`` 1.0 imports, at module import time::

    torchvision.transforms.functional.resize, to_pil_image   (utils/transforms.py)
    torchvision.ops.boxes.batched_nms, box_area               (automatic_mask_generator.py)

On CPU-only machines of this project ``import torchvision`` fails (its compiled operators
need CUDA torch libraries; see ``../shared/docs/stack-notes.md``), so ``import
segment_anything`` fails too. :func:`import_segment_anything` tries the real torchvision
first and only when that fails registers these stand-ins in ``sys.modules`` for the duration
of the import. They are removed again afterwards: ``segment_anything`` has bound the four
functions by then, and a fake ``torchvision`` left in ``sys.modules`` would make other
libraries (MONAI, ...) believe a full torchvision is available.

The stand-ins implement exactly the behaviour ``segment_anything`` relies on:

* ``resize(img, size)``: PIL image in, PIL image out, bilinear (what torchvision does for
  PIL inputs: it calls ``PIL.Image.resize`` with ``BILINEAR``); torch tensors (..., H, W)
  are resized with antialiased bilinear interpolation (torchvision's tensor path).
* ``to_pil_image(pic)``: (H, W) / (H, W, C) numpy arrays or (C, H, W) / (H, W) tensors.
* ``box_area(boxes)``: (N, 4) XYXY -> (N,) areas.
* ``batched_nms(boxes, scores, idxs, iou_threshold)``: greedy NMS per category, indices of
  kept boxes sorted by decreasing score (a box is dropped when its IoU with a kept box of
  the same category is *greater* than the threshold).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

#: Attribute set on every stand-in module, so tests and callers can tell them apart.
SHIM_MARKER = "__lesion_diffkd_torchvision_shim__"

_MODULE_NAMES = (
    "torchvision",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.ops",
    "torchvision.ops.boxes",
)


# --------------------------------------------------------------------------- transforms


def _output_size(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) after torchvision-style resizing: an int matches the *shorter* edge."""
    if isinstance(size, int | np.integer):
        short, long_ = (height, width) if height <= width else (width, height)
        new_short, new_long = int(size), int(int(size) * long_ / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)
    size = list(size)
    if len(size) == 1:
        return _output_size(height, width, int(size[0]))
    return int(size[0]), int(size[1])


def resize(img: Any, size: int | Sequence[int], interpolation: Any = None,
           max_size: int | None = None, antialias: bool | None = True) -> Any:
    """Bilinear resize of a PIL image or a (..., H, W) tensor.

    Args:
        img: ``PIL.Image.Image`` or a torch tensor whose last two axes are (H, W).
        size: (H, W) output size, or an int for the shorter edge (aspect ratio kept).
        interpolation, max_size, antialias: accepted for signature compatibility; only
            bilinear is implemented (the only mode ``segment_anything`` uses).

    Returns:
        The same kind of object as ``img``, resized to (H, W).
    """
    from PIL import Image

    if max_size is not None:
        raise NotImplementedError("torchvision stand-in: max_size is not supported")
    if isinstance(img, Image.Image):
        out_h, out_w = _output_size(img.height, img.width, size)
        # PIL takes (width, height).
        return img.resize((out_w, out_h), Image.BILINEAR)
    if isinstance(img, torch.Tensor):
        out_h, out_w = _output_size(int(img.shape[-2]), int(img.shape[-1]), size)
        lead = img.shape[:-2]
        x = img.reshape(-1, 1, *img.shape[-2:])
        dtype = x.dtype
        y = F.interpolate(x.float(), size=(out_h, out_w), mode="bilinear", align_corners=False,
                          antialias=bool(antialias))
        if not dtype.is_floating_point:
            y = y.round().clamp(torch.iinfo(dtype).min, torch.iinfo(dtype).max)
        return y.to(dtype).reshape(*lead, out_h, out_w)
    raise TypeError(f"resize stand-in expects a PIL image or a tensor, got {type(img)}")


def to_pil_image(pic: Any, mode: str | None = None) -> Any:
    """Array or tensor to a ``PIL.Image``.

    Args:
        pic: numpy (H, W) or (H, W, C) array, or torch (H, W) / (C, H, W) tensor, C in
            {1, 3, 4}. Floating-point tensors are taken to lie in [0, 1] and scaled by 255
            (torchvision's convention); numpy arrays must already be uint8.
        mode: PIL mode; inferred from C when omitted ("L", "RGB", "RGBA").
    """
    from PIL import Image

    if isinstance(pic, torch.Tensor):
        t = pic.detach().cpu()
        if t.ndim == 3:
            t = t.permute(1, 2, 0)
        if t.is_floating_point():
            t = (t * 255).round().clamp(0, 255)
        arr = t.to(torch.uint8).numpy()
    else:
        arr = np.asarray(pic)
        if arr.dtype != np.uint8:
            raise TypeError(f"to_pil_image stand-in: numpy input must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"to_pil_image stand-in: unsupported shape {arr.shape}")
    if mode is None:
        mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


# --------------------------------------------------------------------------------- boxes


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of (N, 4) XYXY boxes (x0, y0, x1, y1), shape (N,)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(N, N) IoU matrix of (N, 4) XYXY boxes."""
    area = box_area(boxes)
    top_left = torch.max(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.min(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area[:, None] + area[None, :] - inter
    return inter / union.clamp(min=torch.finfo(torch.float32).tiny)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: (N, 4) float XYXY. scores: (N,) float.
        iou_threshold: a box is discarded if its IoU with an already kept box exceeds it.

    Returns:
        int64 (K,) indices of kept boxes, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    iou = _pairwise_iou(boxes.float()[order])
    n = len(order)
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep: list[int] = []
    # The IoU matrix is computed once; the greedy pass itself is inherently sequential.
    over = (iou > iou_threshold).cpu()
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS done independently per category ``idxs`` (boxes of different categories never
    suppress each other).

    Args:
        boxes: (N, 4) XYXY. scores: (N,). idxs: (N,) int category of each box.

    Returns:
        int64 (K,) indices of kept boxes, sorted by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # Shifting each category into its own disjoint coordinate range makes one NMS pass
    # equivalent to one pass per category.
    offsets = idxs.to(boxes.dtype) * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


# ---------------------------------------------------------------------------- installing


def torchvision_importable() -> bool:
    """True when the real torchvision imports (e.g. on a CUDA machine)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install raises RuntimeError, not ImportError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # drop half-imported leftovers of the failed import
        return False
    return not getattr(sys.modules["torchvision"], SHIM_MARKER, False)


def _build_modules() -> dict[str, types.ModuleType]:
    mods = {name: types.ModuleType(name) for name in _MODULE_NAMES}
    for m in mods.values():
        setattr(m, SHIM_MARKER, True)
        m.__doc__ = "napari-lesion-diffkd stand-in (torchvision does not import here)"
    functional = mods["torchvision.transforms.functional"]
    functional.resize = resize
    functional.to_pil_image = to_pil_image
    boxes = mods["torchvision.ops.boxes"]
    boxes.batched_nms = batched_nms
    boxes.box_area = box_area
    boxes.nms = nms
    mods["torchvision"].transforms = mods["torchvision.transforms"]
    mods["torchvision"].ops = mods["torchvision.ops"]
    mods["torchvision.transforms"].functional = functional
    mods["torchvision.ops"].boxes = boxes
    mods["torchvision.ops"].batched_nms = batched_nms
    mods["torchvision.ops"].box_area = box_area
    mods["torchvision.ops"].nms = nms
    return mods


@contextlib.contextmanager
def stand_ins_installed() -> Iterator[bool]:
    """Register the stand-ins in ``sys.modules`` while the block runs, if needed.

    Yields:
        True when the stand-ins were installed (real torchvision absent), False when the real
        torchvision is used. Stand-ins are removed on exit; real modules are left alone.
    """
    if torchvision_importable():
        yield False
        return
    mods = _build_modules()
    sys.modules.update(mods)
    try:
        yield True
    finally:
        for name, mod in mods.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]


def import_segment_anything() -> types.ModuleType:
    """Import and return ``segment_anything``, with the torchvision stand-ins when needed.

    Raises:
        ImportError: segment-anything is not installed (message says how to install it).
    """
    if "segment_anything" in sys.modules:
        return sys.modules["segment_anything"]
    with stand_ins_installed():
        try:
            return importlib.import_module("segment_anything")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("segment_anything"):
                raise ImportError(
                    "the Segment Anything features need the 'segment-anything' package: "
                    "pip install -c constraints.txt segment-anything==1.0"
                ) from exc
            raise
