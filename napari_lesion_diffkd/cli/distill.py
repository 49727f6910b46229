"""``lesion-diffkd distill``: distil a frozen teacher into a student (seed 000 KD/EFKD, or the
project's trajectory-distilled fast student), with every feature of ``train``."""

from __future__ import annotations

import argparse
import importlib
import sys

# --method NAME -> module with ``add_arguments(parser)`` and ``run(args) -> int`` for the
# SAM-teacher recipes (seed 002 task-specific KD, seed 003 SAM-guided semi-supervised).
# "diffusion" (the default) is the diffusion-teacher path below.
METHOD_MODULES: dict[str, str] = {
    "ts-kd": "napari_lesion_diffkd.cli.distill_ts_kd",
    "sam-ssl": "napari_lesion_diffkd.cli.distill_sam_ssl",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill", help="distil a teacher model into a student",
        description="Train the student described by --student-config against the frozen "
                    "--teacher. The config's objective picks the recipe: 'trajectory' (fast "
                    "one-call student, teacher masks cached in OUT) or 'diffusion' with "
                    "kd_method general|efkd (seed 000's LiteDermoSegDiff). Resume, time budget, "
                    "logs, plot and torchrun/DDP work as in 'train'.")
    p.add_argument("--teacher", required=True, help="registered teacher name or bundle folder")
    p.add_argument("--student-config", required=True, help="YAML/JSON student training config")
    p.add_argument("--unlabeled", metavar="DIR[,DIR...]", default=None,
                   help="folders of images without masks (a dataset folder's images/ or a "
                        "flat folder): added to the training set of a 'trajectory' student "
                        "with the teacher's masks as their only target; images of validation "
                        "groups or already among the labelled pairs are left out")
    p.add_argument("--method", choices=("diffusion", *METHOD_MODULES), default="diffusion",
                   help="diffusion: a diffusion teacher (config objective trajectory or "
                        "diffusion+KD); ts-kd: SAM -> ViT-Tiny task-specific KD (seed 002); "
                        "sam-ssl: SAM-guided semi-supervised dual-task student (seed 003)")
    from napari_lesion_diffkd.cli.train import add_run_options

    add_run_options(p)
    for module_name in METHOD_MODULES.values():
        importlib.import_module(module_name).add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.method != "diffusion":
        return int(importlib.import_module(METHOD_MODULES[args.method]).run(args))
    from napari_lesion_diffkd.core.registry import UnknownModelError, resolve_model
    from napari_lesion_diffkd.core.training.cli_driver import train_from_cli

    try:
        resolve_model(args.teacher)
    except UnknownModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.config = args.student_config
    from napari_lesion_diffkd.cli.train import check_config_bounds

    code = check_config_bounds(args.config)  # absurd K, sizes or widths: one line, exit 2
    if code is not None:
        return code
    return train_from_cli(args)
