"""``lesion-diffkd models``: list the registered models."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.json_lines import json_line
    from napari_lesion_diffkd.core.registry import list_models

    rows = list_models()
    if args.json:
        for row in rows:
            # Strict JSON: a NaN dice in a hand-edited config must not print bare NaN.
            print(json_line(row))
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
    for r in rows:  # why a bundle is broken, below the table (the table stays aligned)
        if r["role"] == "broken":
            print(f"broken: {r['name']}: {r.get('reason', 'unreadable config')}")
    return 0
