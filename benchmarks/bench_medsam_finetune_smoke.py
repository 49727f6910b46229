"""Smoke check of the medsam-lite fine-tuning mechanism (not a result): a short decoder-only
run on cached embeddings, box and click Dice before/after on a few PH2 validation images.

    python benchmarks/bench_medsam_finetune_smoke.py --steps 30 --train 16 --val 8 \
        --out runs/medsam-smoke --threads 1

Train images: the first ``--train`` of PH2's training split (group split, val_fraction 0.2,
seed 0, as every SAM run); validation: the first ``--val`` of its validation split. Scores are
``evaluate_prompts``: box 5% larger than the lesion, and one click + the bad mask as a mask
prompt on a 30%-eroded / 20%-shifted mask. Prints one JSON line (timings included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from napari_lesion_diffkd.core.data.datasets import group_split, scan_pairs
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.sam.evaluation import evaluate_prompts
from napari_lesion_diffkd.core.sam.loading import load_sam
from napari_lesion_diffkd.core.sam.training import (
    SamTrainConfig,
    medsam_lite_start_config,
    train_promptable,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ph2_dermoscopy"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--val", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--out", default="runs/medsam-smoke")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train, val = group_split(scan_pairs(Path(args.data)), 0.2, 0)
    train, val = train[: args.train], val[: args.val]
    config = SamTrainConfig.from_dict({
        **medsam_lite_start_config(), "max_steps": args.steps, "batch_size": args.batch_size,
        "lr": args.lr, "warmup_steps": 3, "val_fraction": 0.0, "checkpoint_every": args.steps})
    t0 = time.monotonic()
    before = evaluate_prompts(load_sam("medsam-lite"), val)["all"]
    t_before = time.monotonic() - t0
    cache_t: list[float] = []
    steps_t: list[float] = []
    last = [time.monotonic()]

    def on_event(event) -> None:
        now = time.monotonic()
        if event.kind == "log" and "cached embedding" in event.message:
            cache_t.append(now)
        if event.kind == "progress":
            steps_t.append(now - last[0])
        last[0] = now

    t1 = time.monotonic()
    summary = run_to_completion(train_promptable(config, train, args.out), on_event=on_event)
    t_train = time.monotonic() - t1
    after = evaluate_prompts(load_sam(args.out), val)["all"]
    keys = ("box_dice", "erode_before", "erode_after", "shift_before", "shift_after")
    steps_t = steps_t[1:]  # the first includes the cache fill
    print(json.dumps({
        "train": len(train), "val": len(val), "steps": summary["steps"],
        "batch_size": args.batch_size, "threads": args.threads,
        "encoder_passes": summary["encoder_passes_cached"],
        "train_seconds": round(t_train, 1),
        "step_seconds_median": round(sorted(steps_t)[len(steps_t) // 2], 2) if steps_t else None,
        "eval_seconds_before": round(t_before, 1),
        "before": {k: round(before[k], 4) for k in keys},
        "after": {k: round(after[k], 4) for k in keys},
        "bundle_bytes": (Path(args.out) / "model.safetensors").stat().st_size}))


if __name__ == "__main__":
    main()
