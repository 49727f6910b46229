"""What the one-step sampler's spread inflation does to students, on validation images.

Usage:
    python benchmarks/bench_spread_inflation.py [--modality ct] [--students NAME_OR_PATH ...]
        [--factors 1 1.5 2 2.5 3 4] [--images 32] [--k 8] [--threads 1]

For each student and each factor F (``OneStepSampler(spread_inflation=F)``, 1 = the raw
samples, whatever factor the bundle stores), on ``--images`` evenly spaced validation images
of the split ``bench_students.py`` uses, with seed 0 for every model (the same K noises):

* Dice of the STAPLE consensus at the original resolution (mean over images);
* hard variance correlation with the teacher's K samples (``variance_correlation``, mean);
* pooled error AUROC of the uncertainty map, and the Spearman correlation between the
  per-image ``sample_disagreement`` and 1 − Dice (the two "informative uncertainty" figures
  of ``bench_students.py``).

The teacher runs once per image; its own Dice, error AUROC and Spearman head the table.
Prints a Markdown table and one JSON line; writes nothing (docs/benchmarks.md quotes it by
hand, with this command).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_students import (  # noqa: E402
    _mean,
    _pooled_auroc,
    score_result,
    segment,
    validation_records,
)


def with_factor(bundle, factor: float):
    """The same network with its one-step sampler's spread inflation set to ``factor``."""
    sampler = {**bundle.config.get("sampler", {}), "spread_inflation": factor}
    return dataclasses.replace(bundle, config={**bundle.config, "sampler": sampler})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="spread inflation on validation images "
                                            "(see the docstring)")
    p.add_argument("--modality", default="ct")
    p.add_argument("--students", nargs="+", default=None, help="default: <modality>-student")
    p.add_argument("--factors", type=float, nargs="+", default=[1, 1.5, 2, 2.5, 3, 4])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from napari_lesion_diffkd.core.data.datasets import read_pair
    from napari_lesion_diffkd.core.ensemble.uncertainty_eval import spearman, variance_correlation
    from napari_lesion_diffkd.core.registry import load_model

    teacher = load_model(f"{args.modality}-teacher", device="cpu")
    names = args.students or [f"{args.modality}-student"]
    students = {name: load_model(name, device="cpu") for name in names}
    records = validation_records(teacher, next(iter(students.values())), args.images)
    variants = {(name, f): with_factor(bundle, f) for name, bundle in students.items()
                for f in args.factors}
    rows: dict[tuple[str, float | None], list[dict]] = {(teacher.name, None): []}
    rows.update({key: [] for key in variants})
    for i, record in enumerate(records):
        image, mask = read_pair(record)
        t_result = segment(teacher, image, args.k)
        t_samples = t_result.samples
        rows[(teacher.name, None)].append({**score_result(t_result, mask),
                                           "corr": float("nan")})
        for key, bundle in variants.items():
            result = segment(bundle, image, args.k)
            row = score_result(result, mask)
            row["corr"] = variance_correlation(result.samples, t_samples)
            rows[key].append(row)
        print(f"{i + 1}/{len(records)} {record.id}", file=sys.stderr, flush=True)

    summary = []
    for (name, factor), rs in rows.items():
        dice = [r["dice"] for r in rs]
        corr = [r["corr"] for r in rs]
        summary.append({
            "student": name, "factor": factor, "dice": round(_mean(dice), 4),
            "variance_corr": (round(float(np.nanmean(corr)), 3) if np.isfinite(corr).any()
                              else None),
            "auroc_pooled": round(_pooled_auroc([r["counts"] for r in rs]), 3),
            "spearman": round(spearman([r["disagreement"] for r in rs], [1 - d for d in dice]),
                              2),
        })
    print("| model | factor | Dice | variance corr. (hard) | error AUROC | Spearman |")
    print("|---|---|---|---|---|---|")
    for s in summary:
        factor = "teacher" if s["factor"] is None else f"{s['factor']:g}"
        corr = "–" if s["variance_corr"] is None else f"{s['variance_corr']:.3f}"
        print(f"| {s['student']} | {factor} | {s['dice']:.4f} | {corr} "
              f"| {s['auroc_pooled']:.3f} | {s['spearman']:.2f} |")
    print(json.dumps({"teacher": teacher.name, "images": len(records), "k": args.k,
                      "results": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
