"""``lesion-diffkd sam-finetune``: train lesion-sam-tiny, or fine-tune a SAM (full, LoRA, or
the decoder alone on cached embeddings), with simulated prompts on image/mask folders
(``core.sam.training.train_promptable``).

``--base medsam-lite`` fine-tunes LiteMedSAM (``configs/lesion-medsam.yaml``): with
``--freeze-encoder`` (the config's choice) the encoder's embeddings are computed once per
image and mirror and cached under OUT/embeddings (or ``--embedding-cache``); ``--lora-rank R``
puts LoRA on q and v of every TinyViT attention block instead (no cache). A decoder-only or
LoRA result stores only its trained tensors and names medsam-lite by its SHA-256."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sam-finetune",
        help="train a promptable SAM (lesion-sam-tiny, or LoRA on a SAM) on image/mask folders",
    )
    p.add_argument("--config", required=True, help="YAML/JSON SAM training config")
    p.add_argument("--data", required=True, help="dataset folder(s), comma separated")
    p.add_argument("--out", required=True, help="output folder (checkpoint, log, bundle)")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument("--max-steps", type=int, default=None, help="override the config's steps")
    p.add_argument("--lora-rank", type=int, default=None,
                   help="LoRA rank on q/v of the image encoder (0: train every weight)")
    p.add_argument("--base", default=None,
                   help="start from this SAM: bundle folder, checkpoint file or name "
                        "(medsam-lite, sam_vit_b, medsam_vit_b, ...); default: the config's "
                        "(tiny from scratch)")
    p.add_argument("--freeze-encoder", action=argparse.BooleanOptionalAction, default=None,
                   help="train the prompt encoder and mask decoder only, on image embeddings "
                        "cached once (ignored with LoRA); default: the config's")
    p.add_argument("--embedding-cache", default=None,
                   help="folder of the embedding cache (default OUT/embeddings; keyed by image "
                        "content and encoder weights, so runs may share one)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import shlex
    import sys

    import torch

    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import resolve_device
    from napari_lesion_diffkd.core.sam.loading import SamCheckpointError
    from napari_lesion_diffkd.core.sam.training import SamTrainConfig, train_promptable
    from napari_lesion_diffkd.core.training.cli_driver import (
        _ConsoleProgress,
        collect_records,
        git_commit,
    )

    if args.threads:
        torch.set_num_threads(int(args.threads))
    try:
        config = SamTrainConfig.from_file(args.config)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: config {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.max_minutes is not None:
        config.max_minutes = args.max_minutes
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.lora_rank is not None:
        config.lora_rank = args.lora_rank
    if args.base is not None:
        config.base = args.base
    if args.freeze_encoder is not None:
        config.freeze_encoder = bool(args.freeze_encoder)
    if args.embedding_cache is not None:
        config.embedding_cache = str(Path(args.embedding_cache).resolve())
    try:
        records = collect_records(args.data)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    provenance = {
        "data": [str(Path(d.strip()).resolve()) for d in args.data.split(",") if d.strip()],
        "command": "lesion-diffkd " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if len(sys.argv) > 1 else None,
        "git_commit": git_commit(),
    }
    try:
        result = run_to_completion(
            train_promptable(config, records, args.out, device=resolve_device(args.device),
                             resume=args.resume, provenance=provenance),
            on_event=_ConsoleProgress(),
        )
    except (ValueError, FileNotFoundError, LookupError, SamCheckpointError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    sys.stderr.write("\n")
    print(json.dumps(result), flush=True)
    return 0
