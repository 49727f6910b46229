"""CT baseline recipe ablation (issue 11 / #18): which difference between the stack notes'
throwaway recipe and the shipped ``ct-unet`` config costs the validation Dice.

Usage:
    nice -n 19 python benchmarks/bench_ct_recipe.py [--configs configs/ablation/ct-r*.yaml]
        [--data ../shared/data/covid19_ct_infection] [--out /tmp/ct-recipe] [--jobs 2]
        [--threads 1] [--max-minutes M] [--score-only]

For each config (default: the from-scratch set ``configs/ablation/ct-r*.yaml`` and
``ct-shipped-budget.yaml``; pass ``--configs configs/ablation/ct-ft*.yaml`` for the warm-start
arms; the ``ct-fit-*`` configs belong to ``--fit-check``) this trains with the project's
own trainer (``lesion-diffkd train --config C --data D --out OUT/<name> --threads T
--device cpu``, under ``nice -n 19``; ``--jobs`` runs at once, each with ``--threads``
threads), then scores the bundle the run wrote on that run's own validation split (group-aware,
20%, seed 0: the same 64 slices as ``models/ct-unet``), at each image's original resolution,
exactly as ``scripts/register_model.py`` scores the model cards (one forward pass,
``evaluate_bundle``). The shipped ``ct-unet`` is scored the same way as a reference row.

Per run: mean and median per-image Dice, pooled Dice (all pixels of the split at once), HD95
(px), the steps the wall-time budget allowed, seconds, and the 1-minute load average at the
start and end (the machine is shared: other people's jobs slow a run down, and with a time
budget that means fewer steps). ``--score-only`` re-scores existing run folders.

``--diagnostics`` (no training, about 5 minutes): the shipped ``ct-unet``'s Dice on its own
training slices vs validation (under- or over-fitting), bf16-autocast vs fp32 gradients of
``ct-unet`` on 8 training batches (cosine similarity, norms), and the Dice ceiling of a
128 px model (validation masks resized 256 -> 128 -> 256 px). Writes
``OUT/diagnostics.json``.

``--fit-check``: makes ``OUT/subset32`` (every 8th training slice of the standard split,
symlinks), trains ``configs/ablation/ct-fit-*.yaml`` on it from scratch, and scores each on
those 32 slices (fit) and on the standard 64 validation slices; ``ct-unet`` is scored on the
same 32 as a reference. Writes ``OUT/fit_check.json``.

Prints a markdown table and writes ``OUT/results.json``. Runs and outputs stay under OUT
(never in the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "covid19_ct_infection"


def _load() -> float:
    return os.getloadavg()[0]


def score_bundle(bundle_ref: str, data: str, threads: int) -> dict[str, Any]:
    """Score a bundle (folder or registered name) on its own stored validation split.

    Returns:
        ``{"dice", "dice_median", "dice_pooled", "hd95", "n", "steps", "train_seconds"}``;
        Dice of the consensus (one forward pass, mask = probability > 0.5) against the mask,
        both (Y, X) bool at the image's original resolution.
    """
    import numpy as np
    import torch

    from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs
    from napari_lesion_diffkd.core.evaluation import evaluate_bundle
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.segmenter import segment_image

    torch.set_num_threads(threads)
    bundle = load_model(bundle_ref)
    prov = bundle.config["provenance"]
    val_ids = set(prov["split"]["val_ids"])
    val = [r for r in scan_pairs(data) if r.id in val_ids]
    if len(val) != len(val_ids):
        raise SystemExit(f"error: {bundle_ref}: found {len(val)} of {len(val_ids)} "
                         f"validation images in {data}")
    evaluation = run_to_completion(evaluate_bundle(bundle, val, num_samples=1))
    # Pooled Dice: one intersection / size sum over all validation pixels, which small
    # lesions weigh less than the per-image mean does (checks that the gap is not a metric).
    inter = total = 0
    for record in val:
        image, mask = read_pair(record)
        pred = run_to_completion(segment_image(bundle, image, num_samples=1, seed=0)).consensus
        gt = np.asarray(mask) > 0
        inter += int((pred & gt).sum())
        total += int(pred.sum() + gt.sum())
    return {"dice": evaluation["mean"]["dice"], "dice_median": evaluation["median"]["dice"],
            "dice_pooled": 2 * inter / max(total, 1), "hd95": evaluation["mean"]["hd95"],
            "n": evaluation["n"], "steps": prov.get("steps"),
            "train_seconds": prov.get("train_seconds")}


def _standard_split(data: str) -> tuple[list[Any], list[Any]]:
    """(train, validation) PairRecords of the split every CT model uses (20%, seed 0)."""
    from napari_lesion_diffkd.core.data.datasets import group_split, scan_pairs

    return group_split(scan_pairs(data), 0.2, 0)


def dice_on(bundle_ref: str, records: list[Any], threads: int) -> dict[str, float]:
    """Mean Dice, sensitivity and precision of a bundle's one-pass mask on ``records``,
    (Y, X) bool at the images' original resolution."""
    import numpy as np
    import torch

    from napari_lesion_diffkd.core.data.datasets import read_pair
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.metrics import dice
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.segmenter import segment_image

    torch.set_num_threads(threads)
    bundle = load_model(bundle_ref)
    ds, sens, prec = [], [], []
    for record in records:
        image, mask = read_pair(record)
        gt = np.asarray(mask) > 0
        pred = run_to_completion(segment_image(bundle, image, num_samples=1, seed=0)).consensus
        tp = int((pred & gt).sum())
        ds.append(dice(pred, gt))
        sens.append(tp / max(int(gt.sum()), 1))
        prec.append(tp / max(int(pred.sum()), 1))
    return {"dice": float(np.mean(ds)), "dice_median": float(np.median(ds)),
            "sensitivity": float(np.mean(sens)), "precision": float(np.mean(prec)), "n": len(ds)}


def diagnostics(args: argparse.Namespace) -> dict[str, Any]:
    """Train-vs-validation fit of ``ct-unet``, bf16 vs fp32 gradients, 128 px mask ceiling."""
    import numpy as np
    import torch
    from torch.nn import functional as F

    from napari_lesion_diffkd.core.data.datasets import load_tensors, read_pair
    from napari_lesion_diffkd.core.metrics import dice
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.training.objectives import segmentation_loss

    torch.set_num_threads(args.threads)
    train, val = _standard_split(args.data)
    out: dict[str, Any] = {"ct_unet_train": dice_on("ct-unet", train, args.threads),
                           "ct_unet_val": dice_on("ct-unet", val, args.threads)}
    net = load_model("ct-unet").network.float().train().to(memory_format=torch.channels_last)
    x, y = load_tensors(train[:64], 256, 1)
    rows = []
    for i in range(0, len(x), 8):  # the shipped batch size, at the shipped weights
        xb = x[i : i + 8].contiguous(memory_format=torch.channels_last)
        yb = (y[i : i + 8] + 1) / 2
        grads = {}
        for bf16 in (False, True):
            net.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = segmentation_loss(net(xb), yb)
            loss.backward()
            grads[bf16] = torch.cat([p.grad.flatten() for p in net.parameters()]).clone()
        rows.append({"cos": float(F.cosine_similarity(grads[False], grads[True], dim=0)),
                     "norm_fp32": float(grads[False].norm()),
                     "norm_bf16": float(grads[True].norm())})
    out["bf16_vs_fp32_gradients"] = rows
    ceiling = []
    for record in val:
        _, mask = read_pair(record)
        m = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))[None, None]
        small = F.interpolate(m, size=(128, 128), mode="bilinear", align_corners=False,
                              antialias=True)
        back = F.interpolate(small, size=m.shape[-2:], mode="bilinear", align_corners=False)
        ceiling.append(dice(back[0, 0].numpy() > 0.5, m[0, 0].numpy() > 0))
    out["mask_128px_round_trip_dice"] = float(np.mean(ceiling))
    return out


def fit_check(args: argparse.Namespace) -> dict[str, Any]:
    """Train the ct-fit-* configs on 32 training slices; score fit and validation Dice."""
    train, val = _standard_split(args.data)
    subset = sorted(train, key=lambda r: r.id)[::8][:32]
    folder = Path(args.out) / "subset32"
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for r in subset:
        for kind, src in (("images", Path(r.image_path)), ("masks", Path(r.mask_path))):
            link = folder / kind / src.name
            if not link.exists():
                link.symlink_to(src)
    (folder / "metadata.csv").write_text(
        "id,group\n" + "".join(f"{r.id},{r.group.split('/')[-1]}\n" for r in subset))
    configs = sorted((ROOT / "configs" / "ablation").glob("ct-fit-*.yaml"))

    def one(config: Path) -> dict[str, Any]:
        row = {"name": config.stem}
        # A finished run (its bundle written) is not trained again: new arms can be added.
        if not args.score_only and not (Path(args.out) / config.stem / "model.safetensors"
                                        ).is_file():
            cmd = ["nice", "-n", "19", str(Path(sys.executable).parent / "lesion-diffkd"),
                   "train", "--config", str(config), "--data", str(folder), "--out",
                   str(Path(args.out) / config.stem), "--threads", str(args.threads),
                   "--device", "cpu"]
            row["command"] = " ".join(cmd)
            with (Path(args.out) / f"{config.stem}.log").open("w") as log:
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
        return row

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(one, configs))
    rows.append({"name": "ct-unet (shipped)"})
    for row in rows:
        ref = "ct-unet" if row["name"].startswith("ct-unet") else str(Path(args.out) / row["name"])
        row["fit_32_train"] = dice_on(ref, subset, args.threads)
        row["val_64"] = dice_on(ref, val, args.threads)
    return {"subset_ids": [r.id for r in subset], "rows": rows}


def _run_one(config: Path, args: argparse.Namespace) -> dict[str, Any]:
    name = config.stem
    out = Path(args.out) / name
    row: dict[str, Any] = {"name": name, "config": str(config.relative_to(ROOT))
                           if config.is_relative_to(ROOT) else str(config)}
    if not args.score_only:
        cmd = ["nice", "-n", "19", str(Path(sys.executable).parent / "lesion-diffkd"), "train",
               "--config", str(config), "--data", str(args.data), "--out", str(out),
               "--threads", str(args.threads), "--device", "cpu"]
        if args.max_minutes is not None:
            cmd += ["--max-minutes", str(args.max_minutes)]
        row["command"] = " ".join(cmd)
        row["load_start"] = _load()
        with (Path(args.out) / f"{name}.log").open("w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
        row["load_end"] = _load()
        if proc.returncode != 0:
            row["error"] = f"train exited {proc.returncode} (see {args.out}/{name}.log)"
            return row
    row.update(_score_subprocess(str(out), args))
    return row


def _score_subprocess(ref: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = ["nice", "-n", "19", sys.executable, __file__, "--score", ref,
           "--data", str(args.data), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                else f"scoring exited {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | Dice (mean) | median | pooled | HD95 px | steps | train s "
             "| load 1-min start/end |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {r['error']} | | | | | | |")
            continue
        load = (f"{r['load_start']:.1f} / {r['load_end']:.1f}" if "load_start" in r else "")
        lines.append(f"| {r['name']} | {r['dice']:.3f} | {r['dice_median']:.3f} | "
                     f"{r['dice_pooled']:.3f} | {r['hd95']:.1f} | {r['steps']} | "
                     f"{r['train_seconds']} | {load} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", default=None)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", default="/tmp/ct-recipe")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--score-only", action="store_true")
    p.add_argument("--diagnostics", action="store_true")
    p.add_argument("--fit-check", action="store_true")
    p.add_argument("--score", help=argparse.SUPPRESS)  # internal: score one bundle, print JSON
    args = p.parse_args(argv)
    if args.score:
        print(json.dumps(score_bundle(args.score, args.data, args.threads)))
        return 0
    if args.diagnostics or args.fit_check:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        name, result = (("diagnostics", diagnostics(args)) if args.diagnostics
                        else ("fit_check", fit_check(args)))
        (Path(args.out) / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=1))
        return 0
    configs = ([Path(c).resolve() for c in args.configs] if args.configs
               else sorted((ROOT / "configs" / "ablation").glob("ct-r*.yaml"))
               + [ROOT / "configs" / "ablation" / "ct-shipped-budget.yaml"])
    if not configs:
        print("error: no configs", file=sys.stderr)
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda c: _run_one(c, args), configs))
    shipped = {"name": "ct-unet (shipped, 48 min)", **_score_subprocess("ct-unet", args)}
    rows.append(shipped)
    result = {"started": started, "data": str(args.data), "jobs": args.jobs,
              "threads": args.threads, "rows": rows}
    (Path(args.out) / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(_table(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
