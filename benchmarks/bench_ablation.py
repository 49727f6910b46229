"""PH2 ablation of the students: the teacher, seed 000's lite student without KD / with general
KD / with EFKD, and the project's fast student, side by side in one run.

Usage:
    python benchmarks/bench_ablation.py [--models NAME_OR_PATH ...] [--labels LABEL ...]
        [--k 8] [--images N] [--threads 2] [--no-write]

Default models (train the three lite students first; commands in docs/benchmarks.md and in
the headers of ``configs/ablation/*.yaml``):

    dermoscopy-teacher  runs/ablation-nokd  runs/ablation-general  runs/ablation-efkd
    dermoscopy-student

All are scored on the same PH2 validation images (the first model's split; every model's
stored split must be the same set, else the script stops), per image:

* Dice / HD95 (pixels) of the STAPLE consensus of K samples at the image's original
  resolution (``segment_image(bundle, image, num_samples=K, seed=0)``);
* CPU seconds: K samples + uncertainty map + STAPLE at the model's working resolution, the
  same prepared input for every model, one untimed warm-up, the models' order alternating
  between images; median over images;
* parameters, and GFLOPs of one full sampler run at K for one image (``FlopCounterMode``).

Writes the ``ablation`` section of docs/benchmarks.md (unless ``--no-write``) and prints a JSON
summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402
from bench_students import (  # noqa: E402
    _f,
    _jsonable,
    _mean,
    _median,
    _sampler_label,
    count_gflops,
    evenly_spaced,
    ensemble_chain,
    machine_name,
    score_result,
    segment,
    timed,
)

SECTION = "ablation"
DEFAULT_MODELS = ["dermoscopy-teacher", "runs/ablation-nokd", "runs/ablation-general",
                  "runs/ablation-efkd", "dermoscopy-student"]
DEFAULT_LABELS = ["teacher (DermoSegDiff-style, x0)", "lite student, no KD",
                  "lite student, general KD (eq. 2)", "lite student, EFKD (eqs. 3-7)",
                  "fast student (trajectory KD + EFKD weighting)"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PH2 student ablation (see the docstring).")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--labels", nargs="+", default=None,
                        help="one row label per model (default: the five default rows)")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--images", type=int, default=None,
                        help="N validation images spread evenly over the split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.labels is None:
        args.labels = DEFAULT_LABELS if args.models == DEFAULT_MODELS else list(args.models)
    if len(args.labels) != len(args.models):
        parser.error("--labels needs one label per model")
    if args.k < 1 or (args.images is not None and args.images < 1):
        parser.error("--k and --images must be >= 1")
    return args


def shared_records(bundles: list, limit: int | None) -> list:
    """The validation pairs of the first bundle; stops if any bundle's split differs."""
    from napari_lesion_diffkd.core.data.datasets import scan_pairs

    first = bundles[0].config["provenance"]
    val_ids = set(first["split"]["val_ids"])
    for b in bundles[1:]:
        other = set(b.config["provenance"]["split"]["val_ids"])
        if other != val_ids:
            raise SystemExit(f"{b.name} was validated on other images than {bundles[0].name}: "
                             "the rows would not be comparable")
    records = [r for d in first["data"] for r in scan_pairs(d) if r.id in val_ids]
    return evenly_spaced(records, limit)


def bench(bundles: list, labels: list[str], records: list, k: int) -> list[dict[str, Any]]:
    from napari_lesion_diffkd.core.data.datasets import read_pair
    from napari_lesion_diffkd.core.data.preprocess import prepare_image
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler, sample_seeds

    seeds = sample_seeds(0, k)
    samplers = [build_bundle_sampler(b, None, None) for b in bundles]
    times: list[list[float]] = [[] for _ in bundles]
    rows: list[list[dict[str, Any]]] = [[] for _ in bundles]
    gflops: list[float] = []
    order = list(range(len(bundles)))
    for i, record in enumerate(records):
        image, mask = read_pair(record)
        conds = [prepare_image(image, b.input_size, b.image_channels)[None] for b in bundles]
        if i == 0:
            for j, b in enumerate(bundles):
                gflops.append(count_gflops(b, samplers[j], conds[j], seeds))
                timed(lambda j=j: ensemble_chain(bundles[j], samplers[j], conds[j], seeds))
        for j in order if i % 2 == 0 else order[::-1]:
            times[j].append(timed(
                lambda j=j: ensemble_chain(bundles[j], samplers[j], conds[j], seeds)))
        for j, b in enumerate(bundles):
            rows[j].append(score_result(segment(b, image, k), mask))
        print(f"  {i + 1}/{len(records)} {record.id}: " + "  ".join(
            f"{rows[j][-1]['dice']:.3f}/{times[j][-1]:.3f}s" for j in order),
            file=sys.stderr, flush=True)
    return [{
        "label": labels[j], "model": b.name, "sampler": samplers[j].to_config(),
        "params": b.num_parameters, "gflops_per_image": gflops[j],
        "median_s_k": _median(times[j]),
        "dice": _mean([r["dice"] for r in rows[j]]),
        "hd95": _mean([r["hd95"] for r in rows[j]]),
        "n_undefined_hd95": sum(1 for r in rows[j] if not math.isfinite(r["hd95"])),
    } for j, b in enumerate(bundles)]


def report(results: list[dict[str, Any]], n: int, k: int, command: str, threads: int) -> str:
    lines = [
        "## PH2 ablation: teacher, seed 000's lite student (no KD / general KD / EFKD), fast "
        "student",
        "",
        f"Command: `{command}` ({machine_name()}, {os.cpu_count()} cores, {threads} torch "
        f"threads, {datetime.date.today().isoformat()}); {n} PH2 validation images none of "
        f"the models trained on, K = {k}.",
        "",
        "Dice / HD95: STAPLE consensus of K samples at the original resolution, mean over "
        "images. Seconds: median per image of K samples + uncertainty + STAPLE at 128 px "
        "(the same prepared input for every model, after a warm-up). GFLOPs: one sampler run "
        "of K samples on one image (convolutions and matrix products).",
        "",
        "| model | sampler | params | GFLOPs / image | CPU s / image | Dice | HD95 (px) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} (`{r['model']}`) | {_sampler_label(r['sampler'])} | "
            f"{r['params'] / 1e6:.2f}M | {_f(r['gflops_per_image'], '.2f')} | "
            f"{_f(r['median_s_k'], '.3f')} | {_f(r['dice'], '.4f')} | {_f(r['hd95'], '.2f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from napari_lesion_diffkd.core.registry import UnknownModelError, load_model

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    given = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/bench_ablation.py" + "".join(" " + shlex.quote(a) for a in given)
    try:
        bundles = [load_model(m, device="cpu") for m in args.models]
    except UnknownModelError as exc:
        raise SystemExit(f"{exc} (train the ablation students first: see "
                         "configs/ablation/*.yaml)") from exc
    records = shared_records(bundles, args.images)
    if not records:
        raise SystemExit("no validation images found")
    results = bench(bundles, args.labels, records, args.k)
    summary = {"command": command, "k": args.k, "n": len(records), "results": results}
    print(json.dumps(_jsonable(summary)), flush=True)
    text = report(results, len(records), args.k, command, args.threads)
    if args.no_write:
        print(text, file=sys.stderr)
    else:
        update_section(ROOT / "docs" / "benchmarks.md", SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
