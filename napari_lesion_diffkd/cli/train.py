"""``lesion-diffkd train``: train a conditional diffusion segmenter from a config file."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a diffusion segmenter on image/mask folders")
    p.add_argument("--config", required=True, help="YAML/JSON training config")
    add_run_options(p)
    p.set_defaults(func=run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Data, output, budget, resume, device and threads: shared by ``train`` and ``distill``."""
    p.add_argument("--data", required=True, help="dataset folder(s), comma separated")
    p.add_argument("--out", required=True, help="output folder for checkpoints and logs")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last checkpoint")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.training.cli_driver import train_from_cli

    return train_from_cli(args)
