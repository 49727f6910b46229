"""``lesion-diffkd simulate-al``: active-learning learning curves with the ground truth as the
oracle (see ``core/active_learning/simulate.py``)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate-al", help="simulate active learning on a labelled dataset",
        description="Round 0 trains on a random labelled subset of the training split; each "
                    "round a strategy picks --per-round more images to 'annotate' (their true "
                    "masks) and a fresh model is trained. Writes learning_curves.csv/.png "
                    "(validation Dice vs labels) to --out. The validation split is never "
                    "queried.")
    p.add_argument("--config", required=True, help="training config of the model (YAML/JSON)")
    p.add_argument("--data", required=True, help="dataset folder(s), comma-separated")
    p.add_argument("--out", required=True)
    p.add_argument("--strategies", nargs="+", default=["random", "uncertainty"],
                   help="random | uncertainty | uncertainty-diversity")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--initial", type=int, default=10)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--k", type=int, default=8, help="samples per image (scoring, validation)")
    p.add_argument("--score", default="sample_disagreement",
                   help="sample_disagreement | boundary_entropy | mean_entropy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from napari_lesion_diffkd.core.active_learning.simulate import (
        SimulationSettings,
        simulate_active_learning,
        summarise,
    )
    from napari_lesion_diffkd.core.jobs import JobEvent, run_to_completion
    from napari_lesion_diffkd.core.training.cli_driver import collect_records
    from napari_lesion_diffkd.core.training.config import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = SimulationSettings(
        strategies=args.strategies, rounds=args.rounds, initial=args.initial,
        per_round=args.per_round, seeds=args.seeds, num_samples=args.k, score=args.score)

    def show(event: JobEvent) -> None:
        if event.kind == "metric":
            sys.stderr.write(f"\n{event.message}\n")
        elif event.kind == "progress" and event.total:
            sys.stderr.write(f"\r{event.message} {event.step}/{event.total}   ")

    try:
        settings.check()
        config = TrainConfig.from_file(args.config)
        records = collect_records(args.data)
        rows = run_to_completion(
            simulate_active_learning(config, records, args.out, settings, device=args.device),
            on_event=show)
    except (OSError, ValueError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": args.out, "mean_val_dice": summarise(rows)}))
    return 0
