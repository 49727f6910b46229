"""Seed 003 on PH2: SAM-guided semi-supervised student vs supervised-only, same 8% labels.

Usage (the run behind the ``sam-ssl`` section of docs/benchmarks.md):

    nice -n 5 .venv/bin/python benchmarks/bench_sam_ssl.py --threads 1

Options: ``--data DIR`` (default ../shared/data/ph2_dermoscopy), ``--config FILE`` (default
configs/sam-ssl-ph2.yaml), ``--teacher NAME`` (default lesion-sam-tiny), ``--out DIR`` (runs,
default runs/bench-sam-ssl), ``--max-minutes M`` (budget per run), ``--reuse`` (keep runs that
already finished; a run stopped by ``--max-minutes`` can be finished first with ``lesion-diffkd
distill ... --resume``, which continues it exactly), ``--no-write``.

1. Trains both arms through the CLI, one after the other on the same thread budget:
   ``distill --method sam-ssl --ssl-supervised-only`` (baseline) and ``distill --method
   sam-ssl`` (SSL), same config, same labelled images, same steps, batches and augmentation.
2. Reads each run's ``eval.json``: validation Dice / IoU / sensitivity / specificity at the
   images' own resolution (the project's group-aware split, never trained on) and the paired
   per-image Dice difference.
3. Diagnostics of the teacher on the unlabelled training images (their masks are read here
   for measurement only): Dice of SAM's pseudo-labels from each student's fused prompt, from
   other prompt encodings (fusion ``soft``, mask head only, fused mask + box), and from an
   **empty** mask prompt (all background): what SAM finds with no guidance at all, on the
   unlabelled and on the validation images.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402

SECTION = "sam-ssl"


def _train_seconds(out: Path) -> float | None:
    """Training wall time from the run's log (summed over resumed segments)."""
    seconds = [json.loads(line).get("seconds") for line in
               (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    seconds = [s for s in seconds if s is not None]
    return float(seconds[-1]) if seconds else None


def _train(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    from napari_lesion_diffkd.cli import main

    out = Path(args.out) / arm
    if args.reuse and (out / "eval.json").is_file():
        return {"seconds": _train_seconds(out), **json.loads((out / "eval.json").read_text())}
    argv = ["distill", "--method", "sam-ssl", "--teacher", args.teacher, "--student-config",
            args.config, "--data", args.data, "--out", str(out), "--threads", str(args.threads),
            "--device", "cpu"]
    if args.max_minutes:
        argv += ["--max-minutes", str(args.max_minutes)]
    if arm == "supervised-only":
        argv.append("--ssl-supervised-only")
    if (out / "checkpoint.pt").is_file() and not (out / "eval.json").is_file():
        argv.append("--resume")
    code = main(argv)
    if code != 0:
        raise SystemExit(f"{arm}: distill exited {code}")
    return {"seconds": _train_seconds(out), **json.loads((out / "eval.json").read_text())}


@torch.no_grad()
def _diagnostics(args: argparse.Namespace) -> dict[str, Any]:
    from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs
    from napari_lesion_diffkd.core.data.preprocess import prepare_mask
    from napari_lesion_diffkd.core.distillation.sam_ssl import SamSslConfig, load_student
    from napari_lesion_diffkd.core.distillation.sam_ssl.data import prepare_data
    from napari_lesion_diffkd.core.distillation.sam_ssl.evaluate import (
        dice_batch,
        pseudo_label_quality,
    )
    from napari_lesion_diffkd.core.distillation.sam_ssl.pseudo import SamTeacher
    from napari_lesion_diffkd.core.sam.inputs import MASK_PROMPT_CLIP
    from napari_lesion_diffkd.core.sam.decoding import decode_batch
    from napari_lesion_diffkd.core.sam.loading import load_sam

    config = SamSslConfig.from_file(args.config)
    data = prepare_data(scan_pairs(args.data), config)
    teacher = SamTeacher(load_sam(args.teacher).model)
    emb, hw = teacher.encode(data.raw_u)
    data.raw_u.clear()
    idx = torch.nonzero(data.has_gt_u).flatten().tolist()
    x_u, gt_u = data.x_u[idx], data.gt_u[idx]
    emb, hw = emb[idx], [hw[i] for i in idx]
    out: dict[str, Any] = {"n_unlabelled": len(idx), "pseudo": {}}
    variants = {
        "fused sdf-ramp (default)": {"mode": "sdf-ramp", "mask_weight": 0.5},
        "fused soft": {"mode": "soft", "mask_weight": 0.5},
        "mask head only (sdf-ramp, w = 1)": {"mode": "sdf-ramp", "mask_weight": 1.0},
        "fused sdf-ramp + box": {"mode": "sdf-ramp", "mask_weight": 0.5, "with_box": True},
    }
    for arm in ("supervised-only", "ssl"):
        student = load_student(Path(args.out) / arm).network
        out["pseudo"][arm] = {
            name: pseudo_label_quality(student, teacher, emb, hw, x_u, gt_u,
                                       {"soft_gain": config.soft_gain, **kw})
            for name, kw in variants.items()}

    def empty_prompt_dice(embeddings: torch.Tensor, hws: list, gts: torch.Tensor) -> float:
        n = embeddings.shape[0]
        prompt = torch.full((n, 1, *teacher.low_res_hw), -MASK_PROMPT_CLIP)
        low, _ = decode_batch(teacher.sam, embeddings, None, None, prompt, multimask=False)
        logits = teacher.to_student_frame(low, hws, config.input_size)
        return float(dice_batch((logits > 0).float(), gts).mean())

    out["empty_prompt_unlabelled_dice"] = empty_prompt_dice(emb, hw, gt_u)
    val_images = [read_pair(r)[0] for r in data.val]
    v_emb, v_hw = teacher.encode(val_images)
    v_gt = torch.stack([(prepare_mask(read_pair(r)[1], config.input_size) > 0).float()
                        for r in data.val])
    out["empty_prompt_val_dice"] = empty_prompt_dice(v_emb, v_hw, v_gt)
    return out


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _teacher_sha(name: str) -> str:
    """First 12 hex digits of the teacher bundle's weights (which lesion-sam-tiny was used)."""
    import hashlib

    from napari_lesion_diffkd.core.registry import resolve_model

    try:
        data = (resolve_model(name) / "model.safetensors").read_bytes()
    except (LookupError, OSError):
        return "?"
    return hashlib.sha256(data).hexdigest()[:12]


def _relative(path: str) -> str:
    p = Path(path).resolve()
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else p.as_posix()


def _report(runs: dict[str, dict[str, Any]], diag: dict[str, Any], args: argparse.Namespace,
            command: str) -> str:
    config = json.loads((Path(args.out) / "ssl" / "config.json").read_text())
    prov = config["provenance"]
    tc = prov["train_config"]
    sup, ssl = runs["supervised-only"], runs["ssl"]
    d_sup = np.array(sup["val"]["per_image_dice"])
    d_ssl = np.array(ssl["val"]["per_image_dice"])
    diff = d_ssl - d_sup
    # Paired bootstrap over validation images (one training seed per arm: image noise only).
    boot = np.random.default_rng(0).choice(diff, size=(10000, diff.size)).mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    lines = [
        "## sam-ssl: SAM-guided semi-supervised dual-task student (seed 003), PH2, 8% labels",
        "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}"
        + ("; the runs were trained by the same command without `--reuse` and are read back "
           "from their `eval.json`" if args.reuse else "") + ", "
        f"{platform.machine()}, {args.threads} torch thread, nice 5, CPU shared with other "
        "jobs). Student: `DualTaskNet` (MobileNetV2-style inverted residuals, mask + SDF heads, "
        f"{config['num_parameters']:,} parameters, {tc['input_size']} px); teacher "
        f"`{args.teacher}` (frozen; weights sha256 {_teacher_sha(args.teacher)}…). Config "
        f"`{_relative(args.config)}`: "
        f"{tc['max_steps']} steps, labelled batch {tc['batch_size']}"
        f" (+ {tc['unlabelled_batch_size']} unlabelled), AdamW lr {tc['lr']}, bf16; "
        f"loss Dice + BCE + SDF MSE, unsupervised weight ramped up over "
        f"{tc['rampup_fraction']:.0%} of the steps, pseudo-labels + KL(T = "
        f"{tc['kl_temperature']}), fused prompt `{tc['fusion']}`.",
        "",
        f"Split: the project's group-aware validation split (val_fraction {tc['val_fraction']}, "
        f"seed {tc['split_seed']}: {sup['val']['n']} validation images, never trained on); "
        f"{len(prov['labelled_ids'])} labelled training images ({tc['label_fraction']:.0%} of "
        f"the training split, whole groups, label_seed {tc['label_seed']}); the other "
        f"{prov['n_unlabelled']} training images unlabelled (SSL arm only).",
        "",
        "| arm | labelled | unlabelled | steps | train wall (min) | val Dice | IoU | "
        "sensitivity | specificity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in (("supervised-only", sup), ("SAM-guided SSL", ssl)):
        v = run["val"]
        wall = _fmt(run["seconds"] / 60, 1) if run.get("seconds") else "–"
        lines.append(
            f"| {name} | {len(run['labelled_ids'])} | "
            f"{0 if run is sup else prov['n_unlabelled']} | {run['steps']} | {wall} | "
            f"**{_fmt(v['dice'])}** | {_fmt(v['iou'])} | {_fmt(v['sensitivity'])} | "
            f"{_fmt(v['specificity'])} |")
    lines += [
        "",
        f"SSL minus supervised-only: **{100 * diff.mean():+.1f} Dice points** on the mean "
        f"(paired bootstrap 95% interval over the validation images {100 * lo:+.1f} to "
        f"{100 * hi:+.1f}; per image: median {100 * np.median(diff):+.1f}, SSL better on "
        f"{int((diff > 0).sum())} of {diff.size} images, worse on {int((diff < 0).sum())}, "
        f"largest gain {100 * diff.max():+.1f}, largest loss {100 * diff.min():+.1f}; without "
        f"the image of the largest gain the mean is {100 * np.sort(diff)[:-1].mean():+.1f}). One "
        "training run per arm, so run-to-run noise is not in that interval. Seed 003 has no "
        "8% SSL result; against SupOnly at the same fraction it reports +8.8 (2%) and +8.1 "
        "(4%) Dice points on ISIC-2018, +2.9 and +2.0 on HAM10000; the issue asks for +3 to "
        "+6.",
        "",
        f"Pseudo-labels on the {diag['n_unlabelled']} unlabelled training images (their masks "
        "read for this measurement only), Dice in the student's frame:",
        "",
        "| prompt to SAM | from the supervised-only student: student / SAM | from the SSL "
        "student: student / SAM |",
        "|---|---|---|",
    ]
    for name in diag["pseudo"]["ssl"]:
        a, b = diag["pseudo"]["supervised-only"][name], diag["pseudo"]["ssl"][name]
        lines.append(f"| {name} | {_fmt(a['student_dice'])} / {_fmt(a['pseudo_dice'])} | "
                     f"{_fmt(b['student_dice'])} / {_fmt(b['pseudo_dice'])} |")
    lines += [
        f"| empty mask prompt (no guidance) | – / "
        f"{_fmt(diag['empty_prompt_unlabelled_dice'])} | – / "
        f"{_fmt(diag['empty_prompt_unlabelled_dice'])} |",
        "",
        f"SAM with an empty mask prompt scores {_fmt(diag['empty_prompt_val_dice'])} Dice on "
        "the validation images too: this SAM finds PH2 lesions with no guidance at all, so "
        "the prompt encoding changes its pseudo-labels by only a point or so (rows above), and "
        "the student trained on them ends above the pseudo-labels it learnt from. "
        "**Caveat:** `lesion-sam-tiny` was trained (sam-finetune) "
        "on the full training split of PH2 with all its masks, i.e. on these unlabelled "
        "images' labels, and on three other lesion datasets. Seed 003's SAM was pretrained on "
        "natural images only. So this SAM is a far better-informed teacher than the "
        "paper's, and the gain above shows how well the student absorbs a strong SAM's "
        "knowledge through the fused-prompt pseudo-labels and KL. It is not a clean 8%-label "
        "result. A clean one needs a SAM trained without these labels, e.g. an official "
        "checkpoint (`--teacher sam_vit_b`), which this machine cannot download.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ph2_dermoscopy"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "sam-ssl-ph2.yaml"))
    parser.add_argument("--teacher", default="lesion-sam-tiny")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-sam-ssl"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_sam_ssl.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])
    runs = {arm: _train(arm, args) for arm in ("supervised-only", "ssl")}
    diag = _diagnostics(args)
    summary = {arm: {"val": {k: v for k, v in r["val"].items() if k != "per_image_dice"},
                     "seconds": r.get("seconds"), "pseudo": r.get("pseudo")}
               for arm, r in runs.items()}
    print(json.dumps({"runs": summary, "diagnostics": diag}, indent=1))
    text = _report(runs, diag, args, command)
    print(text)
    if not args.no_write:
        update_section(ROOT / "docs" / "benchmarks.md", SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
