"""Write the active-learning section of docs/benchmarks.md from a ``simulate-al`` run.

Usage:
    lesion-diffkd simulate-al --config configs/al-sim-ph2.yaml \
        --data ../shared/data/ph2_dermoscopy --out runs/al-sim-ph2 \
        --strategies random uncertainty --rounds 3 --initial 10 --per-round 10 \
        --seeds 0 1 2 --k 8 --threads 1
    python benchmarks/al_report.py runs/al-sim-ph2 [--no-write]

Reads ``learning_curves.csv``, copies ``learning_curves.png`` to
``docs/images/<run name>.png`` and writes a table of the validation Dice per strategy and
number of labels (mean over seeds, and each seed), plus the mean over the query rounds.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402

SECTION = "active-learning"


def load_rows(run: Path) -> list[dict]:
    with (run / "learning_curves.csv").open() as fh:
        return [{**r, "seed": int(r["seed"]), "round": int(r["round"]),
                 "n_labels": int(r["n_labels"]), "val_dice": float(r["val_dice"])}
                for r in csv.DictReader(fh)]


def report(rows: list[dict], run: Path, image: str) -> str:
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    labels = sorted({r["n_labels"] for r in rows})
    lines = [
        "## Active learning: query strategies on PH2 (simulation, ground truth as oracle)",
        "",
        f"Command: `lesion-diffkd simulate-al` as in the header of `benchmarks/al_report.py` "
        f"(run folder `{run}`), then `python benchmarks/al_report.py {run}`. Seeds "
        f"{', '.join(map(str, seeds))}; each round a fresh model (`configs/al-sim-ph2.yaml`: "
        "a small x0 diffusion UNet at 64 px, one-step sampler, 300 steps) is trained on all "
        "labels so far; validation Dice of the STAPLE consensus of K = 8 samples at 64 px on "
        "the PH2 validation split, which no strategy ever queries. `uncertainty` ranks the "
        "unlabelled training images by sample disagreement (1 − mean pairwise Dice of the "
        "K samples).",
        "",
        "| strategy | " + " | ".join(f"{n} labels" for n in labels) + " | mean of query rounds |",
        "|---|" + "---|" * (len(labels) + 1),
    ]
    for s in strategies:
        cells, after = [], []
        for n in labels:
            vals = [r["val_dice"] for r in rows if r["strategy"] == s and r["n_labels"] == n]
            cells.append(f"{np.mean(vals):.4f} ({', '.join(f'{v:.3f}' for v in vals)})")
            if n != labels[0]:
                after += vals
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {np.mean(after):.4f} |")
    lines += ["", "Cells: mean over seeds (each seed in brackets).", "",
              f"![learning curves]({image})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="active-learning section of the benchmarks")
    parser.add_argument("run", type=Path)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    rows = load_rows(args.run)
    image = f"images/{args.run.name}.png"
    text = report(rows, args.run, image)
    if args.no_write:
        print(text)
        return 0
    shutil.copyfile(args.run / "learning_curves.png", ROOT / "docs" / image)
    update_section(ROOT / "docs" / "benchmarks.md", SECTION, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
