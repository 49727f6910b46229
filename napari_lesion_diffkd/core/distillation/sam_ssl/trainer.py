"""``train_sam_ssl``: seed 003's SAM-guided semi-supervised dual-task student, as a generator.

Each step (after the labelled/unlabelled split of ``data.py``):

1. a labelled batch (``batch_size``) is augmented (``augment.py``); its SDF targets are
   computed from the augmented masks (``sdf.sdf_batch``);
2. unless ``supervised_only``: an unlabelled batch (``unlabelled_batch_size``) is segmented by
   the student as it is now (eval mode, no gradient, un-augmented); mask + SDF are fused into a
   mask prompt (``fusion.py``) and SAM's decoder, on the image embeddings cached at the start,
   refines it (``pseudo.SamTeacher``). SAM's logits get the same augmentation as their image;
   their sign is the pseudo-label;
3. one forward pass of the student over both batches; loss
   ``L_sup + λ(step) · (pseudo_weight · L_pseudo + kl_weight · T² KL(SAM || student))`` with
   ``L_sup``/``L_pseudo`` = Dice + BCE on the mask head + MSE (or L1) on the SDF head and
   ``λ`` the sigmoid ramp-up (``losses.py``).

The supervised-only baseline draws exactly the same labelled batches and augmentations (its
own generators, seeded alike), so the two runs differ only by SAM's guidance.

Every source of randomness is a ``torch.Generator`` saved in ``checkpoint.pt`` (tensors and
numbers only, read with ``weights_only=True``), and the LR schedule depends on steps only,
so a resumed run ends with exactly the weights of an uninterrupted one. Outputs in
``out_dir``: ``checkpoint.pt``, ``train_log.jsonl``, ``eval.json`` and the student bundle
(``bundle.py``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_lesion_diffkd.core.checkpoint_load import load_checkpoint
from napari_lesion_diffkd.core.data.datasets import ImageRecord, PairRecord
from napari_lesion_diffkd.core.distillation.sam_ssl.augment import augment_pair
from napari_lesion_diffkd.core.distillation.sam_ssl.bundle import save_student
from napari_lesion_diffkd.core.distillation.sam_ssl.config import SamSslConfig
from napari_lesion_diffkd.core.distillation.sam_ssl.data import prepare_data
from napari_lesion_diffkd.core.distillation.sam_ssl.evaluate import (
    evaluate_student,
    pseudo_label_quality,
    student_maps,
)
from napari_lesion_diffkd.core.distillation.sam_ssl.losses import (
    bernoulli_kl,
    rampup,
    sdf_loss,
    segmentation_loss,
)
from napari_lesion_diffkd.core.distillation.sam_ssl.network import DualTaskNet, count_parameters
from napari_lesion_diffkd.core.distillation.sam_ssl.pseudo import SamTeacher
from napari_lesion_diffkd.core.distillation.sam_ssl.sdf import sdf_batch
from napari_lesion_diffkd.core.jobs import JobEvent

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"
EVAL_NAME = "eval.json"
_GENERATORS = ("gen_l", "gen_u", "gen_aug_l", "gen_aug_u")


def refine_kwargs(config: SamSslConfig) -> dict[str, Any]:
    """The fusion settings of ``SamTeacher.refine`` from a config."""
    return {"mode": config.fusion, "mask_weight": config.fusion_mask_weight,
            "soft_gain": config.soft_gain, "with_box": config.prompt_box}


def _lr_at(step: int, config: SamSslConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.max_steps - config.warmup_steps)
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(1.0, (step - config.warmup_steps) / span)))


def _take(order: list[int], n: int, size: int, gen: torch.Generator) -> list[int]:
    """The next ``n`` indices of an epoch-wise shuffled stream (``order`` is consumed)."""
    while len(order) < n:
        order += torch.randperm(size, generator=gen).tolist()
    out = order[:n]
    del order[:n]
    return out


def _sam_module(teacher: Any) -> nn.Module:
    return teacher.model if hasattr(teacher, "model") else teacher


def train_sam_ssl(
    config: SamSslConfig,
    records: Sequence[PairRecord],
    out_dir: str | Path,
    teacher: Any = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    provenance: dict[str, Any] | None = None,
    extra_unlabelled: Sequence[ImageRecord] = (),
) -> Generator[JobEvent, None, dict[str, Any]]:
    """Train the dual-task student; yields ``JobEvent``s, returns a summary dict.

    Args:
        config: the run's settings.
        records: all image/mask pairs (split here: validation, then labelled / unlabelled).
        out_dir: checkpoint, JSONL log, ``eval.json`` and the student bundle.
        teacher: the frozen SAM (a ``LoadedSam`` or a ``segment_anything`` ``Sam``); not
            needed when ``config.supervised_only``.
        device: torch device.
        resume: continue from ``out_dir/checkpoint.pt``.
        provenance: facts stored in the bundle (data folders, teacher, command line, ...).
        extra_unlabelled: more images without masks (validation groups are left out).

    Returns:
        ``{"steps", "seconds", "out_dir", "supervised_only", "label_fraction", "n_labelled",
        "n_unlabelled", "n_val", "val": {...}, "pseudo": {...}, "num_parameters",
        "stopped_by_budget"}``.
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if resume and not ckpt_path.is_file():  # fail before any data is loaded
        raise FileNotFoundError(f"resume: no {CHECKPOINT_NAME} in {out}")
    ssl = not config.supervised_only
    if ssl and teacher is None:
        raise ValueError("a SAM teacher is needed unless supervised_only is set")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    data = prepare_data(records, config, extra_unlabelled, load_unlabelled=ssl)
    n_l, n_u = data.x_l.shape[0], data.x_u.shape[0]
    yield JobEvent("log", message=f"{n_l} labelled / {n_u} unlabelled training images, "
                                  f"{len(data.val)} validation images "
                                  f"({'supervised only' if not ssl else 'SAM-guided SSL'})")
    if ssl and n_u == 0:
        raise ValueError("no unlabelled images: lower label_fraction or add --unlabeled")
    torch.manual_seed(config.seed)
    net = DualTaskNet(in_channels=config.channels, **config.network).to(device)
    sam_teacher: SamTeacher | None = None
    embeddings = torch.zeros(0)
    input_hw: list[tuple[int, int]] = []
    if ssl:
        sam_teacher = SamTeacher(_sam_module(teacher), device)
        start_enc = time.perf_counter()
        embeddings, input_hw = sam_teacher.encode(data.raw_u)
        data.raw_u.clear()
        yield JobEvent("log", message=f"SAM encoded {n_u} unlabelled images in "
                                      f"{time.perf_counter() - start_enc:.1f} s (cached)")
    yield JobEvent("log", message=f"student DualTaskNet: {count_parameters(net)} parameters, "
                                  f"input {config.input_size} px")
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    gens = {name: torch.Generator().manual_seed(config.seed * 1000 + i)
            for i, name in enumerate(_GENERATORS)}
    order_l: list[int] = []
    order_u: list[int] = []
    step, elapsed_before, running = 0, 0.0, 0.0
    if resume:
        ckpt = load_checkpoint(ckpt_path, device)  # refused pickle: one clear error
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for name in _GENERATORS:
            gens[name].set_state(ckpt[name])
        order_l = [int(i) for i in ckpt["order_l"].tolist()]
        order_u = [int(i) for i in ckpt["order_u"].tolist()]
        step, elapsed_before = int(ckpt["step"]), float(ckpt["elapsed"])
        running = float(ckpt["running"])
        _truncate_log(out / LOG_NAME, step)
        yield JobEvent("log", step=step, total=config.max_steps, message=f"resumed at step {step}")
    elif (out / LOG_NAME).exists():
        (out / LOG_NAME).unlink()  # a fresh run starts a fresh log
    start = time.monotonic()
    gt_idx = (torch.nonzero(data.has_gt_u).flatten().tolist() if ssl else [])

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - start

    def write_log(entry: dict[str, Any]) -> None:
        with (out / LOG_NAME).open("a") as log:
            log.write(json.dumps(entry) + "\n")

    def save_checkpoint() -> None:
        payload: dict[str, Any] = {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "elapsed": elapsed(), "running": running,
            "order_l": torch.tensor(order_l, dtype=torch.long),
            "order_u": torch.tensor(order_u, dtype=torch.long)}
        payload.update({name: gens[name].get_state() for name in _GENERATORS})
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(ckpt_path)

    def pseudo_quality(limit: int | None) -> dict[str, float]:
        if sam_teacher is None or not gt_idx:
            return {"n": 0}
        idx = gt_idx[:limit] if limit else gt_idx
        return pseudo_label_quality(net, sam_teacher, embeddings[idx],
                                    [input_hw[i] for i in idx], data.x_u[idx].to(device),
                                    data.gt_u[idx].to(device), refine_kwargs(config))

    def validate() -> JobEvent:
        values: dict[str, float] = {}
        if data.val:
            values["val_dice"] = evaluate_student(net, data.x_val.to(device),
                                                  data.val_masks)["dice"]
        pq = pseudo_quality(config.val_pseudo_max)
        if pq.get("n"):
            values.update({"unl_student_dice": pq["student_dice"],
                           "unl_pseudo_dice": pq["pseudo_dice"]})
        write_log({"step": step, **values})
        text = ", ".join(f"{k} {v:.4f}" for k, v in values.items())
        return JobEvent("metric", step=step, total=config.max_steps,
                        message=f"step {step}: {text}", values=values)

    stopped_by_budget = False
    rf = config.augment_rotate_flip
    while step < config.max_steps:
        if config.max_minutes is not None and elapsed() / 60 >= config.max_minutes:
            stopped_by_budget = True
            yield JobEvent("log", step=step, total=config.max_steps,
                           message=f"time budget of {config.max_minutes} min reached")
            break
        idx_l = _take(order_l, config.batch_size, n_l, gens["gen_l"])
        x_l, (y_l,) = augment_pair(data.x_l[idx_l], [data.y_l[idx_l]], [True],
                                   gens["gen_aug_l"], rotate_flip=rf)
        x = x_l.to(device)
        y_l = y_l.to(device)
        values: dict[str, float] = {}
        if sam_teacher is not None:
            idx_u = _take(order_u, config.unlabelled_batch_size, n_u, gens["gen_u"])
            prob0, sdf0 = student_maps(net, data.x_u[idx_u].to(device))
            ref = sam_teacher.refine(embeddings[idx_u], [input_hw[i] for i in idx_u],
                                     prob0, sdf0, **refine_kwargs(config))
            x_u, (sam_logits,) = augment_pair(data.x_u[idx_u], [ref.logits.cpu()], [False],
                                              gens["gen_aug_u"], rotate_flip=rf)
            sam_logits = sam_logits.to(device)
            pseudo = (sam_logits > 0).float()
            keep = ref.score.to(device) >= config.pseudo_min_score
            x = torch.cat([x, x_u.to(device)])
        lr = _lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp_bf16):
            logits, sdf = net(x)
        logits, sdf = logits.float(), sdf.float()
        b = config.batch_size
        loss = (segmentation_loss(logits[:b], y_l, config.dice_weight, config.ce_weight)
                + config.sdf_weight * sdf_loss(sdf[:b], sdf_batch(y_l), config.sdf_loss))
        values["sup"] = float(loss.detach())
        if ssl and bool(keep.any()):
            lu, su = logits[b:][keep], sdf[b:][keep]
            pl, sl = pseudo[keep], sam_logits[keep]
            l_pseudo = (segmentation_loss(lu, pl, config.dice_weight, config.ce_weight)
                        + config.sdf_weight * sdf_loss(su, sdf_batch(pl), config.sdf_loss))
            l_kl = bernoulli_kl(sl, lu, config.kl_temperature)
            lam = config.unsup_weight * rampup(step, int(config.rampup_fraction
                                                         * config.max_steps))
            loss = loss + lam * (config.pseudo_weight * l_pseudo + config.kl_weight * l_kl)
            values.update({"pseudo": float(l_pseudo.detach()), "kl": float(l_kl.detach()),
                           "lambda": lam})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        value = float(loss.detach())
        running = value if step == 1 else 0.95 * running + 0.05 * value
        if step % 10 == 0 or step == config.max_steps:
            write_log({"step": step, "loss": running, "lr": lr,
                       **{k: round(v, 5) for k, v in values.items()},
                       "seconds": round(elapsed(), 2)})
        yield JobEvent("progress", step=step, total=config.max_steps, message="training",
                       values={"loss": running})
        if step % config.val_every == 0 and step != config.max_steps:
            yield validate()
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            save_checkpoint()
            yield JobEvent("checkpoint", step=step, total=config.max_steps,
                           message=str(ckpt_path))
    if stopped_by_budget:
        save_checkpoint()
    seconds = elapsed()
    yield JobEvent("log", message=f"scoring {len(data.val)} validation images")
    val = evaluate_student(net, data.x_val.to(device), data.val_masks) if data.val else {"n": 0}
    pseudo_q = pseudo_quality(None)
    final_values = {"val_dice": val.get("dice", float("nan"))}
    if pseudo_q.get("n"):
        final_values.update({"unl_student_dice": pseudo_q["student_dice"],
                             "unl_pseudo_dice": pseudo_q["pseudo_dice"]})
    write_log({"step": step, "final": True, **final_values})
    yield JobEvent("metric", step=step, total=config.max_steps, values=final_values,
                   message="final: " + ", ".join(f"{k} {v:.4f}" for k, v in final_values.items()))
    evaluation = {"val": val, "pseudo": pseudo_q, "steps": step,
                  "labelled_ids": [r.id for r in data.labelled],
                  "val_ids": [r.id for r in data.val]}
    (out / EVAL_NAME).write_text(json.dumps(evaluation, indent=1) + "\n")
    metrics = {k: v for k, v in val.items() if k != "per_image_dice"}
    bundle_config = {
        "name": config.name, "modality": config.modality,
        "metrics": {**metrics, "pseudo_label": pseudo_q},
        "provenance": {**(provenance or {}), "train_config": config.to_dict(), "steps": step,
                       "seconds": round(seconds, 1), "labelled_ids": evaluation["labelled_ids"],
                       "n_unlabelled": n_u, "val_ids": evaluation["val_ids"]},
    }
    save_student(out, net.eval(), bundle_config, config.input_size, config.channels)
    yield JobEvent("checkpoint", step=step, total=config.max_steps, message=str(out))
    return {"steps": step, "seconds": round(seconds, 2), "out_dir": str(out),
            "supervised_only": not ssl, "label_fraction": config.label_fraction,
            "n_labelled": n_l, "n_unlabelled": n_u, "n_val": len(data.val),
            "val": metrics, "pseudo": pseudo_q, "num_parameters": count_parameters(net),
            "stopped_by_budget": stopped_by_budget}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))
