"""Accuracy of the modality detector (``core.data.modality``) on the four datasets.

Every image of each dataset in ``shared/data`` is read the way the app reads a file
(``core.data.readers.read_image``: no DICOM tag, no project setting, so the *content* alone
decides) and passed to :func:`detect_modality`. Prints a markdown table (accuracy per
modality, confusion incl. "unknown", mean confidence, time per image) and, with
``--write``, puts it into docs/benchmarks.md's ``modality`` section.

    python benchmarks/bench_modality.py [--data ../shared/data] [--limit N] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = {
    "ph2_dermoscopy": "dermoscopy",
    "busbra_breast_ultrasound": "ultrasound",
    "ddti_thyroid_ultrasound": "ultrasound",
    "covid19_ct_infection": "ct",
}
CLASSES = ("dermoscopy", "ultrasound", "ct", None)


def measure(data: Path, limit: int | None = None) -> dict[str, dict]:
    import numpy as np

    from napari_lesion_diffkd.core.data.modality import detect_modality
    from napari_lesion_diffkd.core.data.readers import read_image

    out = {}
    for name, truth in DATASETS.items():
        paths = sorted((data / name / "images").iterdir())[:limit]
        guesses, conf, seconds = Counter(), [], []
        wrong = []
        for path in paths:
            image = read_image(path)
            arr = np.asarray(image.data)
            t0 = time.perf_counter()
            meta = {**image.metadata, "modality": image.modality}
            guess = detect_modality(arr, meta, rgb=arr.ndim == 3 and arr.shape[-1] in (3, 4))
            seconds.append(time.perf_counter() - t0)
            guesses[guess.modality] += 1
            conf.append(guess.confidence)
            if guess.modality != truth:
                wrong.append(path.name)
        out[name] = {"truth": truth, "n": len(paths), "guesses": guesses,
                     "confidence": float(np.mean(conf)),
                     "ms": 1000 * float(np.median(seconds)), "wrong": wrong[:5]}
    return out


def table(results: dict[str, dict]) -> str:
    lines = ["| dataset | true modality | n | correct | dermoscopy | ultrasound | ct | unknown "
             "| mean confidence | median ms / image |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    per_modality: dict[str, list[int]] = {}
    for name, r in results.items():
        g = r["guesses"]
        correct = g[r["truth"]]
        acc = per_modality.setdefault(r["truth"], [0, 0])
        acc[0] += correct
        acc[1] += r["n"]
        cells = " | ".join(str(g[c]) for c in CLASSES)
        lines.append(f"| {name} | {r['truth']} | {r['n']} | **{100 * correct / r['n']:.1f}%** | "
                     f"{cells} | {r['confidence']:.2f} | {r['ms']:.1f} |")
    lines += ["", "| modality | images | accuracy |", "|---|---|---|"]
    total = [0, 0]
    for modality, (ok, n) in per_modality.items():
        lines.append(f"| {modality} | {n} | **{100 * ok / n:.1f}%** |")
        total[0] += ok
        total[1] += n
    lines.append(f"| all | {total[1]} | **{100 * total[0] / total[1]:.1f}%** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--limit", type=int, default=None, help="images per dataset")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    results = measure(Path(args.data), args.limit)
    text = table(results)
    print(text)
    for name, r in results.items():
        if r["wrong"]:
            print(f"{name}: e.g. {', '.join(r['wrong'])}", file=sys.stderr)
    if args.write:
        write_table(ROOT / "docs" / "benchmarks.md", text)
    return 0


def write_table(path: Path, table: str) -> None:
    """Replace the tables inside docs/benchmarks.md's ``modality`` section (its prose is
    kept); a missing section is appended with the tables only."""
    import re

    from benchmarks._report import update_section

    doc = path.read_text()
    start, end = "<!-- modality:start -->", "<!-- modality:end -->"
    if start not in doc or end not in doc:
        update_section(path, "modality", "## Modality detector\n\n" + table)
        return
    before, rest = doc.split(start, 1)
    body, after = rest.split(end, 1)
    pattern = re.compile(r"\| dataset \|.*?\n\| all \|[^\n]*", re.S)
    body = pattern.sub(lambda _: table, body, count=1)
    path.write_text(before + start + body + end + after)


if __name__ == "__main__":
    sys.exit(main())
