"""``lesion-diffkd evaluate``: score predicted masks against ground-truth masks.

Pairs ``PRED/<stem>.png`` with ``GT/<stem>.png`` (``*_uncertainty.png`` in PRED, written
by ``predict``, is ignored; so is everything that is not a PNG, e.g. ``*_samples.tif``).
Nothing is resized: a shape mismatch is reported by name on stderr and counted as failed,
as is an unreadable file. Masks are binarised as ``value > --threshold`` (default 127 for
{0, 255} masks; use ``--threshold 0`` for {0, 1} masks); RGB(A) masks use the max of the
colour channels.

Writes one CSV row per matched image (default ``PRED/metrics.csv``; columns ``id, dice,
iou, sensitivity, specificity, accuracy, hd95, assd``, distances in ``--spacing`` units,
else pixels; ``inf`` when exactly one of the two masks is empty) and prints one JSON line:
``{"n_images", "n_missing" (GT stems without a prediction), "n_extra" (predictions
without GT), "n_failed", "metrics": {name: {"mean", "median", "n_inf"}}}`` where mean and
median are over the finite values (null if none) and ``n_inf`` counts infinite ones.
Exit code 1 if any pair failed or nothing matched, else 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]

#: Stems ending like this in the prediction folder are not masks (see ``predict``).
IGNORED_SUFFIXES = ("_uncertainty",)


def _spacing_arg(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"spacing must be numbers like 0.7,0.5: {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"spacing values must be positive: {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` parser to ``sub`` with ``func=run``."""
    p = sub.add_parser(
        "evaluate",
        help="score predicted masks against ground truth",
        description="Per-image Dice, IoU, sensitivity, specificity, accuracy, HD95 and ASSD "
        "(MONAI conventions) of PRED/<stem>.png against GT/<stem>.png.",
    )
    p.add_argument("--pred", required=True, help="folder of predicted masks <stem>.png")
    p.add_argument("--gt", required=True, help="folder of ground-truth masks <stem>.png")
    p.add_argument(
        "--spacing",
        type=_spacing_arg,
        default=None,
        help="pixel size per array axis, row first: Y,X (e.g. 0.7,0.5); default 1 (pixels)",
    )
    p.add_argument("--csv", default=None, help="per-image CSV path (default PRED/metrics.csv)")
    p.add_argument(
        "--threshold",
        type=float,
        default=127,
        help="mask pixels > threshold are lesion (default 127; 0 for {0,1} masks)",
    )
    p.set_defaults(func=run)


def _mask_files(folder: Path, ignore_suffixes: tuple[str, ...] = ()) -> dict[str, Path]:
    """Map stem -> path of the ``*.png`` files in ``folder`` (case-insensitive suffix)."""
    out = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() != ".png":
            continue
        if any(path.stem.endswith(s) for s in ignore_suffixes):
            continue
        out[path.stem] = path
    return out


def run(args: argparse.Namespace) -> int:
    """Score every matched pair, write the CSV, print the JSON summary; return the exit code."""
    import csv
    import json
    import sys

    import numpy as np

    from napari_lesion_diffkd.core.data.readers import read_image
    from napari_lesion_diffkd.core.metrics import METRIC_NAMES, all_metrics

    pred_dir, gt_dir = Path(args.pred), Path(args.gt)
    for name, folder in (("--pred", pred_dir), ("--gt", gt_dir)):
        if not folder.is_dir():
            print(f"evaluate: {name} folder not found: {folder}", file=sys.stderr)
            return 1
    spacing = getattr(args, "spacing", None)
    threshold = float(getattr(args, "threshold", 127))
    csv_path = Path(args.csv) if getattr(args, "csv", None) else pred_dir / "metrics.csv"

    preds = _mask_files(pred_dir, IGNORED_SUFFIXES)
    gts = _mask_files(gt_dir)
    matched = [s for s in gts if s in preds]
    n_missing = sum(1 for s in gts if s not in preds)
    n_extra = sum(1 for s in preds if s not in gts)

    def read_mask(path: Path) -> np.ndarray:
        # read_image checks the declared size before decoding (a mask can be a pixel bomb too)
        a = np.asarray(read_image(path).data)
        if a.ndim == 3 and a.shape[-1] in (3, 4):  # RGB(A) written masks: any colour
            a = a[..., :3].max(axis=-1)
        m = a > threshold
        if not m.any() and a.any():
            print(
                f"evaluate: warning: {path.name} has nonzero pixels but none above "
                f"--threshold {threshold:g} (a {{0,1}} mask? use --threshold 0)",
                file=sys.stderr,
            )
        return m

    rows: list[dict[str, float | str]] = []
    n_failed = 0
    for stem in matched:
        try:
            pred, gt = read_mask(preds[stem]), read_mask(gts[stem])
        except Exception as exc:  # unreadable or corrupt file: report it and go on
            print(f"evaluate: failed: {stem}: cannot read ({exc})", file=sys.stderr)
            n_failed += 1
            continue
        if pred.shape != gt.shape:
            print(
                f"evaluate: failed: {stem}: shape mismatch, pred {pred.shape} vs gt "
                f"{gt.shape} (nothing is resized)",
                file=sys.stderr,
            )
            n_failed += 1
            continue
        try:
            values = all_metrics(pred, gt, spacing=spacing)
        except ValueError as exc:  # e.g. a spacing with the wrong number of axes
            print(f"evaluate: failed: {stem}: {exc}", file=sys.stderr)
            n_failed += 1
            continue
        rows.append({"id": stem, **{k: values[k] for k in METRIC_NAMES}})

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("id", *METRIC_NAMES))
        for row in rows:
            writer.writerow([row["id"], *(repr(float(row[k])) for k in METRIC_NAMES)])

    summary: dict[str, object] = {
        "n_images": len(rows),
        "n_missing": n_missing,
        "n_extra": n_extra,
        "n_failed": n_failed,
        "csv": str(csv_path),
        "metrics": {},
    }
    for k in METRIC_NAMES:
        vals = np.array([float(r[k]) for r in rows], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        summary["metrics"][k] = {  # type: ignore[index]
            "mean": float(finite.mean()) if finite.size else None,
            "median": float(np.median(finite)) if finite.size else None,
            "n_inf": int(np.count_nonzero(~np.isfinite(vals))),
        }
    print(json.dumps(summary, allow_nan=False))
    if not rows and not n_failed:
        print("evaluate: no prediction matched a ground-truth mask by name", file=sys.stderr)
    return 1 if (n_failed or not rows) else 0

