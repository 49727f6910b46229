"""Glue between ``lesion-diffkd train`` arguments and :func:`core.training.trainer.train`."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from napari_lesion_diffkd.core.data.datasets import (
    ImageRecord,
    PairRecord,
    scan_images,
    scan_pairs,
)
from napari_lesion_diffkd.core.jobs import JobEvent, run_to_completion
from napari_lesion_diffkd.core.registry import resolve_device
from napari_lesion_diffkd.core.training.config import TrainConfig
from napari_lesion_diffkd.core.training.trainer import train


def collect_records(data: str) -> list[PairRecord]:
    """Pairs from a comma-separated list of dataset folders (each images/ + masks/)."""
    records: list[PairRecord] = []
    for folder in [d for d in data.split(",") if d.strip()]:
        records += scan_pairs(folder.strip())
    if not records:
        raise ValueError(f"no image/mask pairs found in {data!r}")
    return records


def git_commit() -> str | None:
    """The repository's HEAD commit, if this is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class _ConsoleProgress:
    """A one-line progress display on stderr, plus metric lines."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self, event: JobEvent) -> None:
        if event.kind == "progress":
            if "loss" not in event.values:  # e.g. computing the teacher's targets
                sys.stderr.write(f"\r{event.message} {event.step}/{event.total}   ")
                sys.stderr.flush()
            elif event.step % 10 == 0 or event.step == event.total:
                loss = event.values["loss"]
                sys.stderr.write(f"\rstep {event.step}/{event.total}  loss {loss:.4f}   ")
                sys.stderr.flush()
        else:
            sys.stderr.write(f"\n[{event.kind}] {event.message}\n")


def train_from_cli(args: argparse.Namespace) -> int:
    """Run training as the CLI asked; prints a JSON summary line. Returns the exit code."""
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    try:
        config = TrainConfig.from_file(args.config)
    except (OSError, ValueError) as exc:
        print(f"error: config {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.max_minutes is not None:
        config.max_minutes = args.max_minutes
    if getattr(args, "teacher", None):  # lesion-diffkd distill
        config.teacher = args.teacher
    try:
        records = collect_records(args.data)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unlabelled: list[ImageRecord] = []
    unlabelled_dirs = [d.strip() for d in (getattr(args, "unlabeled", None) or "").split(",")
                       if d.strip()]
    try:
        for folder in unlabelled_dirs:
            unlabelled += scan_images(folder)
    except (OSError, ValueError) as exc:
        print(f"error: --unlabeled: {exc}", file=sys.stderr)
        return 2
    provenance: dict[str, Any] = {
        "data": [str(Path(d.strip()).resolve()) for d in args.data.split(",") if d.strip()],
        "unlabelled_data": [str(Path(d).resolve()) for d in unlabelled_dirs],
        "command": "lesion-diffkd " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if len(sys.argv) > 1 else None,
        "git_commit": git_commit(),
    }
    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.core.training.distributed import init_from_env

    device = resolve_device(args.device)
    info, device = init_from_env(device)  # no-op unless launched by torchrun
    try:
        result = run_to_completion(
            train(config, records, args.out, device=device, resume=args.resume,
                  provenance=provenance, unlabelled=unlabelled),
            on_event=_ConsoleProgress() if info.is_main else None,
        )
    except (ValueError, FileNotFoundError, LookupError, BundleError) as exc:
        # A bad config, teacher, resume or start bundle (unknown name, broken folder): one
        # clear line, no traceback.
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    if info.is_main:
        sys.stderr.write("\n")
    summary = {k: v for k, v in result.items() if k != "val_records"}
    summary["rank"] = info.rank
    print(json.dumps(summary), flush=True)
    if info.enabled:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0 if summary.get("ranks_agree", True) else 1
