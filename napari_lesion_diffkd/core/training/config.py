"""Training run configuration: a flat, literal dataclass <-> YAML/JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_lesion_diffkd.core.config_files import check_keys, read_mapping


@dataclass
class TrainConfig:
    """Everything a diffusion-segmenter training run needs besides its data and output folder.

    Attributes:
        name: bundle name (e.g. ``dermoscopy-teacher``). modality / role: shown in listings.
        input_size: square model input S (images and masks are resized to S x S).
        image_channels: 3 for RGB models, 1 for gray (ultrasound, CT).
        network: constructor kwargs of the network plus ``_class_name``.
        schedule: ``NoiseSchedule`` kwargs (kind, num_timesteps, ...).
        prediction_target: ``"x0"`` (seed 001, the default), ``"epsilon"`` or ``"v"``.
        high_noise_fraction / high_noise_start: that fraction of training timesteps is drawn
            from ``[high_noise_start * T, T)`` instead of ``[0, T)``; few-step samplers start at
            the top, where uniform sampling trains too rarely.
        batch_size, lr, weight_decay, grad_clip, ema_decay: optimisation.
        max_steps: optimiser steps (the cosine schedule spans them); max_minutes: wall budget.
        warmup_steps: linear LR warm-up.
        val_fraction, split_seed: group-aware validation split.
        val_every: validate (and maybe keep best EMA weights) every N steps;
        val_samples / val_steps: K and DDIM steps used for validation Dice.
        checkpoint_every: write ``checkpoint.pt`` for ``--resume`` every N steps.
        checkpoint_seconds: also write it when this many seconds passed since the last one
            (None: steps only), so that a short or slow job can be resumed after a cancel
            or a kill; the end of training always writes one.
        amp_bf16: bf16 autocast (CPU and GPU); channels_last memory format.
        augment: use ``augment_batch``; ``dropout_holes`` rectangles of coarse dropout at most
            (0 for small lesions, which a hole can erase while the label keeps them).
        augment_max_translate: largest random shift as a fraction of the image side (0.08,
            i.e. +-8%); augment_photometric: brightness jitter +-this, contrast and gamma
            +-twice this (0 disables). Both passed to ``augment_batch``.
        sampler: default inference sampler stored in the bundle.
        vertical_flip, rotate90: orientation-changing augmentations. On for dermoscopy (no
            up or down in a skin photo); off for ultrasound (the transducer is always at the
            top, depth runs down) and CT (anterior at the top), where they teach the network
            to ignore a prior it should use.
        seed: RNG seed for init, data order, noise and augmentation.
        objective: ``"diffusion"`` (prediction-target loss; the default), ``"staged"``
            (UniSegDiff's staged dual-head loss, seed 004), ``"segmentation"`` (a plain
            supervised network such as ``SegUNet``: the baseline, no diffusion) or
            ``"trajectory"`` (one-call x0 student distilled from ``teacher``).
        boundary_loss_weight: weight of seed 000's boundary-aware loss (eq. 1) added to the
            diffusion loss (0 disables).
        leaf_lambda: weight of LEAF's feature alignment (seed 001 eq. 5; 0 disables);
            ``leaf_encoder`` is a SegUNet bundle folder (the frozen encoder) and
            ``leaf_feature_module`` the hooked submodule of the denoiser.
        init_bundle: a bundle folder with the same network whose weights start the run
            (fine-tuning); ignored when resuming, where the checkpoint's weights win.
        condition_bundle: a trained SegUNet bundle whose weights initialise (and freeze)
            a UniSegDiff network's condition network: a registered name, a bundle folder,
            or ``{"name": registered name, "sha256": weights sha256}`` (what a saved bundle
            records, checked on load). Not read when fine-tuning (``init_bundle``): the
            condition weights are part of the initial bundle's weights.
        teacher: a frozen teacher (registered name or bundle folder) for distillation.
        kd_method: with a teacher and the ``"diffusion"`` objective (seed 000's student):
            ``"none"`` (no KD), ``"general"`` (eq. 2, MSE between the student's and teacher's
            eps at the same x_t, t, g) or ``"efkd"`` (eqs. 3-7, edge/body split of that MSE);
            ``kd_weight`` scales it; ``efkd_tau``, ``efkd_lambda_edge``, ``efkd_lambda_body``
            are tau, lambda_e, lambda_b (0.6, 5, 2 in seed 000 §IV-A).
            With the ``"trajectory"`` objective (the project's fast student, see
            ``core/training/kd/trajectory.py``) the same edge/body weighting is applied to the
            error against the teacher's mask for the same initial noise.
        trajectory_noises: teacher masks (noises) cached per training image.
        trajectory_gt_weight: weight of Dice + BCE against the label, added to the trajectory
            loss (0: pure distillation).
        trajectory_spread_weight: weight of a per-pixel CRPS between the student's samples of
            an image and the teacher's cached masks of it (0: off). It rewards samples whose
            vote fraction per pixel matches the teacher's, i.e. the teacher's spread, which a
            per-noise regression alone cannot learn (its optimum is the mean mask).
        trajectory_spread_samples: G, samples per image in a batch when the spread term is on
            (the batch then holds batch_size // G images, G noises each).
        lr_schedule: ``"cosine"`` over ``max_steps``, ``"cosine-time"`` over the wall-time
            budget ``max_minutes`` (required; a time-budgeted run then decays its LR however
            many steps the machine manages, where a step cosine with an unreachable
            ``max_steps`` never decays) or ``"plateau"`` (LR x ``plateau_factor`` after
            ``plateau_patience`` validations without a better Dice).
    """

    name: str = "model"
    modality: str = "dermoscopy"
    role: str = "teacher"
    input_size: int = 128
    image_channels: int = 3
    network: dict[str, Any] = field(
        default_factory=lambda: {"_class_name": "CondDiffusionUNet"}
    )
    schedule: dict[str, Any] = field(
        default_factory=lambda: {"kind": "linear", "num_timesteps": 250}
    )
    prediction_target: str = "x0"
    high_noise_fraction: float = 0.5
    high_noise_start: float = 0.7
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    max_steps: int = 2000
    max_minutes: float | None = None
    warmup_steps: int = 100
    val_fraction: float = 0.2
    split_seed: int = 0
    val_every: int = 250
    val_samples: int = 4
    val_steps: int = 4
    checkpoint_every: int = 250
    checkpoint_seconds: float | None = 120.0
    amp_bf16: bool = False
    channels_last: bool = False
    augment: bool = True
    dropout_holes: int = 4
    augment_max_translate: float = 0.08
    augment_photometric: float = 0.15
    vertical_flip: bool = True
    rotate90: bool = True
    sampler: dict[str, Any] = field(
        default_factory=lambda: {"name": "ddim", "num_steps": 4, "num_samples": 8}
    )
    seed: int = 0
    objective: str = "diffusion"
    boundary_loss_weight: float = 0.0
    leaf_lambda: float = 0.0
    leaf_encoder: str | None = None
    leaf_feature_module: str = "mid"
    condition_bundle: str | dict[str, Any] | None = None
    init_bundle: str | None = None
    teacher: str | None = None
    kd_method: str = "none"
    kd_weight: float = 1.0
    efkd_tau: float = 0.6
    efkd_lambda_edge: float = 5.0
    efkd_lambda_body: float = 2.0
    trajectory_noises: int = 8
    trajectory_gt_weight: float = 0.0
    trajectory_spread_weight: float = 0.0
    trajectory_spread_samples: int = 4
    lr_schedule: str = "cosine"
    plateau_patience: int = 3
    plateau_factor: float = 0.5

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error naming them."""
        check_keys(cls, data, "training")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a YAML or JSON config file."""
        return cls.from_dict(read_mapping(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
