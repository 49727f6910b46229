"""Training a promptable SAM on image/mask folders with simulated prompts.

``train_promptable`` trains ``lesion-sam-tiny`` from scratch, or fine-tunes any SAM (a bundle,
an official checkpoint) fully or with LoRA (seed 002 §3.3.1: adapters on q and v of every
image-encoder block, base frozen; the mask decoder trained too by default, as SAMed does).

Each step takes a batch of images (resized so the longest side is S, augmented, normalised
and padded as at inference), encodes them once and decodes one simulated prompt per image.
All images of a step share a prompt *layout*, so the prompt tensors batch exactly as
``segment_anything``'s prompt encoder would see them at inference:

* ``box``: the lesion box with each side jittered by 5-10% of the box size;
* ``point``: one positive click (multimask output, the best of 3 candidates is trained);
* ``points``: 2-3 clicks, positive inside, negative on nearby background;
* ``mask_click``: a degraded mask (eroded, dilated, shifted) as mask prompt + one click
  sampled from its error region (positive where lesion was missed, negative on a false
  positive);
* ``mask``: the degraded mask alone.

With probability ``refine_prob`` a second pass follows: the first pass's low-resolution
logits (detached) become the mask prompt, and one more click is sampled from the error of
the first prediction (SAM's interactive training). Loss per pass: 0.2·BCE + 0.8·Dice (seed
002 eq. 4) on the logits upsampled to the S x S input and restricted to the image (padding
ignored), plus ``iou_weight`` x MSE between predicted and actual IoU so that the returned
score means something.

**Frozen encoder, cached embeddings** (``freeze_encoder``, the CPU way to fine-tune
``medsam-lite``, whose encoder costs about 75 GFLOPs per image against about 3.6 per prompt
for the decoder): the image encoder does not train, so each training image is encoded once
(and once more left-right mirrored with ``embedding_flips``), in eval mode, fp32, with the
model's own ``preprocess`` exactly as at inference (LiteMedSAM: min-max to [0, 1], zero pad
to 256), and the (C, h, w) embedding is stored as fp16 safetensors under
``<out>/embeddings/<encoder fingerprint>/`` (or ``embedding_cache``), one file per image
content and flip. Epochs then run the prompt encoder and mask decoder only. Augmentation is
the mirror alone (no turns, no brightness: they would need new embeddings). A killed run
keeps what it cached; files are keyed by image content and by a hash of the encoder's
weights, so a cache can be shared by runs. With LoRA the encoder changes: no cache.

Models with BatchNorm (TinyViT) keep it in eval mode when fine-tuning a base: running
statistics stay those of the pretrained model (batches of a few images would wreck them).

The split is ``datasets.group_split`` (group-aware, per dataset). The generator yields
``JobEvent``s and can be stopped between yields; ``checkpoint.pt`` (tensors and numbers only,
written atomically every ``checkpoint_every`` steps and every ``checkpoint_seconds``) allows
``resume``. The result is a SAM bundle in ``out_dir`` plus ``eval.json`` with
``evaluation.evaluate_prompts`` on every dataset's validation split.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.checkpoint_load import load_checkpoint
from napari_lesion_diffkd.core.checkpoint_save import save_checkpoint as save_checkpoint_file
from napari_lesion_diffkd.core.config_files import check_keys, read_mapping
from napari_lesion_diffkd.core.data.datasets import PairRecord, group_split, read_pair
from napari_lesion_diffkd.core.data.locate import DATASETS_BY_MODALITY
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.sam.architectures import (
    TINY_ARCH,
    TinySamConfig,
    build_tiny_sam,
    count_parameters,
    low_res_size,
)
from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy
from napari_lesion_diffkd.core.sam.decoding import decode_batch
from napari_lesion_diffkd.core.sam.evaluation import evaluate_prompts
from napari_lesion_diffkd.core.sam.inputs import (
    mask_to_input_frame,
    padded_mask_to_logits,
    resize_longest_side,
    to_uint8_rgb,
)
from napari_lesion_diffkd.core.sam.lora import apply_lora, save_lora
from napari_lesion_diffkd.core.sam.prompts import (
    jitter_box,
    random_bad_mask,
    sample_error_click,
    sample_negative_click,
    sample_positive_click,
)
from napari_lesion_diffkd.core.sam.sam_bundle import base_reference, save_sam_bundle

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"
EVAL_NAME = "eval.json"
ADAPTERS_NAME = "lora_adapters.safetensors"
EMBEDDINGS_DIR = "embeddings"
LAYOUTS = ("box", "point", "points", "mask_click", "mask")


@dataclass
class SamTrainConfig:
    """A promptable-SAM training run (YAML/JSON keys = attribute names).

    Attributes:
        name, modality: bundle name and modality label.
        base: ``None`` trains ``lesion-sam-tiny`` (``tiny`` = ``TinySamConfig`` overrides)
            from random weights; otherwise a name/path for ``loading.load_sam`` to start from.
        lora_rank, lora_alpha: LoRA on q/v of the image encoder (0 = no LoRA: every
            parameter trains); alpha defaults to the rank.
        train_decoder: with LoRA, also train the mask decoder (and prompt encoder).
        freeze_encoder: without LoRA, train the prompt encoder and mask decoder only (the
            image encoder frozen); ignored with LoRA (the adapters are in the encoder).
        cache_embeddings: with a frozen encoder, encode each image once and read the
            embeddings from disk (see the module docstring). embedding_flips: cache the
            left-right mirror too (the only augmentation then). embedding_cache: folder of
            the cache (default ``<out>/embeddings``).
        batch_size, lr, weight_decay, warmup_steps, grad_clip: AdamW; LR warms up linearly,
            then follows a cosine over the run's progress, the larger of step / max_steps
            and elapsed / max_minutes (so a time-limited run still anneals).
        max_steps, max_minutes: stop at whichever comes first.
        bce_weight, dice_weight, iou_weight: loss weights.
        prompt_weights: probability of each layout (see module docstring).
        refine_prob: probability of the second, corrective pass.
        box_jitter: (low, high) fraction of the box size each side moves.
        val_fraction, split_seed: group-aware split. val_every: steps between validations;
        val_max_images: per dataset, images scored during training (all at the end).
        checkpoint_every: steps between ``checkpoint.pt`` writes; checkpoint_seconds: also
            write one when this many seconds passed since the last (None: steps only).
        amp_bf16: bf16 autocast for the forward pass (about 1.4x faster on this CPU).
        free_orientation: modalities that get vertical flips and 90° turns (no up/down).
        seed: initialisation, data order, prompts and augmentation.
    """

    name: str = "lesion-sam-tiny"
    modality: str = "any"
    base: str | None = None
    tiny: dict[str, Any] = field(default_factory=dict)
    lora_rank: int = 0
    lora_alpha: float | None = None
    train_decoder: bool = True
    freeze_encoder: bool = False
    cache_embeddings: bool = True
    embedding_flips: bool = True
    embedding_cache: str | None = None
    batch_size: int = 8
    lr: float = 8e-4
    weight_decay: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 1.0
    max_steps: int = 20000
    max_minutes: float | None = None
    bce_weight: float = 0.2
    dice_weight: float = 0.8
    iou_weight: float = 0.5
    prompt_weights: dict[str, float] = field(default_factory=lambda: {
        "box": 0.35, "point": 0.15, "points": 0.1, "mask_click": 0.3, "mask": 0.1})
    refine_prob: float = 0.5
    box_jitter: tuple[float, float] = (0.05, 0.10)
    val_fraction: float = 0.2
    split_seed: int = 0
    val_every: int = 500
    val_max_images: int = 40
    checkpoint_every: int = 250
    checkpoint_seconds: float | None = 120.0
    amp_bf16: bool = True
    free_orientation: tuple[str, ...] = ("dermoscopy",)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.prompt_weights) - set(LAYOUTS))
        if unknown:
            raise ValueError(f"unknown prompt layouts {unknown}; known: {LAYOUTS}")
        if sum(self.prompt_weights.values()) <= 0:
            raise ValueError("prompt_weights must have a positive sum")
        self.box_jitter = tuple(float(v) for v in self.box_jitter)  # type: ignore[assignment]
        self.free_orientation = tuple(self.free_orientation)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamTrainConfig:
        check_keys(cls, data, "SAM training")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> SamTrainConfig:
        """Read a YAML or JSON config file."""
        return cls.from_dict(read_mapping(path))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["box_jitter"] = list(self.box_jitter)
        d["free_orientation"] = list(self.free_orientation)
        return d


#: Where a fine-tune of ``medsam-lite`` starts (the Jobs panel's pick, and
#: ``configs/lesion-medsam.yaml``): the decoder (and prompt encoder) on cached embeddings,
#: MedSAM's own AdamW settings (lr 1e-4, weight decay 0.01), a short warm-up.
MEDSAM_LITE_START: dict[str, Any] = {
    "name": "lesion-medsam", "base": "medsam-lite", "freeze_encoder": True,
    "cache_embeddings": True, "embedding_flips": True, "lr": 1e-4, "weight_decay": 0.01,
    "warmup_steps": 20, "batch_size": 8, "val_every": 200, "val_max_images": 10,
    "checkpoint_every": 100,
}


def medsam_lite_start_config() -> dict[str, Any]:
    """The ``SamTrainConfig`` fields of a ``medsam-lite`` fine-tune (defaults + the above)."""
    return {**SamTrainConfig().to_dict(), **MEDSAM_LITE_START}


# ------------------------------------------------------------------------------ data


@dataclass
class _Item:
    """One training image in the model-input frame: (3, H', W') uint8 and (H', W') bool."""

    image: torch.Tensor
    mask: torch.Tensor
    free_orientation: bool


def _modality_of(dataset: str) -> str | None:
    for modality, names in DATASETS_BY_MODALITY.items():
        if dataset in names:
            return modality
    return None


def _load_items(records: Sequence[PairRecord], img_size: int,
                free: Sequence[str]) -> list[_Item]:
    items = []
    for r in records:
        image, mask = read_pair(r)
        resized = resize_longest_side(to_uint8_rgb(image), img_size)
        m = mask_to_input_frame(mask, resized.shape[:2])
        if not m.any():  # the lesion vanished at this size: no box or click can be made
            continue
        items.append(_Item(torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))),
                           torch.from_numpy(m), _modality_of(r.dataset) in free))
    return items


def _augment(item: _Item, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips (and 90° turns where orientation is free) + mild brightness/contrast.

    Returns (3, h, w) float 0-255 and (h, w) bool.
    """
    img, m = item.image.float(), item.mask
    u = torch.rand(5, generator=gen).tolist()
    if u[0] < 0.5:
        img, m = img.flip(-1), m.flip(-1)
    if item.free_orientation:
        if u[1] < 0.5:
            img, m = img.flip(-2), m.flip(-2)
        k = int(u[2] * 4) % 4
        if k:
            img, m = torch.rot90(img, k, (-2, -1)), torch.rot90(m, k, (-2, -1))
    if u[3] < 0.5:
        contrast = 0.8 + 0.4 * u[4]
        brightness = 25.0 * (float(torch.rand(1, generator=gen)) - 0.5)
        mean = img.mean()
        img = ((img - mean) * contrast + mean + brightness).clamp(0, 255)
    return img.contiguous(), m.contiguous()


def _augment_cached(item: _Item, flips: bool,
                    gen: torch.Generator) -> tuple[bool, torch.Tensor]:
    """The augmentation a cached embedding allows: a left-right mirror (with ``flips``).

    Returns (mirrored?, (h, w) bool mask in that frame)."""
    u = float(torch.rand(1, generator=gen))
    flip = flips and u < 0.5
    return flip, (item.mask.flip(-1) if flip else item.mask).contiguous()


def encoder_fingerprint(sam: nn.Module) -> str:
    """16 hex digits of a SHA-256 over the image encoder's tensors (names, shapes, values):
    a cached embedding is only reused by the encoder that computed it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(sam.image_encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


class EmbeddingCache:
    """Image embeddings of a frozen encoder on disk, one fp16 safetensors file per image
    content and mirror (see the module docstring).

    Args:
        folder: the cache root; files go to ``folder/<encoder fingerprint>/``.
        sam: the model whose ``preprocess`` + ``image_encoder`` compute the embeddings.
        items: the training images (model-input frame, uint8).
    """

    def __init__(self, folder: Path, sam: nn.Module, items: Sequence[_Item]) -> None:
        self.folder = Path(folder) / encoder_fingerprint(sam)
        self.sam = sam
        self.keys = []
        for item in items:
            digest = hashlib.sha256(str(tuple(item.image.shape)).encode())
            digest.update(item.image.contiguous().numpy().tobytes())
            self.keys.append(digest.hexdigest()[:32])
        self.encoded = 0  # encoder passes run by this object (tests, logs)

    def path(self, index: int, flip: bool) -> Path:
        return self.folder / f"{self.keys[index]}{'-flip' if flip else ''}.safetensors"

    @torch.no_grad()
    def _encode(self, image: torch.Tensor, device: torch.device) -> torch.Tensor:
        # As at inference (PromptSession._encode): 0-255 float, the model's preprocess, fp32.
        x = self.sam.preprocess(image.float()[None].to(device))
        return self.sam.image_encoder(x)[0].cpu()

    def fill(self, items: Sequence[_Item], flips: bool, device: torch.device,
             total_steps: int) -> Generator[JobEvent, None, None]:
        """Encode every (image, mirror) that has no file yet; an event per image."""
        from safetensors.torch import save as save_tensors

        from napari_lesion_diffkd.core.bundle import atomic_write_bytes

        self.folder.mkdir(parents=True, exist_ok=True)
        was_training = self.sam.training
        self.sam.eval()
        todo = [(i, f) for i in range(len(items)) for f in ((False, True) if flips else (False,))
                if not self.path(i, f).is_file()]
        start = time.monotonic()
        try:
            for n, (i, flip) in enumerate(todo, 1):
                image = items[i].image.flip(-1) if flip else items[i].image
                emb = self._encode(image, device).to(torch.float16).contiguous()
                atomic_write_bytes(self.path(i, flip), save_tensors({"embedding": emb}))
                self.encoded += 1
                if n == 1 or n % 10 == 0 or n == len(todo):
                    rate = (time.monotonic() - start) / n
                    yield JobEvent("log", step=0, total=total_steps,
                                   message=f"cached embedding {n}/{len(todo)} "
                                           f"({rate:.1f} s each)")
        finally:
            self.sam.train(was_training)

    def load(self, index: int, flip: bool) -> torch.Tensor:
        """The (C, h, w) float32 embedding of a training image (mirrored or not)."""
        from safetensors.torch import load_file

        return load_file(str(self.path(index, flip)))["embedding"].float()


# ------------------------------------------------------------------------------ prompts


@dataclass
class _Prompts:
    points: tuple[torch.Tensor, torch.Tensor] | None
    boxes: torch.Tensor | None
    masks: torch.Tensor | None
    multimask: bool
    clicks: list[list[tuple[float, float, int]]]  # per image, for the refinement pass
    box_list: list[np.ndarray] | None


def _pad_click(click: tuple[float, float, int] | None) -> tuple[float, float, int]:
    # SAM's "not a point": label -1 makes the prompt encoder ignore the coordinates.
    return click if click is not None else (0.0, 0.0, -1)


def _to_points(clicks: list[list[tuple[float, float, int]]],
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.tensor([[[c[0], c[1]] for c in row] for row in clicks], dtype=torch.float32)
    labels = torch.tensor([[c[2] for c in row] for row in clicks], dtype=torch.int64)
    return coords.to(device), labels.to(device)


def _simulate(layout: str, gts: list[np.ndarray], size: int, low_res: tuple[int, int],
              rng: np.random.Generator, jitter: tuple[float, float],
              device: torch.device) -> _Prompts:
    """First-pass prompts for a batch of (h, w) ground truths (model-input frame)."""
    clicks: list[list[tuple[float, float, int]]] = [[] for _ in gts]
    boxes = masks = None
    box_list = None
    multimask = False
    if layout == "box":
        box_list = [jitter_box(mask_to_xyxy(g), rng, g.shape, *jitter) for g in gts]
        boxes = torch.tensor(np.stack(box_list), dtype=torch.float32, device=device)
    elif layout in ("point", "points"):
        n = 1 if layout == "point" else int(rng.integers(2, 4))
        for i, g in enumerate(gts):
            clicks[i].append(_pad_click(sample_positive_click(g, rng)))
            for _ in range(n - 1):
                c = sample_negative_click(g, rng) if rng.random() < 0.5 \
                    else sample_positive_click(g, rng)
                clicks[i].append(_pad_click(c))
        multimask = layout == "point"
    elif layout in ("mask_click", "mask"):
        logits = []
        for i, g in enumerate(gts):
            bad = random_bad_mask(g, rng)
            padded = np.zeros((size, size), dtype=bool)
            padded[: g.shape[0], : g.shape[1]] = bad
            logits.append(padded_mask_to_logits(padded, low_res))
            if layout == "mask_click":
                clicks[i].append(_pad_click(sample_error_click(bad, g, rng)))
        masks = torch.from_numpy(np.stack(logits))[:, None].to(device)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    points = _to_points(clicks, device) if clicks[0] else None
    return _Prompts(points, boxes, masks, multimask, clicks, box_list)


# ------------------------------------------------------------------------------ loss


def _loss(low_res: torch.Tensor, iou_pred: torch.Tensor, gt: torch.Tensor,
          valid: torch.Tensor, config: SamTrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """0.2·BCE + 0.8·Dice (+ IoU MSE) with the best of M candidates per image.

    Args:
        low_res: (B, M, L, L) logits. iou_pred: (B, M). gt, valid: (B, 1, S, S) float 0/1.

    Returns:
        scalar loss and (B,) index of the candidate trained per image.
    """
    size = gt.shape[-1]
    up = F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)
    target = gt.expand_as(up)
    area = valid.sum(dim=(2, 3)).clamp(min=1.0)
    bce = (F.binary_cross_entropy_with_logits(up, target, reduction="none") * valid
           ).sum(dim=(2, 3)) / area
    prob = torch.sigmoid(up) * valid
    inter = (prob * target).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3)) + 1)
    per = config.bce_weight * bce + config.dice_weight * dice  # (B, M)
    best = per.detach().argmin(dim=1)
    seg = per.gather(1, best[:, None]).mean()
    with torch.no_grad():
        hard = (up > 0).float() * valid
        inter_h = (hard * target).sum(dim=(2, 3))
        union = hard.sum(dim=(2, 3)) + target.sum(dim=(2, 3)) - inter_h
        iou_true = torch.where(union > 0, inter_h / union.clamp(min=1.0),
                               torch.ones_like(union))
    iou_loss = F.mse_loss(iou_pred.float(), iou_true)
    return seg + config.iou_weight * iou_loss, best


# ------------------------------------------------------------------------------ model


def _uses_cache(config: SamTrainConfig) -> bool:
    return bool(config.freeze_encoder and config.lora_rank == 0 and config.cache_embeddings)


def _set_train_mode(sam: nn.Module, fine_tune: bool) -> nn.Module:
    """``sam.train()``, BatchNorm kept in eval mode when fine-tuning a pretrained base."""
    sam.train()
    if fine_tune:
        for module in sam.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    return sam


def _build_model(config: SamTrainConfig
                 ) -> tuple[nn.Module, str, TinySamConfig | None, str, Any]:
    """(model, arch, tiny config or None, description, base config) in train mode with
    trainable flags; base config: the loaded base's config dict plus ``_reference`` (how a
    partial bundle names it), {} from scratch."""
    tiny_cfg = None
    base_info: dict[str, Any] = {}
    if config.base is None:
        tiny_cfg = TinySamConfig.from_dict(config.tiny)
        sam, arch, desc = build_tiny_sam(tiny_cfg), TINY_ARCH, "lesion-sam-tiny (random init)"
    else:
        from napari_lesion_diffkd.core.sam.loading import load_sam

        loaded = load_sam(config.base)
        sam, arch, desc = loaded.model, loaded.arch, f"{loaded.name} ({loaded.path})"
        spec = loaded.config.get("sam") or {}
        if spec.get("tiny_config"):
            tiny_cfg = TinySamConfig.from_dict(spec["tiny_config"])
        if loaded.config.get("lora"):
            raise ValueError(f"{config.base}: already has LoRA adapters; start from its base")
        base_ref = config.base
        if Path(base_ref).exists():  # a relative path would break once the cwd changes
            base_ref = str(Path(base_ref).resolve())
        base_info = {**loaded.config, "_reference": base_reference(loaded, base_ref)}
    for p in sam.parameters():
        p.requires_grad_(True)
    if config.lora_rank > 0:
        apply_lora(sam, rank=config.lora_rank, alpha=config.lora_alpha, freeze_base=True)
        if config.train_decoder:
            for module in (sam.mask_decoder, sam.prompt_encoder):
                for p in module.parameters():
                    p.requires_grad_(True)
    elif config.freeze_encoder:
        for p in sam.image_encoder.parameters():
            p.requires_grad_(False)
    return (_set_train_mode(sam, config.base is not None), arch, tiny_cfg, desc, base_info)


def _lr_at(step: int, progress: float, config: SamTrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(1.0, progress)))


# ------------------------------------------------------------------------------ training


def train_promptable(
    config: SamTrainConfig,
    records: Sequence[PairRecord],
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    resume: bool = False,
    provenance: dict[str, Any] | None = None,
) -> Generator[JobEvent, None, dict[str, Any]]:
    """Train a promptable SAM; yields events, returns a summary dict.

    Args:
        config: the run configuration.
        records: all image/mask pairs; split here by group (``config.val_fraction``).
        out_dir: checkpoint, JSONL log, final bundle, ``eval.json`` (and LoRA adapters).
        device: torch device.
        resume: continue from ``out_dir/checkpoint.pt`` (the prompt RNG restarts from a
            seed derived from the step, so a resumed run is reproducible but not
            bit-identical to an uninterrupted one).
        provenance: facts stored in the bundle (data folders, command line, ...).

    Returns:
        ``{"steps", "seconds", "best_val", "out_dir", "num_parameters", "trainable",
        "eval": evaluate_prompts summary per dataset}``.
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if resume and not ckpt_path.is_file():  # fail before any data is loaded
        raise FileNotFoundError(f"resume: no {CHECKPOINT_NAME} in {out}")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    train_recs, val_recs = group_split(records, config.val_fraction, config.split_seed)
    if not train_recs:
        raise ValueError("no training images after the split: need more data or groups")
    torch.manual_seed(config.seed)
    sam, arch, tiny_cfg, desc, base_info = _build_model(config)
    fine_tune = config.base is not None
    encoder_trains = any(p.requires_grad for p in sam.image_encoder.parameters())
    sam.to(device)
    size = int(sam.image_encoder.img_size)
    low_res = low_res_size(sam)
    yield JobEvent("log", message=f"model {desc}: {count_parameters(sam)} parameters, "
                                  f"{count_parameters(sam, True)} trainable; input {size} px")
    yield JobEvent("log", message=f"loading {len(train_recs)} train / {len(val_recs)} val images")
    items = _load_items(train_recs, size, config.free_orientation)
    if not items:
        raise ValueError("no training image has a lesion left at the model's input size")
    cache = None
    if _uses_cache(config):
        cache = EmbeddingCache(Path(config.embedding_cache) if config.embedding_cache
                               else out / EMBEDDINGS_DIR, sam, items)
        yield JobEvent("log", message=f"frozen encoder: embeddings of {len(items)} images"
                                      f"{' (and their mirrors)' if config.embedding_flips else ''}"
                                      f" cached in {cache.folder}")
        yield from cache.fill(items, config.embedding_flips, device, config.max_steps)
    val_pairs = []
    for r in val_recs:
        image, mask = read_pair(r)
        if mask.any():
            val_pairs.append((image, mask, r.dataset))
    val_subset = []
    for name in sorted({p[2] for p in val_pairs}):
        val_subset += [p for p in val_pairs if p[2] == name][: config.val_max_images]

    trainable = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    step, best_val, best_state, elapsed_before = 0, -1.0, None, 0.0
    order: list[int] = []
    if resume:
        ckpt = load_checkpoint(ckpt_path, device)  # refused pickle: one clear error
        sam.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        step, best_val = int(ckpt["step"]), float(ckpt["best_val"])
        elapsed_before = float(ckpt["elapsed"])
        order = [int(i) for i in ckpt["order"].tolist()]
        best_state = ckpt.get("best_state") or None
        yield JobEvent("log", step=step, total=config.max_steps, message=f"resumed at step {step}")
    rng = np.random.default_rng([config.seed, step])
    layouts = [k for k in LAYOUTS if config.prompt_weights.get(k, 0) > 0]
    probs = np.array([config.prompt_weights[k] for k in layouts], dtype=np.float64)
    probs /= probs.sum()
    start = time.monotonic()

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - start

    def write_log(entry: dict[str, Any]) -> None:
        with (out / LOG_NAME).open("a") as log:
            log.write(json.dumps(entry) + "\n")

    def save_checkpoint() -> None:
        payload = {"model": sam.state_dict(), "optimizer": optimizer.state_dict(),
                   "generator": gen.get_state(), "step": step, "best_val": best_val,
                   "elapsed": elapsed(), "order": torch.tensor(order, dtype=torch.long),
                   "best_state": best_state or {}}
        # Atomic, fsynced; a full disk leaves the previous checkpoint and no partial file.
        save_checkpoint_file(payload, ckpt_path)

    val_session = None

    def validate() -> JobEvent | None:
        nonlocal best_val, best_state, val_session
        if not val_subset:
            return None
        sam.eval()
        target: Any = sam
        if not encoder_trains:  # same embeddings at every validation: encode them once
            if val_session is None:
                from napari_lesion_diffkd.core.sam.session import PromptSession

                val_session = PromptSession(sam, device=device, cache_size=len(val_subset),
                                            test_time_flip=False)
            target = val_session
        summary = evaluate_prompts(target, val_subset, device=device)["all"]
        _set_train_mode(sam, fine_tune)
        score = float(np.mean([summary["box_dice"], summary["erode_after"],
                               summary["shift_after"]]))
        if score > best_val:
            best_val = score
            best_state = {k: v.detach().clone() for k, v in sam.state_dict().items()}
        values = {"val_score": score, "val_box_dice": summary["box_dice"],
                  "val_erode_after": summary["erode_after"],
                  "val_shift_after": summary["shift_after"]}
        write_log({"step": step, **values})
        return JobEvent("metric", step=step, total=config.max_steps,
                        message=f"validation box Dice {summary['box_dice']:.4f}, after a click "
                                f"{summary['erode_after']:.4f} (eroded) / "
                                f"{summary['shift_after']:.4f} (shifted)", values=values)

    running = 0.0
    last_checkpoint = time.monotonic()
    while step < config.max_steps:
        minutes = elapsed() / 60
        if config.max_minutes is not None and minutes >= config.max_minutes:
            yield JobEvent("log", step=step, total=config.max_steps,
                           message=f"time budget of {config.max_minutes} min reached")
            break
        while len(order) < config.batch_size:
            order += torch.randperm(len(items), generator=gen).tolist()
        idx, order = order[: config.batch_size], order[config.batch_size:]
        images, gts_t, gts_np, valid = [], [], [], []
        for i in idx:
            if cache is not None:
                flip, m = _augment_cached(items[i], config.embedding_flips, gen)
                images.append(cache.load(i, flip).to(device))
            else:
                img, m = _augment(items[i], gen)
                images.append(sam.preprocess(img.to(device)))  # normalise, then pad (as SAM)
            h, w = m.shape
            g = torch.zeros(size, size)
            g[:h, :w] = m.float()
            v = torch.zeros(size, size)
            v[:h, :w] = 1.0
            gts_t.append(g)
            valid.append(v)
            gts_np.append(m.numpy())
        x = torch.stack(images)
        gt = torch.stack(gts_t)[:, None].to(device)
        valid_t = torch.stack(valid)[:, None].to(device)
        layout = str(rng.choice(layouts, p=probs))
        prompts = _simulate(layout, gts_np, size, low_res, rng, config.box_jitter, device)
        progress = max(step / config.max_steps,
                       (elapsed() / 60 / config.max_minutes) if config.max_minutes else 0.0)
        lr = _lr_at(step, progress, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp_bf16):
            if cache is not None:
                emb = x  # (B, C, h, w) cached embeddings
            elif encoder_trains:
                emb = sam.image_encoder(x)
            else:
                with torch.no_grad():
                    emb = sam.image_encoder(x)
            low, iou = decode_batch(sam, emb, prompts.points, prompts.boxes, prompts.masks,
                                    prompts.multimask)
        loss, best = _loss(low, iou, gt, valid_t, config)
        if rng.random() < config.refine_prob:
            prev = low.gather(1, best[:, None, None, None].expand(-1, 1, *low.shape[-2:]))
            prev = prev.detach().float()
            pred = (F.interpolate(prev, size=(size, size), mode="bilinear",
                                  align_corners=False)[:, 0] > 0).cpu().numpy()
            clicks = [row + [_pad_click(sample_error_click(p[: g.shape[0], : g.shape[1]], g,
                                                           rng))]
                      for row, p, g in zip(prompts.clicks, pred, gts_np)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp_bf16):
                low2, iou2 = decode_batch(sam, emb, _to_points(clicks, device), prompts.boxes,
                                          prev, multimask=False)
            loss2, _ = _loss(low2, iou2, gt, valid_t, config)
            loss = 0.5 * (loss + loss2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        step += 1
        value = float(loss.detach())
        running = value if step == 1 else 0.95 * running + 0.05 * value
        if step % 10 == 0 or step == config.max_steps:
            write_log({"step": step, "loss": running, "lr": lr, "seconds": round(elapsed(), 2)})
        yield JobEvent("progress", step=step, total=config.max_steps, message="training",
                       values={"loss": running})
        if step % config.val_every == 0 or step == config.max_steps:
            event = validate()
            if event is not None:
                yield event
        due = bool(config.checkpoint_seconds is not None and step < config.max_steps
                   and time.monotonic() - last_checkpoint >= config.checkpoint_seconds)
        if step % config.checkpoint_every == 0 or due:
            save_checkpoint()
            last_checkpoint = time.monotonic()
            yield JobEvent("checkpoint", step=step, total=config.max_steps,
                           message=str(ckpt_path))

    if step % config.val_every and step != config.max_steps:
        event = validate()  # stopped by the time budget between two validations
        if event is not None:
            yield event
    save_checkpoint()
    seconds = elapsed()
    final = copy.deepcopy(sam).eval()
    if best_state:
        final.load_state_dict(best_state)
    yield JobEvent("log", message=f"scoring {len(val_pairs)} validation images")
    evaluation = evaluate_prompts(final, val_pairs, device=device) if val_pairs else {
        "all": {"n": 0}, "per_dataset": {}, "rows": []}
    (out / EVAL_NAME).write_text(json.dumps(evaluation, indent=1) + "\n")
    # A partial bundle (a base with frozen parts) stores only the trained tensors and names
    # its base (by SHA-256 where the base knows it: medsam-lite).
    partial = fine_tune and any(not p.requires_grad for p in sam.parameters())
    base_ref = base_info.get("_reference")
    bundle_config = {
        "name": config.name, "modality": config.modality,
        "metrics": {**{k: v for k, v in evaluation["all"].items()},
                    "per_dataset": evaluation["per_dataset"]},
        "provenance": {**(provenance or {}), "train_config": config.to_dict(), "steps": step,
                       "seconds": round(seconds, 1), "base": config.base,
                       "val_ids": [r.id for r in val_recs]},
    }
    for key in ("test_time_flip", "mask_prompts"):  # how the base is best prompted
        if key in base_info:
            bundle_config[key] = base_info[key]
    if "mask_prompts" in bundle_config and (config.prompt_weights.get("mask", 0) > 0
                                            or config.prompt_weights.get("mask_click", 0) > 0):
        bundle_config["mask_prompts"] = True  # it was trained with mask prompts now
    save_sam_bundle(out, final, bundle_config, arch,
                    tiny_config=tiny_cfg if not partial else None,
                    base=base_ref if partial else None)
    if config.lora_rank > 0:
        base_text = base_ref if isinstance(base_ref, str) else json.dumps(base_ref)
        save_lora(out / ADAPTERS_NAME, final, metadata={"base": str(base_text)})
    yield JobEvent("checkpoint", step=step, total=config.max_steps, message=str(out))
    return {"steps": step, "seconds": seconds, "best_val": best_val, "out_dir": str(out),
            "encoder_passes_cached": cache.encoded if cache is not None else 0,
            "num_parameters": count_parameters(final),
            "trainable": sum(p.numel() for p in trainable),
            "eval": {"all": evaluation["all"], "per_dataset": evaluation["per_dataset"]}}
