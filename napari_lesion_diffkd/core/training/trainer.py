"""Training of a conditional diffusion segmenter, as a generator of :class:`JobEvent`.

``train(...)`` yields progress/metric/checkpoint events and returns a summary dict. It can be
stopped between yields (closing the generator); the last ``checkpoint.pt`` then allows
``resume=True`` to continue with the same data order, noise and augmentation (all random
draws come from one ``torch.Generator`` whose state is checkpointed).

Outputs in ``out_dir``: ``checkpoint.pt`` (for resume; plain tensors and numbers, loaded with
``weights_only=True``), ``train_log.jsonl`` (one JSON object per logged step / validation),
and the model bundle (``config.json`` + ``model.safetensors``) holding the EMA weights with the
best validation Dice.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.bundle import save_bundle
from napari_lesion_diffkd.core.data.datasets import PairRecord, group_split, load_tensors
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.diffusion.targets import training_target
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.networks.registry import build_network
from napari_lesion_diffkd.core.training.augment import augment_batch
from napari_lesion_diffkd.core.training.config import TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"


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


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 5% over ``max_steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def validation_dice(
    network: nn.Module,
    schedule: NoiseSchedule,
    config: TrainConfig,
    images: torch.Tensor,
    masks: torch.Tensor,
    batch: int = 16,
) -> float:
    """Mean Dice at the model resolution: DDIM with ``val_steps``, K = ``val_samples``
    samples averaged in [-1, 1] and thresholded at 0 (seed 000's fusion)."""
    from napari_lesion_diffkd.core.diffusion.samplers import build_sampler
    from napari_lesion_diffkd.core.jobs import run_to_completion

    sampler = build_sampler("ddim", schedule, config.prediction_target, num_steps=config.val_steps)
    dices = []
    seeds = list(range(config.val_samples))
    for i in range(0, len(images), batch):
        img = images[i : i + batch]
        x0 = run_to_completion(sampler.sample(network, img, config.val_samples, seeds=seeds))
        pred = x0.mean(dim=1) > 0  # (N, 1, H, W)
        gt = masks[i : i + batch] > 0
        inter = (pred & gt).sum(dim=(1, 2, 3)).float()
        total = pred.sum(dim=(1, 2, 3)).float() + gt.sum(dim=(1, 2, 3)).float()
        dices.append(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)))
    return float(torch.cat(dices).mean())


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def train(
    config: TrainConfig,
    records: Sequence[PairRecord],
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    resume: bool = False,
    provenance: dict[str, Any] | None = None,
) -> Generator[JobEvent, None, dict[str, Any]]:
    """Train a diffusion segmenter; yields events, returns a summary dict.

    Args:
        config: the run configuration.
        records: all image/mask pairs; split here into train/validation by group.
        out_dir: folder for checkpoint, log and the resulting bundle.
        device: torch device.
        resume: continue from ``out_dir/checkpoint.pt`` (error if absent).
        provenance: extra facts stored in the bundle (data folders, command line, ...).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    train_recs, val_recs = group_split(records, config.val_fraction, config.split_seed)
    if not train_recs:
        raise ValueError("no training images after the split: need more data or groups")
    yield JobEvent("log", message=f"loading {len(train_recs)} train / {len(val_recs)} val images")
    train_x, train_y = load_tensors(train_recs, config.input_size, config.image_channels)
    val_x, val_y = load_tensors(val_recs, config.input_size, config.image_channels)
    train_x, train_y = train_x.to(device), train_y.to(device)

    torch.manual_seed(config.seed)
    network = build_network(
        {**config.network, "image_channels": config.image_channels}
    ).to(device)
    if config.channels_last:
        network = network.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(network).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    schedule = NoiseSchedule.from_config(config.schedule)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    step, best_dice, best_state = 0, -1.0, None
    order: list[int] = []
    elapsed_before = 0.0

    ckpt_path = out / CHECKPOINT_NAME
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no {CHECKPOINT_NAME} in {out}")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        network.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        step, best_dice = int(ckpt["step"]), float(ckpt["best_dice"])
        order = [int(i) for i in ckpt["order"].tolist()]
        elapsed_before = float(ckpt["elapsed"])
        best_state = ckpt.get("best_state") or None
        yield JobEvent("log", step=step, total=config.max_steps, message=f"resumed at step {step}")

    log = (out / LOG_NAME).open("a")
    start = time.monotonic()
    n = len(train_x)
    running = 0.0

    def save_checkpoint() -> None:
        payload = {
            "model": network.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
            "step": step,
            "best_dice": best_dice,
            "order": torch.tensor(order, dtype=torch.long),
            "elapsed": elapsed_before + time.monotonic() - start,
            "best_state": best_state or {},
        }
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(ckpt_path)

    try:
        while step < config.max_steps:
            minutes = (elapsed_before + time.monotonic() - start) / 60
            if config.max_minutes is not None and minutes >= config.max_minutes:
                yield JobEvent("log", step=step, total=config.max_steps,
                               message=f"time budget of {config.max_minutes} min reached")
                break
            if len(order) < config.batch_size:
                order += torch.randperm(n, generator=gen).tolist()
            idx, order = order[: config.batch_size], order[config.batch_size :]
            images, masks = train_x[idx], train_y[idx]
            if config.augment:
                images, masks = augment_batch(images, masks, gen)
            noise = torch.randn(masks.shape, generator=gen).to(device)
            t = sample_timesteps(len(idx), config, schedule.num_timesteps, gen).to(device)
            x_t = schedule.add_noise(masks, noise, t)
            target = training_target(config.prediction_target, masks, noise, t, schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            network.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp_bf16):
                if config.channels_last:
                    x_t = x_t.contiguous(memory_format=torch.channels_last)
                    images = images.contiguous(memory_format=torch.channels_last)
                output = network(x_t, t.float(), images)
            loss = diffusion_loss(output, target, masks, config.prediction_target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
            optimizer.step()
            _ema_update(ema, network, config.ema_decay if step >= config.warmup_steps else 0.0)
            step += 1
            running = loss.item() if step == 1 else 0.95 * running + 0.05 * loss.item()
            if step % 10 == 0 or step == config.max_steps:
                entry = {"step": step, "loss": running, "lr": lr_at(step - 1, config),
                         "seconds": round(elapsed_before + time.monotonic() - start, 2)}
                log.write(json.dumps(entry) + "\n")
                log.flush()
            yield JobEvent("progress", step=step, total=config.max_steps, message="training",
                           values={"loss": running})
            if len(val_x) and (step % config.val_every == 0 or step == config.max_steps):
                dice = validation_dice(ema, schedule, config, val_x.to(device), val_y.to(device))
                if dice > best_dice:
                    best_dice = dice
                    best_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
                log.write(json.dumps({"step": step, "val_dice": dice}) + "\n")
                log.flush()
                yield JobEvent("metric", step=step, total=config.max_steps,
                               message=f"validation Dice {dice:.4f}", values={"val_dice": dice})
            if step % config.checkpoint_every == 0:
                save_checkpoint()
                yield JobEvent("checkpoint", step=step, total=config.max_steps,
                               message=str(ckpt_path))
    finally:
        log.close()

    if len(val_x) and (best_state is None or step % config.val_every):
        dice = validation_dice(ema, schedule, config, val_x.to(device), val_y.to(device))
        if dice > best_dice:
            best_dice, best_state = dice, {k: v.detach().clone() for k, v in ema.state_dict().items()}
    save_checkpoint()
    if best_state:
        ema.load_state_dict(best_state)
    ema = ema.to(memory_format=torch.contiguous_format)
    seconds = elapsed_before + time.monotonic() - start
    bundle_config = {
        "name": config.name,
        "modality": config.modality,
        "role": config.role,
        "prediction_target": config.prediction_target,
        "input": {"size": config.input_size, "channels": config.image_channels,
                  "normalisation": "resize to S x S (bilinear), scale to [0, 1], map to [-1, 1]"},
        "sampler": dict(config.sampler),
        "num_parameters": sum(p.numel() for p in ema.parameters()),
        "metrics": {"model_resolution_dice": best_dice},
        "provenance": {
            **(provenance or {}),
            "train_config": config.to_dict(),
            "steps": step,
            "train_seconds": round(seconds, 1),
            "split": {"method": "group", "val_fraction": config.val_fraction,
                      "seed": config.split_seed, "n_train": len(train_recs),
                      "n_val": len(val_recs), "val_ids": [r.id for r in val_recs]},
        },
    }
    save_bundle(out, ema, schedule, bundle_config)
    return {"steps": step, "best_val_dice": best_dice, "seconds": seconds, "out_dir": str(out),
            "val_records": val_recs}
