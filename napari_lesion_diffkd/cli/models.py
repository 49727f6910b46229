"""``lesion-diffkd models``: list the registered models."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.registry import list_models

    rows = list_models()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    header = ("name", "modality", "role", "params", "input_size", "val_dice")
    table = [header] + [
        (
            r["name"],
            r["modality"],
            r["role"],
            f"{r['params'] / 1e6:.2f}M",
            str(r["input_size"]),
            "-" if r["val_dice"] is None else f"{r['val_dice']:.4f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
