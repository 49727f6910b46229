"""``lesion-diffkd distill --method ts-kd``: seed 002's task-specific KD from a SAM teacher
into a prompt-free ViT + FPN student (``core.distillation.ts_kd.trainer.run_ts_kd``).

``--teacher`` is a SAM (registered name such as ``lesion-sam-tiny``, a SAM bundle folder, an
official checkpoint file or name); ``--student-config`` a ``TsKdConfig`` YAML/JSON
(``configs/ts-kd-*.yaml``); ``--unlabeled`` folders add images to the KD transfer set.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this method only (prefixed ``--tskd-``; the shared ones exist already)."""
    group = parser.add_argument_group("ts-kd (seed 002 task-specific KD from a SAM)")
    group.add_argument("--tskd-generated", type=int, default=None, metavar="N",
                       help="ts-kd: diffusion-generated images added to the transfer set "
                            "(overrides the config's generated_images; 0 = none)")
    group.add_argument("--tskd-lora-rank", type=int, default=None, metavar="R",
                       help="ts-kd: LoRA rank for the teacher's fine-tuning (0 = use the "
                            "teacher as it is)")
    group.add_argument("--tskd-teacher-prompt", choices=("auto", "none", "box"), default=None,
                       help="ts-kd: the teacher's prompt in automatic mode (default: config)")


def _unlabeled_records(spec: str | None, val_groups: set[str], labelled: set[tuple[str, str]]
                       ) -> list[tuple[str, str]]:
    from napari_lesion_diffkd.core.data.datasets import scan_images

    out: list[tuple[str, str]] = []
    for folder in [d.strip() for d in (spec or "").split(",") if d.strip()]:
        for r in scan_images(folder):
            # Never distil on validation groups, nor count a labelled image twice.
            if r.group in val_groups or (r.dataset, r.id) in labelled:
                continue
            out.append((f"{r.dataset}/{r.id}", str(r.image_path)))
    return out


def run(args: argparse.Namespace) -> int:
    import json
    import shlex
    import sys
    from pathlib import Path

    import torch

    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.core.data.datasets import group_split
    from napari_lesion_diffkd.core.distillation.ts_kd.config import TsKdConfig
    from napari_lesion_diffkd.core.distillation.ts_kd.trainer import run_ts_kd
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import resolve_device
    from napari_lesion_diffkd.core.sam.loading import SamCheckpointError
    from napari_lesion_diffkd.core.training.cli_driver import (
        _ConsoleProgress,
        collect_records,
        git_commit,
    )

    if args.threads:
        torch.set_num_threads(int(args.threads))
    try:
        config = TsKdConfig.from_file(args.student_config)
        if args.tskd_generated is not None:
            config.generated_images = int(args.tskd_generated)
        if args.tskd_lora_rank is not None:
            config.teacher_lora_rank = int(args.tskd_lora_rank)
        if args.tskd_teacher_prompt is not None:
            config.teacher_prompt = args.tskd_teacher_prompt
        config.__post_init__()  # re-check the overridden values
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: config {args.student_config}: {exc}", file=sys.stderr)
        return 2
    if args.max_minutes is not None:
        config.fit_budget(float(args.max_minutes))
    if config.needs_teacher:  # check the teacher before any data or training work
        from napari_lesion_diffkd.core.sam.loading import load_sam

        try:
            load_sam(args.teacher)
        except (LookupError, SamCheckpointError, BundleError, OSError) as exc:
            print(f"error: teacher {args.teacher!r}: {exc}", file=sys.stderr)
            return 2
    try:
        records = collect_records(args.data)
        device = resolve_device(args.device)
        _, val = group_split(records, config.val_fraction, config.split_seed)
        labelled = {(r.dataset, r.id) for r in records}
        unlabeled = _unlabeled_records(getattr(args, "unlabeled", None),
                                       {r.group for r in val}, labelled)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    provenance = {
        "data": [str(Path(d.strip()).resolve()) for d in args.data.split(",") if d.strip()],
        "unlabeled": getattr(args, "unlabeled", None),
        "command": "lesion-diffkd " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if len(sys.argv) > 1 else None,
        "git_commit": git_commit(),
    }
    try:
        result = run_to_completion(
            run_ts_kd(config, records, args.out, teacher=args.teacher, device=device,
                      resume=args.resume, provenance=provenance, unlabeled=unlabeled),
            on_event=_ConsoleProgress(),
        )
    except (ValueError, FileNotFoundError, LookupError, SamCheckpointError,
            BundleError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    sys.stderr.write("\n")
    print(json.dumps(result), flush=True)
    return 0
