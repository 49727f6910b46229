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


def check_config_bounds(path: str) -> int | None:
    """Exit code 2 (with one ``error:`` line) when the recipe at ``path`` has a value out of
    bounds (``core/config_bounds.py``), else None. A file that cannot be read at all is left
    to ``train_from_cli``, which reports it."""
    import sys

    from napari_lesion_diffkd.core.config_bounds import ConfigBoundsError, check_train_config
    from napari_lesion_diffkd.core.config_files import read_mapping

    try:
        mapping = read_mapping(path)
    except Exception:  # noqa: BLE001 - unreadable: train_from_cli says why
        return None
    try:
        check_train_config(mapping)
    except ConfigBoundsError as exc:
        print(f"error: config {path}: {exc}", file=sys.stderr)
        return 2
    return None


def run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.training.cli_driver import train_from_cli

    code = check_config_bounds(args.config)  # before any data is loaded or network built
    if code is not None:
        return code
    return train_from_cli(args)
