"""``lesion-diffkd demo [PATH]``: open napari with the plugin docked and an image loaded."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="open napari with the segmentation widget and an image")
    p.add_argument("path", nargs="?", default=None, help="image file or folder (optional)")
    p.add_argument("--model", default="dermoscopy-teacher", help="model selected in the widget")
    p.add_argument("--run", action="store_true", help="run the segmentation once at start")
    p.add_argument("--screenshot", default=None, help="save a window screenshot and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.plugin.demo import run_demo

    return run_demo(args.path, model=args.model, run=args.run, screenshot=args.screenshot)
