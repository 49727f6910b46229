"""Tests of the batch augmentation (``core/training/augment.py``) on real masks."""

from __future__ import annotations

import numpy as np
import torch

from napari_lesion_diffkd.core.data.preprocess import prepare_image, prepare_mask
from napari_lesion_diffkd.core.training.augment import augment_batch


def _batch(busbra_pairs, n: int = 6, size: int = 64):
    from napari_lesion_diffkd.core.data.readers import read_image

    images, masks = [], []
    for image_path, mask_path in busbra_pairs[:n]:
        image, mask = read_image(image_path).data, read_image(mask_path).data
        images.append(prepare_image(image, size, channels=1))
        masks.append(prepare_mask(mask, size))
    return torch.stack(images), torch.stack(masks)


def _row_profile(masks: torch.Tensor) -> torch.Tensor:
    """Lesion row centroid per mask, as a fraction of the height (0 top, 1 bottom)."""
    fg = (masks[:, 0] > 0).float()
    rows = torch.arange(fg.shape[-2], dtype=torch.float32)[None, :, None]
    return (fg * rows).sum(dim=(1, 2)) / fg.sum(dim=(1, 2)).clamp_min(1) / fg.shape[-2]


def test_no_vertical_flip_keeps_the_lesions_depth(busbra_pairs) -> None:
    images, masks = _batch(busbra_pairs)
    before = _row_profile(masks)
    flipped_any = False
    for seed in range(12):
        gen = torch.Generator().manual_seed(seed)
        _, kept = augment_batch(images, masks, gen, rotate90=False, vertical_flip=False,
                                max_degrees=0, scale_range=(1, 1), max_translate=0,
                                photometric=0, dropout_holes=0)
        # Only left-right flips remain: each mask's row centroid is unchanged.
        torch.testing.assert_close(_row_profile(kept), before)
        assert set(np.unique(kept.numpy())) <= {-1.0, 1.0}
        gen = torch.Generator().manual_seed(seed)
        _, free = augment_batch(images, masks, gen, rotate90=True, vertical_flip=True,
                                max_degrees=0, scale_range=(1, 1), max_translate=0,
                                photometric=0, dropout_holes=0)
        flipped_any |= bool((_row_profile(free) - before).abs().max() > 0.05)
    assert flipped_any, "with vertical flips and rotations on, some lesion must move in depth"
