"""How reproducible is a teacher's pixel-variance map, and how close does its student get?

Usage:
    python benchmarks/bench_variance_ceiling.py [--modality ct] [--images 16] [--k 8]
        [--threads 2] [--teacher NAME_OR_PATH] [--student NAME_OR_PATH]
        [--factors F [F ...]]

On ``--images`` evenly spaced validation images of the student's split, K samples each
(``segment_image``, hard masks at the original resolution), prints the mean per-image Pearson
correlation of the pixel-variance maps (``variance_correlation``) for:

* teacher seed 0 vs teacher seed 1: the ceiling a student with the teacher's per-pixel vote
  fractions could reach even with other noises;
* student seed 0 vs teacher seed 0: the pairing of ``bench_students.py`` (same noises);
* student seed 1 vs teacher seed 0: the student's spread against the teacher's, noises apart.

With ``--factors``, the two student rows are repeated for each spread-inflation factor of the
one-step sampler (``OneStepSampler(spread_inflation=F)``; 1 = the raw samples), whatever
factor the student's bundle stores.

Prints one JSON line; writes nothing (docs/benchmarks.md quotes it by hand, with this command).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_spread_inflation import with_factor  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="variance-map reproducibility (see the docstring)")
    p.add_argument("--modality", default="ct")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--teacher", default=None, help="default: <modality>-teacher")
    p.add_argument("--student", default=None, help="default: <modality>-student")
    p.add_argument("--factors", type=float, nargs="+", default=None,
                   help="spread-inflation factors to try (default: the bundle's own)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs
    from napari_lesion_diffkd.core.data.locate import find_data_root
    from napari_lesion_diffkd.core.ensemble.uncertainty_eval import variance_correlation
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.segmenter import segment_image

    teacher = load_model(args.teacher or f"{args.modality}-teacher")
    student = load_model(args.student or f"{args.modality}-student")
    provenance = student.config.get("provenance") or {}
    val_ids = set((provenance.get("split") or {}).get("val_ids") or [])
    # Provenance folders are absolute paths of the training machine: look for the same
    # dataset name under this machine's data root when they are not here.
    root = find_data_root()
    folders = [d if Path(d).is_dir() or root is None else root / Path(d).name
               for d in provenance.get("data") or []]
    records = [r for d in folders for r in scan_pairs(d) if r.id in val_ids]
    if not records:
        print(f"{student.name}: no validation ids or data folders in its provenance",
              file=sys.stderr)
        return 2
    picks = np.linspace(0, len(records) - 1, min(args.images, len(records))).round().astype(int)

    def samples(bundle, image, seed):
        return run_to_completion(segment_image(bundle, image, num_samples=args.k,
                                               seed=seed)).samples

    students = ({None: student} if not args.factors
                else {f: with_factor(student, f) for f in args.factors})
    rows = []
    for i in picks:
        image, _ = read_pair(records[i])
        t0, t1 = samples(teacher, image, 0), samples(teacher, image, 1)
        row = [variance_correlation(t0, t1)]
        for bundle in students.values():
            s0, s1 = samples(bundle, image, 0), samples(bundle, image, 1)
            row += [variance_correlation(s0, t0), variance_correlation(s1, t0)]
        rows.append(row)
        print(records[i].id, np.round(rows[-1], 3), file=sys.stderr, flush=True)
    means = [round(float(m), 3) for m in np.nanmean(np.array(rows, dtype=np.float64), axis=0)]
    summary = {"teacher": teacher.name, "student": student.name, "images": len(rows),
               "k": args.k, "teacher_seed0_vs_teacher_seed1": means[0]}
    for j, factor in enumerate(students):
        tag = "" if factor is None else f"_inflation_{factor:g}"
        summary[f"student_seed0_vs_teacher_seed0{tag}"] = means[1 + 2 * j]
        summary[f"student_seed1_vs_teacher_seed0{tag}"] = means[2 + 2 * j]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
