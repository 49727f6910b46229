"""Every default model on its modality's validation split: accuracy, cost, latency, peak memory.

Usage:
    python benchmarks/bench_models.py [--images 8] [--k 8] [--threads 1] [--lite-images 1]
        [--no-write]

One subprocess per model (so that each peak-memory figure is that model's alone):

* Dice / IoU / HD95 (pixels) of the consensus at the original resolution, mean over
  ``--images`` validation images evenly spread over the model's stored split (both datasets
  for ultrasound), the images no model trained on; diffusion models: STAPLE of K = ``--k``
  samples, seed 0 (the teachers' own default K may differ: the same K for every row);
* parameters; GFLOPs of one segmentation at K (``core.evaluation.gflops_per_image``);
* latency, median over the images (``segment_image`` on the original image, model already
  loaded, one untimed warm-up): **first mask** = K = 1, no fusion to speak of;
  **K consensus** = K samples + uncertainty + STAPLE;
* peak memory: the process's peak resident set (``resource.getrusage(...).ru_maxrss``) after
  everything, and its rise over the level right after loading the model (the inference's
  own working memory on top of torch, the libraries and the weights).

Also, when the lite student of seed 000 exists (``runs/ablation-efkd``, trained by
``configs/ablation/ph2-lite-efkd.yaml``; not shipped), a row for it at its **published
sampler** (seed 000 §IV: DDPM over all T = 250 steps, nine samples averaged and thresholded at
0, i.e. ``mean`` fusion) on ``--lite-images`` PH2 validation images: 250 network calls of
batch 9 cost minutes per image on this CPU.

Writes the ``models`` section of docs/benchmarks.md (plus ``docs/images/models-latency.png``)
unless ``--no-write``; prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402

SECTION = "models"
MODELS = ("dermoscopy-student", "dermoscopy-teacher", "dermoscopy-unet", "ultrasound-student",
          "ultrasound-teacher", "ultrasound-unet", "ct-student", "ct-teacher", "ct-unet")
LITE = "runs/ablation-efkd"
LITE_SETTINGS = {"sampler": "ddpm", "k": 9, "fusion": "mean"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="default models: accuracy, cost, memory")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lite-images", type=int, default=1,
                   help="PH2 images for the lite student at its published sampler (0: skip)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: one model
    p.add_argument("--sampler", default=None, help=argparse.SUPPRESS)
    p.add_argument("--fusion", default="staple", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _rss_mib() -> float:
    """Current resident set size (MiB) from /proc (Linux); NaN elsewhere."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def _peak_mib() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """The child: load one model, segment its validation images, report."""
    import numpy as np
    import torch

    from bench_onnx import records_of
    from napari_lesion_diffkd.core.data.datasets import read_pair
    from napari_lesion_diffkd.core.evaluation import gflops_per_image
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.metrics import all_metrics
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.segmenter import segment_image

    torch.set_num_threads(args.threads)
    bundle = load_model(args.one, device="cpu")
    records = records_of(bundle, args.images)
    pairs = [read_pair(r) for r in records]
    after_load = _rss_mib()
    deterministic = bundle.config.get("objective") == "segmentation"
    k = 1 if deterministic else args.k
    opts = {"sampler": args.sampler, "fusion": args.fusion}

    def seg(image, kk):
        return run_to_completion(segment_image(bundle, image, num_samples=kk, seed=0, **opts))

    # The published-sampler row (250 steps) skips the warm-up and the K = 1 run: minutes each.
    quick = args.sampler is None
    if quick:
        seg(pairs[0][0], 1)  # warm-up
    first, full, rows = [], [], []
    for (image, mask), record in zip(pairs, records):
        if not deterministic and quick:
            start = time.perf_counter()
            seg(image, 1)
            first.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = seg(image, k)
        full.append(time.perf_counter() - start)
        m = all_metrics(result.consensus, mask)
        rows.append({"dataset": record.dataset, "dice": m["dice"], "iou": m["iou"],
                     "hd95": m["hd95"]})

    def mean(key, sub=rows):
        vals = [r[key] for r in sub if np.isfinite(r[key])]
        return float(np.mean(vals)) if vals else float("nan")

    by_dataset = {d: mean("dice", [r for r in rows if r["dataset"] == d])
                  for d in sorted({r["dataset"] for r in rows})}
    sampler_cfg = result.settings.get("sampler") or {}
    return {
        "model": bundle.name if args.one != LITE else "lite student, EFKD (seed 000)",
        "path": args.one, "modality": bundle.config.get("modality"),
        "role": bundle.config.get("role"), "network": type(bundle.network).__name__,
        "params": bundle.num_parameters,
        "gflops": gflops_per_image(bundle, k) if args.sampler is None else float("nan"),
        "sampler": sampler_cfg.get("_class_name", "-").replace("Sampler", ""),
        "steps": sampler_cfg.get("num_steps"), "k": k, "fusion": None if deterministic
        else args.fusion, "images": len(rows), "dice": mean("dice"), "iou": mean("iou"),
        "hd95": mean("hd95"), "dice_by_dataset": by_dataset,
        "first_mask_s": (statistics.median(first) if first
                         else statistics.median(full) if deterministic else None),
        "consensus_s": None if deterministic else statistics.median(full),
        "rss_after_load_mib": after_load, "peak_rss_mib": _peak_mib(),
        "peak_rise_mib": _peak_mib() - after_load, "threads": args.threads,
    }


def spawn(model: str, args: argparse.Namespace, extra: list[str] | None = None,
          images: int | None = None) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--one", model, "--images", str(images or args.images),
           "--k", str(args.k), "--threads", str(args.threads), *(extra or [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        print(f"warning: {model} failed: {proc.stderr.strip()[-800:]}", file=sys.stderr)
        return None
    row = json.loads(lines[-1])
    print(json.dumps(row), flush=True)
    return row


def _f(v: Any, spec: str) -> str:
    return "–" if v is None or v != v else format(v, spec)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        x = r["consensus_s"] or r["first_mask_s"]
        ax.scatter(x, r["dice"], s=30)
        ax.annotate(r["model"], (x, r["dice"]), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (K consensus; UNets: one mask), log scale")
    ax.set_ylabel("validation Dice")
    ax.set_title("default models on this CPU")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[dict[str, Any]], notes: list[str], args: argparse.Namespace,
           command: str) -> str:
    from bench_students import machine_name

    lines = [
        "## Default models: accuracy, cost, latency, peak memory",
        "",
        f"Command: `{command}` ({machine_name()}, {args.threads} torch thread(s), "
        f"{datetime.date.today().isoformat()}); one process per model.",
        "",
        f"{args.images} validation images per model, evenly spread over its stored split (no "
        "training image); scored at the original resolution, HD95 in pixels. Diffusion "
        f"models: STAPLE consensus of K = {args.k} samples, seed 0 (the same K for every "
        "row). Latency: median seconds per image on the original image, model loaded, "
        "after a warm-up; first mask = K = 1; K consensus = K samples + uncertainty + "
        "STAPLE. Peak RSS: the process's peak resident memory (torch and libraries "
        "included); rise = peak minus the level right after loading the model. GFLOPs: one "
        "segmentation at K, convolutions and matrix products.",
        "",
        "| modality | model | network | params | sampler | K | GFLOPs | Dice | IoU | HD95 | "
        "first mask (s) | K consensus (s) | peak RSS (MiB) | rise (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sampler = r["sampler"] + (f" {r['steps']}" if r.get("steps") else "")
        if r.get("fusion") and r["fusion"] != "staple":
            sampler += f", {r['fusion']} fusion"
        dice = _f(r["dice"], ".4f")
        if len(r["dice_by_dataset"]) > 1:
            dice += " (" + ", ".join(f"{d.split('_')[0]} {v:.3f}"
                                     for d, v in r["dice_by_dataset"].items()) + ")"
        lines.append(
            f"| {r['modality']} | {r['model']} | {r['network']} | {r['params'] / 1e6:.2f}M | "
            f"{sampler if r['fusion'] else '–'} | {r['k']} | {_f(r['gflops'], '.2f')} | "
            f"{dice} (n = {r['images']}) | {_f(r['iou'], '.4f')} | {_f(r['hd95'], '.2f')} | "
            f"{_f(r['first_mask_s'], '.3f')} | {_f(r['consensus_s'], '.3f')} | "
            f"{r['peak_rss_mib']:.0f} | {r['peak_rise_mib']:.0f} |")
    lines += ["", "![latency vs Dice](images/models-latency.png)"]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    command = "python benchmarks/bench_models.py " + shlex.join(
        sys.argv[1:] if argv is None else list(argv))
    rows, notes = [], []
    for model in MODELS:
        row = spawn(model, args)
        if row is None:
            notes.append(f"{model}: failed (see the run's stderr)")
        else:
            rows.append(row)
    lite = ROOT / LITE
    if args.lite_images and (lite / "config.json").is_file():
        extra = ["--sampler", LITE_SETTINGS["sampler"], "--fusion", LITE_SETTINGS["fusion"],
                 "--k", str(LITE_SETTINGS["k"])]
        row = spawn(str(lite), args, extra, images=args.lite_images)
        if row is not None:
            rows.append(row)
            notes.append(f"The lite student row is seed 000's published sampler (DDPM, all "
                         f"250 steps, 9 samples, mean fusion) on {row['images']} PH2 "
                         "image(s) only: 250 network calls of batch 9 per image; its GFLOPs "
                         "are in the ablation section (DDIM 10).")
    elif args.lite_images:
        notes.append(f"No lite-student row: {LITE} is not trained on this machine (see "
                     "configs/ablation/ph2-lite-efkd.yaml).")
    text = report(rows, notes, args, command.strip())
    print(text)
    if not args.no_write:
        plot(rows, ROOT / "docs" / "images" / "models-latency.png")
        update_section(ROOT / "docs" / "benchmarks.md", SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
