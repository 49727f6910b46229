"""The data of one SAM-SSL run: labelled, unlabelled and validation images in memory.

Split order: ``group_split`` (the project's validation split, never trained on) ->
``select_labelled`` on the training side -> the rest of the training side is unlabelled
(its masks are read **only** to measure pseudo-label quality, never for a loss), plus any
extra unlabelled images (``--unlabeled``) whose group is not a validation group and which
are not already among the pairs.

Student tensors: images (N, C, S, S) float32 in [-1, 1] (``preprocess.prepare_image``: square
resize, aspect ratio not kept), masks (N, 1, S, S) float32 {0, 1}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_lesion_diffkd.core.data.datasets import (
    ImageRecord,
    PairRecord,
    group_split,
    read_image_file,
    read_pair,
)
from napari_lesion_diffkd.core.data.preprocess import prepare_image, prepare_mask
from napari_lesion_diffkd.core.distillation.sam_ssl.config import SamSslConfig
from napari_lesion_diffkd.core.distillation.sam_ssl.split import select_labelled


@dataclass
class SslData:
    """Everything a run trains and validates on.

    Attributes:
        labelled, unlabelled, val: the records of each part (unlabelled may mix
            ``PairRecord`` and ``ImageRecord``).
        x_l, y_l: labelled images (N_l, C, S, S) and masks (N_l, 1, S, S) {0, 1}.
        x_u: unlabelled images (N_u, C, S, S). gt_u: their masks (N_u, 1, S, S) where known
            (``has_gt_u``), zeros elsewhere: for measuring pseudo-labels only.
        raw_u: unlabelled images as stored, for SAM's encoder (dropped once encoded).
        x_val: validation images (N_v, C, S, S); val_masks: their (Y, X) bool masks.
    """

    labelled: list[PairRecord]
    unlabelled: list[PairRecord | ImageRecord]
    val: list[PairRecord]
    x_l: torch.Tensor
    y_l: torch.Tensor
    x_u: torch.Tensor
    gt_u: torch.Tensor
    has_gt_u: torch.Tensor
    x_val: torch.Tensor
    val_masks: list[np.ndarray]
    raw_u: list[np.ndarray] = field(default_factory=list)


def _empty(channels: int, size: int, n: int = 0) -> torch.Tensor:
    return torch.zeros(n, channels, size, size)


def prepare_data(records: Sequence[PairRecord], config: SamSslConfig,
                 extra_unlabelled: Sequence[ImageRecord] = (),
                 load_unlabelled: bool = True) -> SslData:
    """Split and load a run's data (see the module docstring).

    Args:
        load_unlabelled: False for the supervised-only baseline (nothing unlabelled is read).

    Raises:
        ValueError: no training or no labelled images.
    """
    train, val = group_split(records, config.val_fraction, config.split_seed)
    if not train:
        raise ValueError("no training images after the validation split")
    labelled, unlabelled_pairs = select_labelled(train, config.label_fraction, config.label_seed)
    val_groups = {r.group for r in val}
    known = {(r.dataset, r.id) for r in records}
    extra = [r for r in extra_unlabelled
             if r.group not in val_groups and (r.dataset, r.id) not in known]
    unlabelled: list[PairRecord | ImageRecord] = [*unlabelled_pairs, *extra]
    s, c = config.input_size, config.channels
    xs, ys = [], []
    for r in labelled:
        image, mask = read_pair(r)
        xs.append(prepare_image(image, s, c))
        ys.append((prepare_mask(mask, s) > 0).float())
    x_l, y_l = torch.stack(xs), torch.stack(ys)
    x_u, gt_u = _empty(c, s), torch.zeros(0, 1, s, s)
    raw: list[np.ndarray] = []
    has_gt = torch.zeros(0, dtype=torch.bool)
    if load_unlabelled and unlabelled:
        xu, gu, hg = [], [], []
        for r in unlabelled:
            if isinstance(r, PairRecord):
                image, mask = read_pair(r)
                gu.append((prepare_mask(mask, s) > 0).float())
                hg.append(True)
            else:
                image = read_image_file(r.image_path)
                gu.append(torch.zeros(1, s, s))
                hg.append(False)
            raw.append(image)
            xu.append(prepare_image(image, s, c))
        x_u, gt_u, has_gt = torch.stack(xu), torch.stack(gu), torch.tensor(hg)
    xv, vm = [], []
    for r in val:
        image, mask = read_pair(r)
        xv.append(prepare_image(image, s, c))
        vm.append(mask)
    x_val = torch.stack(xv) if xv else _empty(c, s)
    return SslData(labelled, unlabelled if load_unlabelled else [], val, x_l, y_l, x_u, gt_u,
                   has_gt, x_val, vm, raw)
