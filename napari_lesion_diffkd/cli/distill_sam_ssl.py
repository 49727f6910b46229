"""``lesion-diffkd distill --method sam-ssl``: seed 003's SAM-guided semi-supervised dual-task
student (``core.distillation.sam_ssl.train_sam_ssl``).

    lesion-diffkd distill --method sam-ssl --teacher lesion-sam-tiny \\
        --student-config configs/sam-ssl-ph2.yaml --data ../shared/data/ph2_dermoscopy \\
        --out runs/sam-ssl-ph2 [--ssl-supervised-only] [--ssl-label-fraction 0.08]

``--teacher`` is any SAM ``core.sam.load_sam`` accepts (registered bundle, bundle folder,
checkpoint file or official name in the cache). ``--unlabeled DIR[,DIR]`` adds images without
masks to the unlabelled pool. Exit codes: 0 done, 2 bad config / data / teacher / resume.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the sam-ssl method (prefixed ``--ssl-``; shared ones come from distill)."""
    g = p.add_argument_group("sam-ssl (seed 003 SAM-guided semi-supervised dual-task student)")
    g.add_argument("--ssl-supervised-only", action="store_true",
                   help="sam-ssl: the baseline: same labelled images, steps and augmentation, "
                        "no SAM, no pseudo-labels, no KL")
    g.add_argument("--ssl-label-fraction", type=float, default=None, metavar="F",
                   help="sam-ssl: share of the training split that keeps its labels "
                        "(e.g. 0.02, 0.04, 0.08; default: the config's label_fraction)")
    g.add_argument("--ssl-max-steps", type=int, default=None, metavar="N",
                   help="sam-ssl: override the config's max_steps")


def run(args: argparse.Namespace) -> int:
    import json
    import shlex
    import sys
    from pathlib import Path

    import torch

    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.core.data.datasets import ImageRecord, scan_images
    from napari_lesion_diffkd.core.distillation.sam_ssl import SamSslConfig, train_sam_ssl
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import resolve_device
    from napari_lesion_diffkd.core.sam.loading import SamCheckpointError, load_sam
    from napari_lesion_diffkd.core.training.cli_driver import (
        _ConsoleProgress,
        collect_records,
        git_commit,
    )

    if args.threads:
        torch.set_num_threads(int(args.threads))
    try:
        config = SamSslConfig.from_file(args.student_config)
        if args.ssl_supervised_only:
            config.supervised_only = True
        if args.ssl_label_fraction is not None:
            config.label_fraction = args.ssl_label_fraction
        if args.ssl_max_steps is not None:
            config.max_steps = args.ssl_max_steps
        if args.max_minutes is not None:
            config.max_minutes = args.max_minutes
        config.__post_init__()  # re-check the overridden values
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: config {args.student_config}: {exc}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        records = collect_records(args.data)
        extra: list[ImageRecord] = []
        for folder in [d.strip() for d in (args.unlabeled or "").split(",") if d.strip()]:
            extra += scan_images(folder)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    teacher = None
    if not config.supervised_only:
        try:
            teacher = load_sam(args.teacher, device=device)
        except (LookupError, SamCheckpointError, BundleError, OSError) as exc:
            print(f"error: --teacher {args.teacher}: {exc}", file=sys.stderr)
            return 2
    provenance = {
        "data": [str(Path(d.strip()).resolve()) for d in args.data.split(",") if d.strip()],
        "unlabelled_data": [str(Path(d.strip()).resolve())
                            for d in (args.unlabeled or "").split(",") if d.strip()],
        "teacher": None if teacher is None else {
            "name": teacher.name, "arch": teacher.arch,
            "path": str(teacher.path) if teacher.path else None},
        "method": "sam-ssl",
        "command": "lesion-diffkd " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if len(sys.argv) > 1 else None,
        "git_commit": git_commit(),
    }
    try:
        result = run_to_completion(
            train_sam_ssl(config, records, args.out, teacher=teacher, device=device,
                          resume=args.resume, provenance=provenance, extra_unlabelled=extra),
            on_event=_ConsoleProgress(),
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    sys.stderr.write("\n")
    print(json.dumps(result), flush=True)
    return 0
