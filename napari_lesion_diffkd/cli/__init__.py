"""The ``lesion-diffkd`` command line: one module per subcommand, all driving core.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func`` to a ``run(args) -> int`` function. Modules import torch and core lazily inside
``run`` so that ``lesion-diffkd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from napari_lesion_diffkd import __version__

SUBCOMMANDS = ("models", "predict", "train", "distill", "evaluate", "demo", "job", "sam_finetune",
               "simulate_al", "simulate_annotation", "loop", "export_onnx", "sam_average",
               "calibrate_spread",
               "project")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="lesion-diffkd",
        description="Diffusion-model lesion segmentation with uncertainty and STAPLE consensus.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"napari_lesion_diffkd.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
