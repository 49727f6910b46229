"""``lesion-diffkd calibrate-spread``: fit a one-step student's spread inflation to its teacher.

    lesion-diffkd calibrate-spread --student runs/ct-student --teacher ct-teacher \\
        --out runs/ct-student-calibrated [--images 48] [--k 8] [--grid 1 1.5 2 3] [--threads 2]

Uses ``--images`` evenly spaced images of the student's *training* split (its provenance's
data folders minus its validation ids; see ``core/distillation/spread_calibration.py``),
writes a copy of the student with ``sampler.spread_inflation`` set to the best factor, and
prints one JSON line (factor, every candidate's score). Exit 2 with a message on a missing
or unreadable bundle, a student that is not a one-step student, or no training images.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate-spread",
                       help="fit a one-step student's sample spread to its teacher's "
                            "(on training images) and write the calibrated bundle")
    p.add_argument("--student", required=True, help="student: registered name or bundle folder")
    p.add_argument("--teacher", required=True, help="teacher: registered name or bundle folder")
    p.add_argument("--out", required=True, help="output bundle folder (a new folder)")
    p.add_argument("--images", type=int, default=48,
                   help="training images used, evenly spaced (default 48)")
    p.add_argument("--k", type=int, default=8, help="samples per image and model (default 8)")
    p.add_argument("--grid", type=float, nargs="+", default=None,
                   help="candidate factors (default 1 1.25 1.5 2 2.5 3 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run)


def _training_records(student) -> list:
    """The student's training pairs: its provenance's data folders minus its validation ids.
    Folders recorded on another machine are looked up by name under this machine's data root."""
    from napari_lesion_diffkd.core.data.datasets import scan_pairs
    from napari_lesion_diffkd.core.data.locate import find_data_root

    provenance = student.config.get("provenance") or {}
    val_ids = set((provenance.get("split") or {}).get("val_ids") or [])
    root = find_data_root()
    records = []
    for folder in provenance.get("data") or []:
        path = Path(folder)
        if not path.is_dir() and root is not None:
            path = root / path.name
        if not path.is_dir():
            raise ValueError(f"{student.name}: its training data folder {folder} is not here")
        records += [r for r in scan_pairs(path) if r.id not in val_ids]
    if not records:
        raise ValueError(f"{student.name}: no training images found from its provenance "
                         "(data folders and validation ids)")
    return records


def run(args: argparse.Namespace) -> int:
    import torch

    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.core.data.datasets import load_tensors
    from napari_lesion_diffkd.core.distillation.spread_calibration import (
        DEFAULT_GRID,
        calibrate_spread_inflation,
        write_calibrated_bundle,
    )
    from napari_lesion_diffkd.core.registry import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.images < 1:
        print("error: --images must be >= 1", file=sys.stderr)
        return 2
    try:
        student = load_model(args.student)
        teacher = load_model(args.teacher)
        records = _training_records(student)
        picks = [records[int(i * len(records) / min(args.images, len(records)))]
                 for i in range(min(args.images, len(records)))]
        images, _ = load_tensors(picks, student.input_size, student.image_channels)
        gen = calibrate_spread_inflation(teacher, student, images, num_samples=args.k,
                                         grid=args.grid or DEFAULT_GRID, seed=args.seed,
                                         image_ids=[r.id for r in picks])
        last = -1
        try:
            while True:
                event = next(gen)
                done = event.step * 10 // max(1, event.total)
                if done != last:  # a line per 10%
                    print(f"{event.message} ({event.step}/{event.total})", file=sys.stderr,
                          flush=True)
                    last = done
        except StopIteration as stop:
            calibration = stop.value
        command = "lesion-diffkd " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        out = write_calibrated_bundle(student, calibration, args.out, teacher.name,
                                      command=command)
    except (BundleError, LookupError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), "factor": calibration.factor,
                      "candidates": calibration.to_config()["candidates"],
                      "images": calibration.num_images, "defined": calibration.num_defined}))
    return 0
