"""``SamSslConfig``: one run of the SAM-guided semi-supervised dual-task student (seed 003).

YAML/JSON keys are the attribute names; unknown keys are an error that lists the known ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_lesion_diffkd.core.config_files import check_keys, read_mapping
from napari_lesion_diffkd.core.distillation.sam_ssl.fusion import FUSION_MODES


@dataclass
class SamSslConfig:
    """Settings of a ``train_sam_ssl`` run.

    Attributes:
        name, modality: bundle name and modality label.
        input_size, channels: the student's square input S (multiple of 16) and channels.
        network: ``DualTaskNet`` constructor overrides (widths, depths, expand_ratio, ...).
        label_fraction, label_seed: share of the training split that keeps its labels
            (seed 003: 0.02, 0.04, 0.08), chosen by whole groups (``split.select_labelled``).
        val_fraction, split_seed: the project's group-aware validation split
            (``datasets.group_split``, same defaults as ``train``); never trained on.
        supervised_only: the baseline: the same labelled images, steps, batches and
            augmentation, without SAM, pseudo-labels or KL.
        batch_size, unlabelled_batch_size: labelled and unlabelled images per step (one
            forward pass over both, so BatchNorm sees both).
        lr, weight_decay, warmup_steps, grad_clip: AdamW; linear warm-up then a cosine over
            ``max_steps`` (steps only, so a resumed run is identical to an uninterrupted one).
        max_steps, max_minutes: stop at whichever comes first (the time budget does not
            change the LR schedule).
        dice_weight, ce_weight, sdf_weight, sdf_loss: supervised loss
            ``dice·Dice + ce·BCE + sdf·(MSE|L1)(SDF)``; the same form on pseudo-labels.
        pseudo_weight, kl_weight, kl_temperature: unsupervised loss
            ``pseudo·L_seg(pseudo-labels) + kl·T²·KL(SAM || student)``.
        unsup_weight, rampup_fraction: the unsupervised loss is multiplied by
            ``unsup_weight · exp(-5 (1 - t)²)``, t = step / (rampup_fraction · max_steps).
        fusion, fusion_mask_weight, soft_gain, prompt_box: the fused mask prompt
            (``fusion.py``) and whether the fused lesion's box goes with it.
        pseudo_min_score: unlabelled images whose SAM predicted IoU is below this get no
            unsupervised loss (0: keep all, as the seed).
        augment_rotate_flip: up-down flips and 90° turns (free orientation: dermoscopy);
            left-right flips, a mild affine and brightness/contrast are always on.
        amp_bf16: bf16 autocast for the student (about 2x faster on this CPU).
        val_every, checkpoint_every: steps between validations / ``checkpoint.pt`` writes.
        val_pseudo_max: unlabelled images scored for pseudo-label Dice at each validation
            (all of them at the end).
        seed: initialisation, data order and augmentation.
    """

    name: str = "sam-ssl-student"
    modality: str = "dermoscopy"
    input_size: int = 128
    channels: int = 3
    network: dict[str, Any] = field(default_factory=dict)
    label_fraction: float = 0.08
    label_seed: int = 0
    val_fraction: float = 0.2
    split_seed: int = 0
    supervised_only: bool = False
    batch_size: int = 8
    unlabelled_batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    grad_clip: float = 1.0
    max_steps: int = 800
    max_minutes: float | None = None
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    sdf_weight: float = 1.0
    sdf_loss: str = "mse"
    pseudo_weight: float = 1.0
    kl_weight: float = 1.0
    kl_temperature: float = 1.0
    unsup_weight: float = 1.0
    rampup_fraction: float = 0.3
    fusion: str = "sdf-ramp"
    fusion_mask_weight: float = 0.5
    soft_gain: float = 16.0
    prompt_box: bool = False
    pseudo_min_score: float = 0.0
    augment_rotate_flip: bool = True
    amp_bf16: bool = True
    val_every: int = 100
    checkpoint_every: int = 100
    val_pseudo_max: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.input_size % 16:
            raise ValueError(f"input_size {self.input_size} must be a multiple of 16")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"unknown fusion {self.fusion!r}; known: {FUSION_MODES}")
        if self.sdf_loss not in ("mse", "l1"):
            raise ValueError(f"unknown sdf_loss {self.sdf_loss!r} (mse, l1)")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.batch_size < 1 or self.unlabelled_batch_size < 1 or self.max_steps < 1:
            raise ValueError("batch sizes and max_steps must be >= 1")
        if not 0 <= self.fusion_mask_weight <= 1:
            raise ValueError("fusion_mask_weight must be in [0, 1]")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamSslConfig:
        check_keys(cls, data, "sam-ssl")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> SamSslConfig:
        """Read a YAML or JSON config file."""
        return cls.from_dict(read_mapping(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
