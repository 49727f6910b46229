"""Training of a segmentation network, as a generator of :class:`JobEvent`.

``train(...)`` yields progress/metric/checkpoint events and returns a summary dict. It can be
stopped between yields (closing the generator); the last ``checkpoint.pt`` then allows
``resume=True`` to continue with the same data order, noise and augmentation: all random
draws come from one ``torch.Generator`` whose state is checkpointed.

Under ``torchrun`` (see ``distributed.py``) the network is wrapped in DistributedDataParallel.
Every rank draws the same global batch (``batch_size * world_size`` images) from the shared
generator and trains on its own slice of it, so data order and resume stay exact; only rank 0
validates and writes files.

Outputs in ``out_dir``: ``checkpoint.pt`` (plain tensors and numbers, read back with
``weights_only=True``), ``train_log.jsonl`` (one JSON object per logged step / validation),
``train_curves.png``, and the model bundle (``config.json`` + ``model.safetensors``) holding
the EMA weights with the best validation Dice.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.bundle import save_bundle
from napari_lesion_diffkd.core.checkpoint_load import CheckpointLoadError, load_checkpoint
from napari_lesion_diffkd.core.checkpoint_save import save_checkpoint as save_checkpoint_file
from napari_lesion_diffkd.core.data.datasets import (
    ImageRecord,
    PairRecord,
    group_split,
    load_image_tensors,
    load_tensors,
)
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.diffusion.targets import training_target
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.networks.registry import build_network
from napari_lesion_diffkd.core.training import distributed as ddp
from napari_lesion_diffkd.core.training.augment import augment_batch
from napari_lesion_diffkd.core.training.config import TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"
PLOT_NAME = "train_curves.png"
OBJECTIVES = ("diffusion", "staged", "segmentation", "trajectory")


def soft_dice_loss(pred_prob: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per image, averaged. Both (B, 1, H, W) in [0, 1]."""
    inter = (pred_prob * target01).sum(dim=(1, 2, 3))
    total = pred_prob.sum(dim=(1, 2, 3)) + target01.sum(dim=(1, 2, 3))
    return (1 - (2 * inter + 1) / (total + 1)).mean()


def diffusion_loss(
    output: torch.Tensor, target: torch.Tensor, x0: torch.Tensor, prediction_target: str
) -> torch.Tensor:
    """MSE to the target; for x0 prediction plus a soft Dice on the predicted mask."""
    loss = F.mse_loss(output.float(), target)
    if prediction_target == "x0":
        prob = ((output.float() + 1) / 2).clamp(0, 1)
        loss = loss + soft_dice_loss(prob, (x0 + 1) / 2)
    return loss


def sample_timesteps(
    batch: int, config: TrainConfig, num_timesteps: int, generator: torch.Generator
) -> torch.Tensor:
    """Integer timesteps (B,), a ``high_noise_fraction`` of them from the top of the range."""
    uniform = torch.randint(0, num_timesteps, (batch,), generator=generator)
    start = int(config.high_noise_start * num_timesteps)
    high = torch.randint(start, num_timesteps, (batch,), generator=generator)
    pick_high = torch.rand(batch, generator=generator) < config.high_noise_fraction
    return torch.where(pick_high, high, uniform)


LR_SCHEDULES = ("cosine", "cosine-time", "plateau")


def check_lr_schedule(config: TrainConfig) -> None:
    """Raise ValueError (one line) for an unknown schedule or a time cosine without budget."""
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; "
                         f"choose one of {LR_SCHEDULES}")
    if config.lr_schedule == "cosine-time" and not config.max_minutes:
        raise ValueError("lr_schedule 'cosine-time' needs a wall-time budget: set "
                         "max_minutes in the config or pass --max-minutes")


def lr_at(step: int, config: TrainConfig, plateau_scale: float = 1.0,
          elapsed_minutes: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 5% over ``max_steps`` (``"cosine"``), over the
    wall-time budget ``max_minutes`` (``"cosine-time"``, using ``elapsed_minutes``, which
    includes the time before a resume), or the plateau scale."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "plateau":
        return config.lr * plateau_scale
    if config.lr_schedule == "cosine-time" and config.max_minutes:
        progress = min(1.0, max(0.0, elapsed_minutes / config.max_minutes))
    else:
        span = max(1, config.max_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def predict_masks(
    network: nn.Module,
    schedule: NoiseSchedule,
    config: TrainConfig,
    images: torch.Tensor,
    batch: int = 16,
) -> torch.Tensor:
    """Masks (N, 1, H, W) bool at model resolution, as validation sees them.

    Diffusion objectives: DDIM with ``val_steps``, K = ``val_samples`` samples averaged in
    [-1, 1] and thresholded at 0 (seed 000's fusion). Segmentation: logits > 0.
    """
    from napari_lesion_diffkd.core.diffusion.samplers import build_sampler
    from napari_lesion_diffkd.core.jobs import run_to_completion

    out = []
    if config.objective == "segmentation":
        for i in range(0, len(images), batch):
            out.append(network(images[i : i + batch]) > 0)
        return torch.cat(out)
    # A dual-head (staged) network is validated through its x0 head: few-step DDIM from the
    # epsilon head is poor at the top of the schedule.
    target = "x0" if config.objective == "staged" else config.prediction_target
    if config.objective == "trajectory":  # the student's own one-call inference
        sampler = build_sampler("one-step", schedule, target)
    else:
        sampler = build_sampler("ddim", schedule, target, num_steps=config.val_steps)
    seeds = list(range(config.val_samples))
    for i in range(0, len(images), batch):
        x0 = run_to_completion(sampler.sample(network, images[i : i + batch],
                                              config.val_samples, seeds=seeds))
        out.append(x0.mean(dim=1) > 0)
    return torch.cat(out)


def validation_metrics(
    network: nn.Module, schedule: NoiseSchedule, config: TrainConfig,
    images: torch.Tensor, masks: torch.Tensor,
) -> dict[str, float]:
    """Mean Dice and HD95 (pixels at model resolution; finite values only) on the val set."""
    from napari_lesion_diffkd.core.metrics import dice, hd95

    pred = predict_masks(network, schedule, config, images).cpu().numpy()[:, 0]
    gt = (masks > 0).cpu().numpy()[:, 0]
    dices = [dice(p, g) for p, g in zip(pred, gt)]
    hds = [hd95(p, g) for p, g in zip(pred, gt)]
    finite = [h for h in hds if np.isfinite(h)]
    return {"val_dice": float(np.mean(dices)),
            "val_hd95": float(np.mean(finite)) if finite else float("nan")}


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


class _Objective:
    """Computes the training loss of one batch for the configured objective."""

    def __init__(self, config: TrainConfig, schedule: NoiseSchedule, device: torch.device):
        if config.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {config.objective!r}; choose one of {OBJECTIVES}")
        self.config, self.schedule, self.device = config, schedule, device
        self.aligner: nn.Module | None = None
        self.encoder: Any = None
        if config.leaf_lambda > 0:
            self._setup_leaf()
        self.distill: Any = None
        if config.objective == "trajectory" or config.kd_method != "none":
            from napari_lesion_diffkd.core.training.kd.objectives import Distillation

            self.distill = Distillation(config, schedule, device)

    @property
    def augments_itself(self) -> bool:
        """The trajectory objective flips image, noise and teacher mask together itself."""
        return self.config.objective == "trajectory"

    def prepare_targets(self, images: torch.Tensor, out_dir: Path) -> Generator[JobEvent, None, None]:
        """Teacher targets of the trajectory objective (cached in ``out_dir``)."""
        if self.config.objective == "trajectory":
            yield from self.distill.prepare_targets(images, out_dir)

    def _setup_leaf(self) -> None:
        from napari_lesion_diffkd.core.bundle import load_bundle

        if not self.config.leaf_encoder:
            raise ValueError("leaf_lambda > 0 needs leaf_encoder (a SegUNet bundle folder)")
        encoder_bundle = load_bundle(self.config.leaf_encoder, self.device)
        self.encoder = encoder_bundle.network.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    def prepare(self, network: nn.Module, images: torch.Tensor) -> None:
        """Build the LEAF projector, sized by one forward pass on ``images[:1]``, so that it
        exists before the optimizer and the checkpoint are made."""
        if self.encoder is None:
            return
        from napari_lesion_diffkd.core.training.objectives import (
            FeatureAligner,
            capture_features,
        )

        one = images[:1]
        t = torch.full((1,), float(self.schedule.num_timesteps - 1), device=self.device)
        x_t = torch.zeros(1, 1, *one.shape[-2:], device=self.device)
        with torch.no_grad(), capture_features(network, self.config.leaf_feature_module) as cap:
            network(x_t, t, one)
            target = self.encoder.features(one)[-1]
        features = cap.get("features")
        self.aligner = FeatureAligner(features.shape[1], target.shape[1]).to(self.device)

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the objective itself (the LEAF projector)."""
        return [] if self.aligner is None else list(self.aligner.parameters())

    def __call__(self, network: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                 gen: torch.Generator, part: slice = slice(None),
                 indices: Sequence[int] = ()) -> torch.Tensor:
        """Loss on rows ``part`` of the (global) batch ``images`` (B, C, H, W), ``masks``
        (B, 1, H, W) in {-1, 1}; ``indices`` are the rows' training-set indices. Noise and
        timesteps are drawn for all B rows so that every DDP rank advances the shared
        generator identically."""
        c = self.config
        if c.objective == "trajectory":
            # Every rank draws for the whole global batch (same generator), keeps its rows.
            loss_rows = list(range(len(indices)))[part]
            return self.distill.trajectory_loss(
                network, images[part], masks[part], [int(indices[i]) for i in loss_rows], gen)
        if c.objective == "segmentation":
            from napari_lesion_diffkd.core.training.objectives import segmentation_loss

            return segmentation_loss(network(images[part]), (masks[part] + 1) / 2)
        if c.objective == "staged":
            from napari_lesion_diffkd.core.training.objectives import staged_loss

            # staged_loss draws for the rows it gets: under DDP every rank draws the same
            # numbers for its own (different) images.
            loss, _ = staged_loss(network, images[part], masks[part], self.schedule, gen)
            return loss
        noise = torch.randn(masks.shape, generator=gen).to(self.device)[part]
        t = sample_timesteps(len(masks), c, self.schedule.num_timesteps, gen).to(self.device)[part]
        images, masks = images[part], masks[part]
        x_t = self.schedule.add_noise(masks, noise, t)
        target = training_target(c.prediction_target, masks, noise, t, self.schedule)
        if c.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        features = None
        if c.leaf_lambda > 0:
            from napari_lesion_diffkd.core.training.objectives import capture_features

            with capture_features(_unwrap(network), c.leaf_feature_module) as captured:
                output = network(x_t, t.float(), images)
            features = captured.get("features") if isinstance(captured, dict) else captured[0]
        else:
            output = network(x_t, t.float(), images)
        loss = diffusion_loss(output, target, masks, c.prediction_target)
        if c.boundary_loss_weight > 0:
            from napari_lesion_diffkd.core.training.losses import boundary_aware_loss

            loss = loss + c.boundary_loss_weight * boundary_aware_loss(
                output.float(), target, (masks + 1) / 2, t, self.schedule.num_timesteps)
        if self.distill is not None:
            loss = loss + self.distill.kd_term(output, c.prediction_target, x_t, t, images, masks)
        if features is not None:
            loss = loss + c.leaf_lambda * self._alignment(features, images)
        return loss

    def _alignment(self, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        from napari_lesion_diffkd.core.training.objectives import alignment_loss

        with torch.no_grad():
            target = self.encoder.features(images)[-1].float()
        assert self.aligner is not None, "prepare() builds the projector before training"
        projected = self.aligner(features.float(), size=target.shape[-2:])
        return alignment_loss(projected, target)


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network


def _build(config: TrainConfig, device: torch.device) -> nn.Module:
    network = build_network({**config.network, "image_channels": config.image_channels})
    if config.condition_bundle and not config.init_bundle:
        # Fine-tuning (init_bundle) needs no condition bundle: its condition network's
        # weights are part of the initial bundle's weights.
        from napari_lesion_diffkd.core.bundle import load_bundle
        from napari_lesion_diffkd.core.registry import resolve_reference

        seg = load_bundle(resolve_reference(config.condition_bundle))
        network.load_condition_state(seg.network.state_dict())
    if config.condition_bundle:
        network.freeze_condition()
    if config.init_bundle:  # fine-tuning: start from a trained bundle's (fp16-stored) weights
        from napari_lesion_diffkd.core.registry import load_model

        # A registered name (e.g. "ct-student") or a bundle folder.
        network.load_state_dict(load_model(config.init_bundle).network.state_dict())
    return network.to(device)


def _portable(config: TrainConfig) -> dict[str, Any]:
    """The config as a bundle stores it: the condition network named by registered name
    and weights sha256 (:func:`core.registry.bundle_reference`), never by a local folder
    that a fresh clone lacks (its weights are in the bundle's own weights anyway)."""
    data = config.to_dict()
    ref = data.get("condition_bundle")
    if ref and not isinstance(ref, dict):
        from napari_lesion_diffkd.core.registry import UnknownModelError, bundle_reference

        try:
            data["condition_bundle"] = bundle_reference(ref)
        except (UnknownModelError, OSError):
            data["condition_bundle"] = {"name": Path(str(ref)).name, "sha256": None}
    return data


def _unlabelled_tensors(
    config: TrainConfig,
    unlabelled: Sequence[ImageRecord],
    train_recs: Sequence[PairRecord],
    val_recs: Sequence[PairRecord],
) -> Generator[JobEvent, None, torch.Tensor]:
    """The unlabelled images a trajectory run may add: (U, C, S, S) float32 in [-1, 1].

    Raises:
        ValueError: the objective has no label-free target, or no image is left.
    """
    if config.objective != "trajectory":
        raise ValueError(
            f"unlabelled images need the 'trajectory' objective (the teacher's masks are "
            f"their target); this config's objective is {config.objective!r}")
    val_groups = {r.group for r in val_recs}
    paired = {Path(r.image_path).resolve() for r in (*train_recs, *val_recs)}
    kept = [u for u in unlabelled
            if u.group not in val_groups and Path(u.image_path).resolve() not in paired]
    dropped = len(unlabelled) - len(kept)
    if not kept:
        raise ValueError(f"all {len(unlabelled)} unlabelled images are validation-group or "
                         "already labelled images: nothing to add")
    yield JobEvent("log", message=f"adding {len(kept)} unlabelled images"
                   + (f" ({dropped} left out: validation groups or labelled pairs)"
                      if dropped else ""))
    return load_image_tensors(kept, config.input_size, config.image_channels)


#: Keys a ``checkpoint.pt`` must hold for ``--resume`` (``aligner`` only with LEAF).
_RESUME_KEYS = ("model", "ema", "optimizer", "generator", "step", "best_dice",
                "plateau_scale", "stale", "order", "elapsed")


def train(
    config: TrainConfig,
    records: Sequence[PairRecord],
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    resume: bool = False,
    provenance: dict[str, Any] | None = None,
    unlabelled: Sequence[ImageRecord] = (),
) -> Generator[JobEvent, None, dict[str, Any]]:
    """Train a network; yields events, returns a summary dict.

    Args:
        config: the run configuration.
        records: all image/mask pairs; split here into train/validation by group.
        out_dir: folder for checkpoint, log, plot and the resulting bundle.
        device: torch device (under torchrun, CUDA ranks use their local GPU).
        resume: continue from ``out_dir/checkpoint.pt`` (error if absent).
        provenance: extra facts stored in the bundle (data folders, command line, ...).
        unlabelled: images without labels, added to the training set of a ``trajectory``
            run (the teacher's masks are their only target; their label rows are 0, which
            the trajectory loss reads as "no label"). Images of a validation group, or that
            are already training pairs, are left out.
    """
    out = Path(out_dir)
    info = ddp.current()
    device = torch.device(device)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    check_lr_schedule(config)
    train_recs, val_recs = group_split(records, config.val_fraction, config.split_seed)
    if not train_recs:
        raise ValueError("no training images after the split: need more data or groups")
    yield JobEvent("log", message=f"loading {len(train_recs)} train / {len(val_recs)} val images")
    train_x, train_y = load_tensors(train_recs, config.input_size, config.image_channels)
    val_x, val_y = load_tensors(val_recs, config.input_size, config.image_channels)
    if unlabelled:
        extra = yield from _unlabelled_tensors(config, unlabelled, train_recs, val_recs)
        train_x = torch.cat([train_x, extra])
        train_y = torch.cat([train_y, torch.zeros(len(extra), *train_y.shape[1:])])
    train_x, train_y = train_x.to(device), train_y.to(device)

    torch.manual_seed(config.seed)
    network = _build(config, device)
    if config.channels_last:
        network = network.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(network).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    schedule = NoiseSchedule.from_config(config.schedule)
    objective = _Objective(config, schedule, device)
    objective.prepare(network, train_x)
    yield from objective.prepare_targets(train_x, out)
    trainable = [p for p in network.parameters() if p.requires_grad]
    trainable += objective.extra_parameters()
    model = nn.parallel.DistributedDataParallel(network) if info.enabled else network
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    step, best_dice, best_state, plateau_scale, stale = 0, -1.0, None, 1.0, 0
    order: list[int] = []
    elapsed_before = 0.0

    ckpt_path = out / CHECKPOINT_NAME
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no {CHECKPOINT_NAME} in {out}")
        # Refused pickles, truncated files and checkpoints of another network are one
        # CheckpointLoadError (a ValueError: one error line, exit 2), not a traceback.
        ckpt = load_checkpoint(ckpt_path, device, required=_RESUME_KEYS)
        try:
            network.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            optimizer.load_state_dict(ckpt["optimizer"])
            gen.set_state(ckpt["generator"])
            step, best_dice = int(ckpt["step"]), float(ckpt["best_dice"])
            plateau_scale, stale = float(ckpt["plateau_scale"]), int(ckpt["stale"])
            order = [int(i) for i in ckpt["order"].tolist()]
            elapsed_before = float(ckpt["elapsed"])
            best_state = ckpt.get("best_state") or None
            if objective.aligner is not None:
                objective.aligner.load_state_dict(ckpt["aligner"])
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CheckpointLoadError(f"{ckpt_path}: does not fit this run's network or "
                                      f"config ({type(exc).__name__}: {first})") from None
        yield JobEvent("log", step=step, total=config.max_steps, message=f"resumed at step {step}")

    start = time.monotonic()
    last_checkpoint = start  # short jobs checkpoint by time too (config.checkpoint_seconds)
    n = len(train_x)
    running = 0.0
    global_batch = config.batch_size * info.world_size

    def write_log(entry: dict[str, Any]) -> None:
        # Opened per entry: entries written after the loop (final validation) or after a
        # stop between yields still land, and a kill loses at most the current line.
        if info.is_main:
            with (out / LOG_NAME).open("a") as log:
                log.write(json.dumps(entry) + "\n")

    def save_checkpoint() -> None:
        if not info.is_main:
            return
        payload = {
            "model": network.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
            "step": step, "best_dice": best_dice, "plateau_scale": plateau_scale,
            "stale": stale, "order": torch.tensor(order, dtype=torch.long),
            "elapsed": elapsed_before + time.monotonic() - start,
            "best_state": best_state or {},
            "aligner": {} if objective.aligner is None else objective.aligner.state_dict(),
        }
        # Atomic, fsynced; a full disk leaves the previous checkpoint and no partial file.
        save_checkpoint_file(payload, ckpt_path)

    def validate() -> JobEvent | None:
        nonlocal best_dice, best_state, plateau_scale, stale
        if not info.is_main or not len(val_x):
            return None
        metrics = validation_metrics(ema, schedule, config, val_x.to(device), val_y.to(device))
        if metrics["val_dice"] > best_dice:
            best_dice, stale = metrics["val_dice"], 0
            best_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
        else:
            stale += 1
            if config.lr_schedule == "plateau" and stale >= config.plateau_patience:
                plateau_scale, stale = plateau_scale * config.plateau_factor, 0
        write_log({"step": step, **metrics})
        return JobEvent("metric", step=step, total=config.max_steps,
                        message=f"validation Dice {metrics['val_dice']:.4f}, "
                                f"HD95 {metrics['val_hd95']:.2f} px", values=metrics)

    while step < config.max_steps:
        minutes = (elapsed_before + time.monotonic() - start) / 60
        over = config.max_minutes is not None and minutes >= config.max_minutes
        if ddp.broadcast_flag(over, info):
            yield JobEvent("log", step=step, total=config.max_steps,
                           message=f"time budget of {config.max_minutes} min reached")
            break
        while len(order) < global_batch:
            order += torch.randperm(n, generator=gen).tolist()
        idx, order = order[:global_batch], order[global_batch:]
        images, masks = train_x[idx], train_y[idx]
        if config.augment and not objective.augments_itself:
            images, masks = augment_batch(images, masks, gen,
                                          dropout_holes=config.dropout_holes,
                                          rotate90=config.rotate90,
                                          vertical_flip=config.vertical_flip,
                                          max_translate=config.augment_max_translate,
                                          photometric=config.augment_photometric)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if config.lr_schedule == "cosine-time":  # every rank must step with rank 0's LR
            minutes = ddp.broadcast_value(minutes, info)
        lr = lr_at(step, config, plateau_scale, minutes)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        # Each rank draws the global batch's noise (same generator) and keeps its slice.
        part = slice(info.rank * config.batch_size, (info.rank + 1) * config.batch_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp_bf16):
            loss = objective(model, images, masks, gen, part, idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        _ema_update(ema, network, config.ema_decay if step >= config.warmup_steps else 0.0)
        step += 1
        value = float(loss.detach())
        running = value if step == 1 else 0.95 * running + 0.05 * value
        if step % 10 == 0 or step == config.max_steps:
            write_log({"step": step, "loss": running, "lr": lr,
                       "seconds": round(elapsed_before + time.monotonic() - start, 2)})
        yield JobEvent("progress", step=step, total=config.max_steps, message="training",
                       values={"loss": running})
        if step % config.val_every == 0 or step == config.max_steps:
            event = validate()
            if event is not None:
                yield event
        due = bool(config.checkpoint_seconds is not None and step < config.max_steps
                   and time.monotonic() - last_checkpoint >= config.checkpoint_seconds)
        if step % config.checkpoint_every == 0 or ddp.broadcast_flag(due, info):
            save_checkpoint()
            last_checkpoint = time.monotonic()
            ddp.barrier(info)
            yield JobEvent("checkpoint", step=step, total=config.max_steps,
                           message=str(ckpt_path))

    if step % config.val_every and step != config.max_steps:
        validate()  # stopped by the time budget between two validations
    save_checkpoint()
    if info.is_main:  # recorded by the job runner: a re-run after this point continues
        yield JobEvent("checkpoint", step=step, total=config.max_steps, message=str(ckpt_path))
    agree = ddp.parameters_agree(network, info)
    ddp.barrier(info)
    seconds = elapsed_before + time.monotonic() - start
    summary = {"steps": step, "best_val_dice": best_dice, "seconds": seconds,
               "out_dir": str(out), "val_records": val_recs, "world_size": info.world_size,
               "ranks_agree": agree}
    if not info.is_main:
        return summary
    if best_state:
        ema.load_state_dict(best_state)
    ema = ema.to(memory_format=torch.contiguous_format)
    try:
        from napari_lesion_diffkd.core.training.plot import plot_training_log

        plot_training_log(out / LOG_NAME, out / PLOT_NAME)
    except (ValueError, OSError) as exc:  # a plot must never fail a finished run
        yield JobEvent("log", message=f"could not plot the curves: {exc}")
    bundle_config = {
        "name": config.name, "modality": config.modality, "role": config.role,
        "objective": config.objective, "prediction_target": config.prediction_target,
        "input": {"size": config.input_size, "channels": config.image_channels,
                  "normalisation": "resize to S x S (bilinear), scale to [0, 1], map to [-1, 1]"},
        "sampler": dict(config.sampler),
        "num_parameters": sum(p.numel() for p in ema.parameters()),
        "metrics": {"model_resolution_dice": best_dice},
        "provenance": {
            **(provenance or {}), "train_config": _portable(config), "steps": step,
            "train_seconds": round(seconds, 1), "world_size": info.world_size,
            "split": {"method": "group", "val_fraction": config.val_fraction,
                      "seed": config.split_seed, "n_train": len(train_recs),
                      "n_val": len(val_recs), "val_ids": [r.id for r in val_recs],
                      "n_unlabelled": len(train_x) - len(train_recs)},
        },
    }
    save_bundle(out, ema, schedule, bundle_config)
    return summary
