"""Each default teacher beside the plain UNet baseline a user would pick instead.

Usage:
    python benchmarks/bench_teachers.py [--modalities dermoscopy ultrasound ct] [--samples K]

Both models of a modality are scored on the teacher's own validation split (ids stored in its
bundle; the baseline's group split with the same seed is checked to be identical), at each
image's original resolution, with the teacher's default sampler and STAPLE fusion. Writes the
``teachers`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modalities", nargs="+", default=["dermoscopy", "ultrasound", "ct"])
    parser.add_argument("--samples", type=int, default=None, help="K (teacher default if unset)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--from-cards", action="store_true",
                        help="use the validation metrics scripts/register_model.py stored in "
                             "each bundle (same images and settings) instead of re-running; "
                             "the s / image column is then left out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from napari_lesion_diffkd.core.data.datasets import scan_pairs
    from napari_lesion_diffkd.core.evaluation import evaluate_bundle
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import UnknownModelError, load_model

    rows = []
    for modality in args.modalities:
        try:
            teacher = load_model(f"{modality}-teacher")
            baseline = load_model(f"{modality}-unet")
        except UnknownModelError as exc:
            print(f"skipping {modality}: {exc}", file=sys.stderr)
            continue
        prov = teacher.config["provenance"]
        val_ids = set(prov["split"]["val_ids"])
        if set(baseline.config["provenance"]["split"]["val_ids"]) != val_ids:
            raise SystemExit(f"{modality}: teacher and baseline validation splits differ")
        records = [r for d in prov["data"] for r in scan_pairs(d) if r.id in val_ids]
        k = args.samples or teacher.config["sampler"].get("num_samples", 8)
        for bundle, kk in ((teacher, k), (baseline, 1)):
            ev = (_stored_evaluation(bundle) if args.from_cards
                  else run_to_completion(evaluate_bundle(bundle, records, num_samples=kk)))
            kk = ev.get("k", kk)
            m = ev["mean"]
            row = {"modality": modality, "model": bundle.name,
                   "architecture": bundle.config["network"]["_class_name"],
                   "params_M": bundle.num_parameters / 1e6, "K": kk,
                   "sampler": bundle.config.get("sampler", {}).get("name")
                   if bundle.config.get("objective") != "segmentation" else "-",
                   "n": ev["n"], "dice": m["dice"], "iou": m["iou"], "hd95": m["hd95"],
                   "sec": ev["seconds_per_image_median"],
                   "train_min": bundle.config["provenance"]["train_seconds"] / 60,
                   "by_dataset": {d: v["dice"] for d, v in ev["by_dataset"].items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        "## Teachers beside the plain UNet baseline",
        "",
        "Command: `python benchmarks/bench_teachers.py --modalities "
        f"{' '.join(args.modalities)}{' --from-cards' if args.from_cards else ''}`"
        f" ({args.threads} torch threads). Validation images the models never trained on "
        "(group-aware split stored in each bundle), scored at original resolution; HD95 in "
        "pixels; seconds = median per image including STAPLE.",
        "",
        "| modality | model | architecture | params | K / sampler | n | Dice | IoU | HD95 | s / image | trained (min, CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{d.split('_')[0]} {v:.3f}" for d, v in r["by_dataset"].items())
        dice = f"{r['dice']:.4f}" + (f" ({per})" if len(r["by_dataset"]) > 1 else "")
        lines.append(f"| {r['modality']} | {r['model']} | {r['architecture']} | "
                     f"{r['params_M']:.2f}M | {r['K']} / {r['sampler']} | {r['n']} | {dice} | "
                     f"{r['iou']:.4f} | {r['hd95']:.2f} | "
                     + ("-" if r["sec"] is None else f"{r['sec']:.3f}")
                     + f" | {r['train_min']:.0f} |")
    update_section(ROOT / "docs" / "benchmarks.md", "teachers", "\n".join(lines))
    return 0


def _stored_evaluation(bundle) -> dict:
    """The evaluation ``scripts/register_model.py`` stored in a bundle's config, shaped like
    ``evaluate_bundle``'s summary (no timing: it ran on a busy machine)."""
    m = bundle.config.get("metrics", {})
    if "dice" not in m:
        raise SystemExit(f"{bundle.name}: no stored evaluation; run scripts/register_model.py")
    return {"n": m["n_val"], "k": m.get("eval_num_samples"),
            "mean": {"dice": m["dice"], "iou": m["iou"], "hd95": m["hd95_px"]},
            "seconds_per_image_median": None,
            "by_dataset": m.get("by_dataset", {})}


if __name__ == "__main__":
    sys.exit(main())
