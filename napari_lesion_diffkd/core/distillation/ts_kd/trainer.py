"""``run_ts_kd``: seed 002's task-specific KD as one generator of progress events.

Stages (each yields ``JobEvent``s and can be stopped between yields):

1. **teacher** (``teacher.py``): load the SAM, pick its automatic prompt on the training
   images, LoRA-tune it on the labelled training images; written to ``OUT/teacher/`` (a SAM
   bundle holding only the adapters and the decoder, naming its base) and ``teacher.json``;
2. **generated images** (seed 002 §3.2, ``core/diffusion/image_generator.py``): train the
   image generator on the training images, draw ``generated_images`` images, write them to
   ``OUT/generated/`` with their PSNR/MSE against the nearest training image
   (``generated_quality.json``);
3. **teacher cache**: the teacher's image embedding and low-res logits for every transfer
   image (training images, ``--unlabeled`` images, generated images) under every view,
   fp16, in ``OUT/teacher_cache.pt`` with a fingerprint of teacher, prompt, images and views;
4. **kd**: the student + a 1x1 adapter learn ``hidden_weight`` · MSE(adapter(student hidden),
   teacher embedding) + ``logit_weight`` · MSE(student logits, teacher logits) (eqs. 5-6);
5. **finetune**: the student (adapter dropped) learns the labels with 0.2·CE + 0.8·Dice;
6. validation Dice of the student and of the teacher (base and tuned, automatic mode) on
   the group-aware validation split, ``eval.json``, and the student bundle in ``OUT``.

Stages 4-5 write ``checkpoint.pt`` (tensors and numbers only, ``weights_only`` loading)
every ``checkpoint_every`` steps and at each stage's end; ``resume`` continues exactly where
it stopped (model, optimiser, data order and RNG state are restored: with step budgets the
result equals an uninterrupted run). Stages 1-3 reuse their files when present and are
otherwise re-run (their JSON files record the settings they were made with and are
reused only when those match); they are deterministic for a fixed seed and step count.
``train_log.jsonl`` gets one line per 5 steps.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Generator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.checkpoint_load import load_checkpoint
from napari_lesion_diffkd.core.data.datasets import (
    IMAGE_SUFFIXES,
    PairRecord,
    group_split,
    read_image_file,
)
from napari_lesion_diffkd.core.diffusion.image_generator import (
    sample_images,
    save_generator,
    to_generator_images,
    train_image_generator,
)
from napari_lesion_diffkd.core.diffusion.image_generator_metrics import nearest_real_summary
from napari_lesion_diffkd.core.distillation.ts_kd.bundle import (
    predict,
    save_student_bundle,
    size_mib,
)
from napari_lesion_diffkd.core.distillation.ts_kd.config import TsKdConfig
from napari_lesion_diffkd.core.distillation.ts_kd.data import (
    Item,
    apply_view,
    image_to_item,
    load_pair_items,
    normalise_pad,
    typical_input_hw,
)
from napari_lesion_diffkd.core.distillation.ts_kd.evaluation import (
    evaluate_pairs,
    teacher_predict,
)
from napari_lesion_diffkd.core.distillation.ts_kd.losses import (
    hidden_kd_loss,
    logit_kd_loss,
    segmentation_loss,
)
from napari_lesion_diffkd.core.distillation.ts_kd.student import HiddenAdapter, ViTFPNStudent
from napari_lesion_diffkd.core.distillation.ts_kd.teacher import (
    TeacherTuneSettings,
    batch_targets,
    choose_prompt,
    finetune_teacher,
    sam_normalisation,
    teacher_forward,
    training_dice,
    warmup_cosine,
)
from napari_lesion_diffkd.core.jobs import JobEvent

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"
CACHE_NAME = "teacher_cache.pt"
EVAL_NAME = "eval.json"
TEACHER_DIR = "teacher"
TEACHER_INFO = "teacher.json"
GENERATOR_DIR = "generator"
GENERATED_DIR = "generated"
QUALITY_NAME = "generated_quality.json"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------ stage 1


def _teacher_stage(config: TsKdConfig, teacher_ref: str, items: Sequence[Item], out: Path,
                   device: torch.device
                   ) -> Generator[JobEvent, None, tuple[nn.Module, str, dict[str, Any]]]:
    """The (tuned) teacher in eval mode, its automatic prompt and facts about it."""
    from napari_lesion_diffkd.core.sam.loading import load_sam
    from napari_lesion_diffkd.core.sam.sam_bundle import save_sam_bundle

    info_path, tdir = out / TEACHER_INFO, out / TEACHER_DIR
    settings_key = {"teacher": teacher_ref, "prompt": config.teacher_prompt,
                    "lora_rank": config.teacher_lora_rank, "steps": config.teacher_steps,
                    "minutes": config.teacher_minutes, "lr": config.teacher_lr,
                    "batch_size": config.teacher_batch_size, "views": list(config.views),
                    "seed": config.seed, "train_ids": [it.id for it in items]}
    previous = json.loads(info_path.read_text()) if info_path.is_file() else None
    if previous is not None and previous.get("settings") == settings_key:
        # Finished on an earlier (interrupted) run with the same settings: reuse it.
        info = previous
        source = str(tdir) if info.get("tuned") else info["base_path"] or teacher_ref
        sam = load_sam(source, device=device).model.eval()
        yield JobEvent("log", message=f"teacher reused from {source} (prompt {info['prompt']})")
        return sam, str(info["prompt"]), info
    base = load_sam(teacher_ref, device=device)
    sam = base.model.eval()
    yield JobEvent("log", message=f"teacher {base.name}: {base.num_parameters} parameters, "
                                  f"{base.img_size} px")
    if config.teacher_prompt == "auto":
        prompt, scores = choose_prompt(sam, items, device)
    else:
        prompt = config.teacher_prompt
        scores = {prompt: training_dice(sam, items, prompt, device=device)}
    yield JobEvent("log", message=f"automatic prompt {prompt!r} (training Dice by prompt: "
                                  + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()) + ")")
    base_path = str(Path(base.path).resolve()) if base.path is not None else None
    info: dict[str, Any] = {
        "base": base.name, "base_ref": teacher_ref, "base_path": base_path, "arch": base.arch,
        "prompt": prompt, "train_dice_by_prompt": scores,
        "num_parameters_base": base.num_parameters, "tuned": False, "settings": settings_key,
    }
    if config.teacher_lora_rank > 0 and config.teacher_steps > 0:
        if base.config.get("lora"):
            raise ValueError(f"teacher {teacher_ref}: already has LoRA adapters; use "
                             "teacher_lora_rank: 0 or start from its base")
        settings = TeacherTuneSettings(
            steps=config.teacher_steps, minutes=config.teacher_minutes,
            lora_rank=config.teacher_lora_rank, batch_size=config.teacher_batch_size,
            lr=config.teacher_lr, warmup_steps=min(config.warmup_steps, config.teacher_steps),
            weight_decay=config.weight_decay, ce_weight=config.ce_weight,
            dice_weight=config.dice_weight, views=config.views, seed=config.seed,
            amp_bf16=config.amp_bf16)
        result = yield from finetune_teacher(sam, items, prompt, settings, device)
        info.update(tuned=True, lora=result,
                    num_parameters=sum(p.numel() for p in sam.parameters()),
                    train_dice_tuned=training_dice(sam, items, prompt, device=device))
        save_sam_bundle(tdir, sam, {"name": f"{config.name}-teacher", "role": "teacher",
                                    "modality": config.modality, "automatic_prompt": prompt,
                                    "ts_kd_teacher": info},
                        arch=base.arch, base=base_path or teacher_ref)
        yield JobEvent("checkpoint", message=str(tdir))
    else:
        info["num_parameters"] = base.num_parameters
    for p in sam.parameters():
        p.requires_grad_(False)
    _write_json(info_path, info)
    return sam.eval(), prompt, info


# ------------------------------------------------------------------------------ stage 2


def _read_image_folder(folder: Path) -> list[tuple[str, torch.Tensor]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for p in files:
        image = read_image_file(p)
        out.append((p.stem, image_to_item(image, max(image.shape[:2]), p.stem).image))
    return out


def _generated_stage(config: TsKdConfig, items: Sequence[Item], val_items: Sequence[Item],
                     out: Path, device: torch.device
                     ) -> Generator[JobEvent, None, tuple[list[Item], dict[str, Any]]]:
    """Generated transfer images (in the typical input frame) and their quality report."""
    from PIL import Image

    gcfg = config.generator_config()
    res = gcfg.resolution
    real = torch.cat([to_generator_images(it.image[None], res) for it in items])
    gdir = out / GENERATED_DIR
    quality_path = out / QUALITY_NAME
    settings_key = {"generator": gcfg.to_dict(), "count": config.generated_images,
                    "seed": config.seed, "train_ids": [it.id for it in items]}
    if config.generated_dir:
        loaded = _read_image_folder(Path(config.generated_dir))
        if not loaded:
            raise ValueError(f"generated_dir {config.generated_dir}: no images")
        images = [img for _, img in loaded]
        source = str(Path(config.generated_dir).resolve())
    elif quality_path.is_file() and gdir.is_dir() and json.loads(quality_path.read_text()).get(
            "settings") == settings_key:  # an earlier run with the same settings made them
        images = [img for _, img in _read_image_folder(gdir)]
        source = str(gdir)
    else:
        yield JobEvent("log", message=f"training the image generator on {len(real)} images "
                                      f"at {res} px")
        net, gsum = yield from train_image_generator(real, gcfg, device)
        save_generator(out / GENERATOR_DIR, net, gcfg,
                       {"train_summary": gsum, "trained_on": [it.id for it in items]})
        batch = yield from sample_images(net, gcfg, config.generated_images, seed=config.seed,
                                         device=device)
        gdir.mkdir(parents=True, exist_ok=True)
        for old in gdir.glob("gen-*.png"):  # from a run with other settings
            old.unlink()
        for k, img in enumerate(batch):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(gdir / f"gen-{k:04d}.png")
        images = list(batch)
        source = str(gdir)
        val = torch.cat([to_generator_images(it.image[None], res) for it in val_items]) \
            if val_items else torch.zeros(0, 3, res, res, dtype=torch.uint8)
        quality = {
            "definition": "each image vs its nearest training image (smallest MSE), both "
                          f"resized to {res}x{res} RGB, 0-255 scale; PSNR = 10 log10(255^2/MSE)",
            "generated_vs_train": nearest_real_summary(batch, real),
            "validation_vs_train": nearest_real_summary(val, real),
            "generator": gsum,
            "settings": settings_key,
        }
        _write_json(quality_path, quality)
    quality = json.loads(quality_path.read_text()) if quality_path.is_file() else {}
    # Square generated images get the typical aspect ratio of the real inputs back.
    hw = typical_input_hw(items)
    gen_items = []
    for k, img in enumerate(images):
        x = F.interpolate(img[None].float(), size=hw, mode="bilinear", align_corners=False)
        gen_items.append(Item(x[0].round().clamp(0, 255).to(torch.uint8), None,
                              f"gen-{k:04d}", "generated"))
    yield JobEvent("log", message=f"{len(gen_items)} generated images from {source}")
    quality.pop("settings", None)
    return gen_items, {**quality, "source": source, "count": len(gen_items)}


# ------------------------------------------------------------------------------ stage 3


def _teacher_inputs(items: Sequence[Item], views: Sequence[str], size: int,
                    mean: Sequence[float], std: Sequence[float]
                    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Items through views, resized to the teacher's input size when it differs."""
    xs, hws = [], []
    for it, view in zip(items, views):
        img = apply_view(it.image, view)
        h, w = img.shape[-2:]
        scale = size / max(h, w)
        if scale != 1.0:
            nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
            img = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear",
                                align_corners=False, antialias=True)[0]
        xs.append(normalise_pad(img, size, mean, std))
        hws.append((int(img.shape[-2]), int(img.shape[-1])))
    return torch.stack(xs), hws


def _fingerprint(teacher: str, prompt: str, transfer: Sequence[Item], views: Sequence[str]
                 ) -> str:
    h = hashlib.sha256(f"{teacher}|{prompt}|{list(views)}".encode())
    for it in transfer:
        h.update(it.id.encode())
        h.update(it.image.numpy().tobytes())
    return h.hexdigest()


def _teacher_cache(sam: nn.Module, prompt: str, teacher_ref: str, transfer: Sequence[Item],
                   views: Sequence[str], out: Path, device: torch.device, batch_size: int = 8
                   ) -> Generator[JobEvent, None, dict[str, torch.Tensor]]:
    """``{"embeddings": (N, V, C, g, g) fp16, "logits": (N, V, 1, L, L) fp16}``."""
    path = out / CACHE_NAME
    fingerprint = _fingerprint(teacher_ref, prompt, transfer, views)
    if path.is_file():
        cached = load_checkpoint(path, "cpu")  # refused pickle: one clear error
        if cached.get("fingerprint") == fingerprint:
            yield JobEvent("log", message=f"teacher outputs reused from {path}")
            return cached
    size = int(sam.image_encoder.img_size)
    mean, std = sam_normalisation(sam)
    entries = [(i, v) for i in range(len(transfer)) for v in range(len(views))]
    embs: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    total = (len(entries) + batch_size - 1) // batch_size
    with torch.no_grad():
        for b in range(0, len(entries), batch_size):
            chunk = entries[b: b + batch_size]
            x, hws = _teacher_inputs([transfer[i] for i, _ in chunk],
                                     [views[v] for _, v in chunk], size, mean, std)
            emb, low = teacher_forward(sam, x.to(device), hws, prompt)
            embs.append(emb.half().cpu())
            logits.append(low.half().cpu())
            yield JobEvent("progress", step=b // batch_size + 1, total=total,
                           message="teacher outputs")
    n, nv = len(transfer), len(views)
    emb_all = torch.cat(embs).reshape(n, nv, *embs[0].shape[1:])
    log_all = torch.cat(logits).reshape(n, nv, *logits[0].shape[1:])
    cache = {"embeddings": emb_all, "logits": log_all, "fingerprint": fingerprint}
    tmp = path.with_suffix(".tmp")
    torch.save(cache, tmp)
    tmp.replace(path)
    return cache


# ------------------------------------------------------------------------------ stages 4-5


def _low_res_valid(hws: Sequence[tuple[int, int]], size: int, low: int) -> torch.Tensor:
    """(B, 1, low, low) float 0/1: the unpadded region at the logits' resolution."""
    v = torch.zeros(len(hws), 1, low, low)
    for k, (h, w) in enumerate(hws):
        v[k, 0, : -(-h * low // size), : -(-w * low // size)] = 1.0
    return v


def run_ts_kd(
    config: TsKdConfig,
    records: Sequence[PairRecord],
    out_dir: str | Path,
    teacher: str = "lesion-sam-tiny",
    device: str | torch.device = "cpu",
    resume: bool = False,
    provenance: dict[str, Any] | None = None,
    unlabeled: Sequence[tuple[str, str]] = (),
) -> Generator[JobEvent, None, dict[str, Any]]:
    """Seed 002's TS-KD pipeline (module docstring); yields events, returns a summary.

    Args:
        config: the run. records: every labelled pair; split here by group.
        out_dir: run folder (checkpoint, log, teacher, generated images, bundle).
        teacher: SAM name or path (``core.sam.loading.load_sam``); unused without KD.
        device: torch device. resume: continue from ``OUT/checkpoint.pt``.
        provenance: facts stored in the bundle (data folders, command line, ...).
        unlabeled: ``(id, path)`` of extra unlabelled images for the transfer set (the
            caller leaves out validation groups).

    Returns:
        ``{"out_dir", "student": {...}, "teacher": {...}, "generated": {...}, "steps",
        "seconds"}`` with validation Dice, parameter counts and sizes.

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint. ValueError / LookupError: bad
        data, config or teacher (clear messages).
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if resume and not ckpt_path.is_file():
        raise FileNotFoundError(f"resume: no {CHECKPOINT_NAME} in {out}")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    run_start = time.monotonic()
    train_recs, val_recs = group_split(records, config.val_fraction, config.split_seed)
    if not train_recs:
        raise ValueError("no training images after the split: need more data or groups")
    scfg = config.student_config()
    yield JobEvent("log", message=f"{len(train_recs)} training / {len(val_recs)} validation "
                                  "images (group-aware split)")
    items = load_pair_items(train_recs, scfg.img_size)
    val_items = load_pair_items(val_recs, scfg.img_size)

    sam: nn.Module | None = None
    prompt = "none"
    teacher_info: dict[str, Any] = {}
    generated: dict[str, Any] = {}
    transfer: list[Item] = []
    cache: dict[str, torch.Tensor] = {}
    if config.needs_teacher:
        sam, prompt, teacher_info = yield from _teacher_stage(config, teacher, items, out,
                                                              device)
        mean, std = sam_normalisation(sam)
        scfg = replace(scfg, pixel_mean=tuple(mean), pixel_std=tuple(std))
        gen_items: list[Item] = []
        if config.generated_images > 0 or config.generated_dir:
            gen_items, generated = yield from _generated_stage(config, items, val_items, out,
                                                               device)
        extra = [image_to_item(read_image_file(p), scfg.img_size, i, None, "unlabeled")
                 for i, p in unlabeled]
        transfer = (list(items) if config.transfer_real else []) + extra + gen_items
        if not transfer:
            raise ValueError("the transfer set is empty (transfer_real off, no generated or "
                             "unlabelled images)")
        # The teacher's identity for the cache: its source and how it was tuned.
        teacher_key = json.dumps({"base": teacher_info.get("base_path") or teacher,
                                  "settings": teacher_info.get("settings")}, sort_keys=True)
        cache = yield from _teacher_cache(sam, prompt, teacher_key, transfer, config.views, out,
                                          device)

    torch.manual_seed(config.seed)
    student = ViTFPNStudent(scfg).to(device)
    adapter: HiddenAdapter | None = None
    if config.needs_teacher:
        adapter = HiddenAdapter(scfg.embed_dim, int(cache["embeddings"].shape[2])).to(device)
    gen = torch.Generator().manual_seed(config.seed)
    stage = "kd" if config.kd_steps > 0 else "finetune"
    step, elapsed_before, order = 0, 0.0, []
    opt_state: dict[str, Any] | None = None
    stage_seconds: dict[str, float] = {}
    if resume:
        ckpt = load_checkpoint(ckpt_path, device)  # refused pickle: one clear error
        stage = str(ckpt["stage"])
        student.load_state_dict(ckpt["student"])
        if adapter is not None and ckpt.get("adapter"):
            adapter.load_state_dict(ckpt["adapter"])
        gen.set_state(ckpt["generator"])
        step, elapsed_before = int(ckpt["step"]), float(ckpt["elapsed"])
        order = [int(i) for i in ckpt["order"].tolist()]
        opt_state = ckpt["optimizer"]
        stage_seconds = {k: float(v) for k, v in ckpt.get("stage_seconds", {}).items()}
        yield JobEvent("log", step=step, message=f"resumed in stage {stage} at step {step}")

    def write_log(entry: dict[str, Any]) -> None:
        with (out / LOG_NAME).open("a") as fh:
            fh.write(json.dumps(entry) + "\n")

    size = scfg.img_size
    low = scfg.logits_size
    views = config.views
    for current in ("kd", "finetune"):
        if current == "kd" and stage != "kd":
            continue
        if current == "kd":
            steps, minutes, base_lr = config.kd_steps, config.kd_minutes, config.kd_lr
            params = list(student.parameters()) + list(adapter.parameters())  # type: ignore
            pool = [(i, v) for i in range(len(transfer)) for v in range(len(views))]
        else:
            if stage == "kd":  # KD just ended: the fine-tuning state starts fresh
                stage, step, elapsed_before, order, opt_state = "finetune", 0, 0.0, [], None
            steps, minutes, base_lr = (config.finetune_steps, config.finetune_minutes,
                                       config.finetune_lr)
            params = list(student.parameters())
            pool = [(i, -1) for i in range(len(items))]  # view drawn per sample
        optimizer = torch.optim.AdamW(params, lr=base_lr, weight_decay=config.weight_decay)
        if opt_state:
            optimizer.load_state_dict(opt_state)
        opt_state = None
        start = time.monotonic()

        def elapsed(start: float = start, before: float = elapsed_before) -> float:
            return before + time.monotonic() - start

        def save_checkpoint(stage_name: str = current,
                            optimizer: torch.optim.Optimizer = optimizer) -> None:
            payload = {"stage": stage_name, "student": student.state_dict(),
                       "adapter": adapter.state_dict() if adapter is not None else {},
                       "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                       "step": step, "elapsed": elapsed(),
                       "order": torch.tensor(order, dtype=torch.long),
                       "stage_seconds": stage_seconds}
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save(payload, tmp)
            tmp.replace(ckpt_path)

        student.train()
        running: dict[str, float] = {}
        while step < steps:
            if minutes is not None and elapsed() / 60 >= minutes:
                yield JobEvent("log", step=step, total=steps,
                               message=f"{current}: time budget of {minutes:.2f} min reached")
                break
            while len(order) < config.batch_size:
                order += torch.randperm(len(pool), generator=gen).tolist()
            idx, order = order[: config.batch_size], order[config.batch_size:]
            progress = max(step / steps, elapsed() / 60 / minutes if minutes else 0.0)
            lr = warmup_cosine(base_lr, step, config.warmup_steps, progress)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if current == "kd":
                chunk = [pool[k] for k in idx]
                imgs = [apply_view(transfer[i].image, views[v]) for i, v in chunk]
                x = torch.stack([normalise_pad(im, size, scfg.pixel_mean, scfg.pixel_std)
                                 for im in imgs]).to(device)
                t_emb = torch.stack([cache["embeddings"][i, v] for i, v in chunk]).float()
                t_log = torch.stack([cache["logits"][i, v] for i, v in chunk]).float()
                t_low = t_log.shape[-1]
                valid = _low_res_valid([tuple(im.shape[-2:]) for im in imgs], size, t_low)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp_bf16):
                    outputs = student.forward_all(x)
                    hidden = adapter(outputs.hidden, tuple(t_emb.shape[-2:]))  # type: ignore
                l_hidden = hidden_kd_loss(hidden, t_emb.to(device))
                l_logit = logit_kd_loss(outputs.logits, t_log.to(device), valid.to(device))
                loss = config.hidden_weight * l_hidden + config.logit_weight * l_logit
                values = {"loss": float(loss.detach()), "hidden": float(l_hidden.detach()),
                          "logit": float(l_logit.detach())}
            else:
                chunk_items = [items[pool[k][0]] for k in idx]
                vs = [views[int(v)] for v in
                      torch.randint(len(views), (len(chunk_items),), generator=gen)]
                x = torch.stack([normalise_pad(apply_view(it.image, v), size, scfg.pixel_mean,
                                               scfg.pixel_std)
                                 for it, v in zip(chunk_items, vs)]).to(device)
                target, valid_full = batch_targets(chunk_items, vs, size)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp_bf16):
                    logits = student(x)
                loss = segmentation_loss(logits, target.to(device), valid_full.to(device),
                                         config.ce_weight, config.dice_weight)
                values = {"loss": float(loss.detach())}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            step += 1
            running = dict(values) if not running else {
                k: 0.9 * running[k] + 0.1 * values[k] for k in values}
            if step % 5 == 0 or step == steps:
                write_log({"stage": current, "step": step, **values, "lr": lr,
                           "seconds": round(elapsed(), 2)})
            yield JobEvent("progress", step=step, total=steps, message=current,
                           values={"loss": running["loss"]})
            if step % config.checkpoint_every == 0 and step < steps:
                save_checkpoint()
                yield JobEvent("checkpoint", step=step, total=steps, message=str(ckpt_path))
        # The stage's end is a checkpoint too; resuming from a KD one starts the fine-tuning.
        stage_seconds[f"{current}_seconds"] = elapsed()
        stage_seconds[f"{current}_steps"] = float(step)
        save_checkpoint()
        yield JobEvent("checkpoint", step=step, total=steps, message=str(ckpt_path))

    # ------------------------------------------------------------------ evaluation + bundle
    student.eval()
    yield JobEvent("log", message=f"scoring {len(val_recs)} validation images")
    student_eval = evaluate_pairs(lambda im: predict(student, im).mask, val_recs)
    n_student = sum(p.numel() for p in student.parameters())
    teacher_summary: dict[str, Any] = {}
    if sam is not None:
        tuned_eval = evaluate_pairs(lambda im: teacher_predict(sam, im, prompt), val_recs)
        teacher_summary = {
            **{k: v for k, v in teacher_info.items() if k not in ("lora", "settings")},
            "val_dice": tuned_eval["dice"], "val_ms_median": tuned_eval["ms_median"],
            "num_parameters": sum(p.numel() for p in sam.parameters()),
            "size_mib_fp32": size_mib(sum(p.numel() for p in sam.parameters())),
        }
        if teacher_info.get("tuned"):
            from napari_lesion_diffkd.core.sam.loading import load_sam

            base = load_sam(teacher_info.get("base_path") or teacher, device=device).model
            base_eval = evaluate_pairs(lambda im: teacher_predict(base, im, prompt), val_recs)
            teacher_summary["val_dice_base"] = base_eval["dice"]
            teacher_summary["lora_trainable"] = teacher_info["lora"]["trainable"]
            teacher_summary["lora_steps"] = teacher_info["lora"]["steps"]
    student_summary = {
        "val_dice": student_eval["dice"], "val_dice_std": student_eval["dice_std"],
        "val_ms_median": student_eval["ms_median"], "n_val": student_eval["n"],
        "num_parameters": n_student, "size_mib_fp32": size_mib(n_student),
        "preset": config.student.get("preset"), "embed_dim": scfg.embed_dim,
        "depth": scfg.depth,
    }
    _write_json(out / EVAL_NAME, {"student": student_eval, "teacher": teacher_summary})
    seconds = time.monotonic() - run_start
    bundle_config = {
        "name": config.name, "modality": config.modality,
        "metrics": {"dice": student_eval["dice"], "n": student_eval["n"]},
        "teacher": teacher_summary,
        "provenance": {**(provenance or {}), "method": "ts-kd", "train_config": config.to_dict(),
                       "teacher": teacher, "stage_seconds": stage_seconds,
                       "transfer_set": {"real": len(items) if config.transfer_real and sam
                                        is not None else 0,
                                        "unlabeled": len(unlabeled),
                                        "generated": generated.get("count", 0)},
                       "val_ids": [r.id for r in val_recs]},
    }
    save_student_bundle(out, student, bundle_config)
    bundle_bytes = (out / "model.safetensors").stat().st_size
    student_summary["bundle_mib"] = bundle_bytes / 2**20
    yield JobEvent("checkpoint", message=str(out))
    return {"out_dir": str(out), "student": student_summary, "teacher": teacher_summary,
            "generated": {k: v for k, v in generated.items() if k != "generator"},
            "stage_seconds": stage_seconds, "seconds": seconds}

