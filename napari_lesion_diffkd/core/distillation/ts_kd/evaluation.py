"""Validation Dice of the prompt-free teacher and of the student, in each image's own frame."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from napari_lesion_diffkd.core.data.datasets import PairRecord, read_pair
from napari_lesion_diffkd.core.distillation.ts_kd.data import (
    image_to_item,
    logits_to_image,
    normalise_pad,
)
from napari_lesion_diffkd.core.distillation.ts_kd.teacher import (
    sam_normalisation,
    teacher_forward,
)
from napari_lesion_diffkd.core.metrics import dice


@torch.no_grad()
def teacher_predict(sam: nn.Module, image: np.ndarray, prompt: str) -> np.ndarray:
    """(Y, X[, 3]) image -> (Y, X) bool mask of a SAM in automatic mode (``prompt``)."""
    size = int(sam.image_encoder.img_size)
    mean, std = sam_normalisation(sam)
    item = image_to_item(image, size, "image")
    hw = (int(item.image.shape[-2]), int(item.image.shape[-1]))
    x = normalise_pad(item.image, size, mean, std)[None].to(sam.pixel_mean.device)
    _, low = teacher_forward(sam, x, [hw], prompt)
    return (logits_to_image(low, hw, size, image.shape[:2]) > 0).cpu().numpy()


def evaluate_pairs(predict_mask: Callable[[np.ndarray], np.ndarray],
                   records: Sequence[PairRecord]) -> dict[str, object]:
    """Dice of ``predict_mask(image)`` against each record's mask, and the time per image.

    Returns:
        ``{"n", "dice", "dice_std", "ms_median", "per_image": {id: dice}}``.
    """
    scores: dict[str, float] = {}
    times = []
    for r in records:
        image, mask = read_pair(r)
        start = time.perf_counter()
        pred = predict_mask(image)
        times.append(1000 * (time.perf_counter() - start))
        scores[r.id] = float(dice(pred, mask))
    values = list(scores.values())
    return {"n": len(values), "dice": float(np.mean(values)) if values else float("nan"),
            "dice_std": float(np.std(values)) if values else float("nan"),
            "ms_median": float(np.median(times)) if times else float("nan"),
            "per_image": scores}
