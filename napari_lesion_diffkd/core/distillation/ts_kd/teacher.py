"""The TS-KD teacher: a SAM run in *automatic* (prompt-free) mode, optionally LoRA-tuned.

The student is prompt-free (image -> mask), so its teacher must be too. A SAM can be asked
without a user prompt in two ways, both supported (``prompt`` argument):

* ``"none"``: no sparse prompt and the learned "no mask" dense embedding, SAM's own
  behaviour when called without prompts; SAMed (seed 002's reference [43] for the LoRA
  recipe) fine-tunes SAM with LoRA in exactly this mode;
* ``"box"``: a box around the whole (unpadded) image, (0, 0, w, h) in the input frame: an
  ordinary prompt that carries no information about the lesion.

``choose_prompt`` picks the one with the higher Dice on the *training* images (never the
validation split); ``lesion-sam-tiny`` was trained with lesion boxes and clicks only, so
neither mode is in its training distribution, which is what the LoRA stage
(``finetune_teacher``, seed 002 §3.3.1: adapters on q and v of every encoder block, base
frozen, the mask decoder trained as SAMed does, 0.2·CE + 0.8·Dice) is for.

Outputs used for KD, for (B, 3, S, S) normalised padded inputs: the image embedding
(B, C, S/16, S/16) — the encoder's final hidden states after its neck, which is what the
decoder reads — and the single-mask low-resolution logits (B, 1, L, L).
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from napari_lesion_diffkd.core.distillation.ts_kd.data import (
    Item,
    apply_view,
    normalise_pad,
    pad_mask,
)
from napari_lesion_diffkd.core.distillation.ts_kd.losses import segmentation_loss
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.sam.decoding import decode_batch
from napari_lesion_diffkd.core.sam.lora import apply_lora

PromptMode = Literal["none", "box"]
PROMPT_MODES: tuple[str, ...] = ("none", "box")


def sam_normalisation(sam: nn.Module) -> tuple[list[float], list[float]]:
    """(pixel_mean, pixel_std) of a SAM as plain lists (0-255 scale)."""
    return (sam.pixel_mean.flatten().tolist(), sam.pixel_std.flatten().tolist())


def _decode_no_prompt(sam: nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
    """Single-mask logits (B, 1, L, L) without any prompt.

    # Same maths as core/sam/decoding.decode_batch, whose prompt encoder call cannot batch
    # an empty prompt (it then reports batch 1): here the empty sparse prompt and the
    # "no mask" dense embedding are expanded to the batch by hand.
    """
    pe, dec = sam.prompt_encoder, sam.mask_decoder
    batch, c, h, w = embeddings.shape
    dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = out_tokens.unsqueeze(0).expand(batch, -1, -1)
    pos = pe.get_dense_pe().expand(batch, -1, -1, -1)
    hs, src = dec.transformer(embeddings + dense, pos, tokens)
    upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(batch, c, h, w))
    weight = dec.output_hypernetworks_mlps[0](hs[:, 1])  # mask token 0: single-mask output
    return torch.einsum("bc,bchw->bhw", weight, upscaled)[:, None]


def teacher_forward(sam: nn.Module, x: torch.Tensor, input_hws: Sequence[tuple[int, int]],
                    prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a SAM in automatic mode.

    Args:
        sam: a ``segment_anything`` ``Sam``.
        x: (B, 3, S, S) normalised, padded inputs.
        input_hws: (h, w) of each image's unpadded region (for the ``box`` prompt).
        prompt: ``"none"`` or ``"box"``.

    Returns:
        image embeddings (B, C, S/16, S/16) and low-res logits (B, 1, L, L).
    """
    emb = sam.image_encoder(x)
    if prompt == "none":
        return emb, _decode_no_prompt(sam, emb)
    if prompt == "box":
        # XYXY in the input frame: the whole image, nothing about the lesion.
        boxes = torch.tensor([[0.0, 0.0, float(w), float(h)] for h, w in input_hws],
                             dtype=torch.float32, device=x.device)
        low, _ = decode_batch(sam, emb, None, boxes, None, multimask=False)
        return emb, low
    raise ValueError(f"unknown teacher prompt {prompt!r}; known: {PROMPT_MODES}")


def batch_inputs(items: Sequence[Item], views: Sequence[str], size: int,
                 mean: Sequence[float], std: Sequence[float]
                 ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Items seen through views -> (B, 3, S, S) normalised padded inputs and their (h, w)."""
    xs, hws = [], []
    for it, view in zip(items, views):
        img = apply_view(it.image, view)
        xs.append(normalise_pad(img, size, mean, std))
        hws.append((int(img.shape[-2]), int(img.shape[-1])))
    return torch.stack(xs), hws


def batch_targets(items: Sequence[Item], views: Sequence[str], size: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, S, S) targets and valid-region masks of labelled items seen through views."""
    ts, vs = [], []
    for it, view in zip(items, views):
        if it.mask is None:
            raise ValueError(f"{it.id}: no mask")
        t, v = pad_mask(apply_view(it.mask, view), size)
        ts.append(t)
        vs.append(v)
    return torch.stack(ts), torch.stack(vs)


@torch.no_grad()
def training_dice(sam: nn.Module, items: Sequence[Item], prompt: str, batch_size: int = 8,
                  device: torch.device | str = "cpu") -> float:
    """Mean Dice of the automatic-mode masks on labelled items, in the input frame."""
    size = int(sam.image_encoder.img_size)
    mean, std = sam_normalisation(sam)
    scores = []
    for i in range(0, len(items), batch_size):
        chunk = items[i: i + batch_size]
        views = ["identity"] * len(chunk)
        x, hws = batch_inputs(chunk, views, size, mean, std)
        _, low = teacher_forward(sam, x.to(device), hws, prompt)
        up = torch.nn.functional.interpolate(low.float(), size=(size, size), mode="bilinear",
                                             align_corners=False)
        for k, it in enumerate(chunk):
            h, w = hws[k]
            pred = (up[k, 0, :h, :w] > 0).cpu()
            gt = it.mask
            assert gt is not None
            inter = float((pred & gt).sum())
            total = float(pred.sum() + gt.sum())
            scores.append(1.0 if total == 0 else 2 * inter / total)
    return float(np.mean(scores)) if scores else float("nan")


def choose_prompt(sam: nn.Module, items: Sequence[Item],
                  device: torch.device | str = "cpu") -> tuple[str, dict[str, float]]:
    """The automatic prompt with the higher training-image Dice, and both Dice values."""
    scores = {mode: training_dice(sam, items, mode, device=device) for mode in PROMPT_MODES}
    return max(scores, key=lambda m: scores[m]), scores


@dataclass
class TeacherTuneSettings:
    """LoRA fine-tuning of the teacher in automatic mode (see ``TsKdConfig`` teacher_*)."""

    steps: int
    minutes: float | None
    lora_rank: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    ce_weight: float
    dice_weight: float
    views: tuple[str, ...]
    seed: int
    amp_bf16: bool


def finetune_teacher(sam: nn.Module, items: Sequence[Item], prompt: str,
                     settings: TeacherTuneSettings, device: torch.device
                     ) -> Generator[JobEvent, None, dict[str, Any]]:
    """LoRA-tune ``sam`` (in place) on labelled items in automatic mode.

    Adapters (rank ``settings.lora_rank``) go on q and v of every encoder block, the rest
    of the encoder is frozen, the mask decoder trains (seed 002 §3.3.1, SAMed). Plain AdamW
    with a linear warm-up and a cosine over the larger of step and time progress. The run
    is deterministic for a given seed, so an interrupted run is simply repeated on resume.

    Returns:
        ``{"steps", "seconds", "trainable", "loss"}``; ``sam`` ends in eval mode with only
        the trained tensors requiring grad (what ``save_sam_bundle(base=...)`` stores).
    """
    torch.manual_seed(settings.seed)
    for p in sam.parameters():
        p.requires_grad_(False)
    apply_lora(sam, rank=settings.lora_rank, freeze_base=True)
    for p in sam.mask_decoder.parameters():
        p.requires_grad_(True)
    sam.to(device).train()
    trainable = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    size = int(sam.image_encoder.img_size)
    mean, std = sam_normalisation(sam)
    gen = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    start = time.monotonic()
    running = 0.0
    step = 0
    while step < settings.steps:
        minutes = (time.monotonic() - start) / 60
        if settings.minutes is not None and minutes >= settings.minutes:
            break
        while len(order) < settings.batch_size:
            order += torch.randperm(len(items), generator=gen).tolist()
        idx, order = order[: settings.batch_size], order[settings.batch_size:]
        chunk = [items[i] for i in idx]
        views = [settings.views[int(v)] for v in
                 torch.randint(len(settings.views), (len(chunk),), generator=gen)]
        x, hws = batch_inputs(chunk, views, size, mean, std)
        target, valid = batch_targets(chunk, views, size)
        progress = max(step / settings.steps,
                       minutes / settings.minutes if settings.minutes else 0.0)
        lr = warmup_cosine(settings.lr, step, settings.warmup_steps, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.amp_bf16):
            _, low = teacher_forward(sam, x.to(device), hws, prompt)
        loss = segmentation_loss(low, target.to(device), valid.to(device),
                                 settings.ce_weight, settings.dice_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        step += 1
        value = float(loss.detach())
        running = value if step == 1 else 0.9 * running + 0.1 * value
        yield JobEvent("progress", step=step, total=settings.steps,
                       message="teacher LoRA", values={"loss": running})
    sam.eval()
    return {"steps": step, "seconds": time.monotonic() - start,
            "trainable": sum(p.numel() for p in trainable), "loss": running}


def warmup_cosine(base_lr: float, step: int, warmup: int, progress: float) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine over ``progress`` in [0, 1]."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, progress)))
