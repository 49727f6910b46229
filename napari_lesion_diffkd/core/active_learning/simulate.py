"""Active-learning simulation with the ground truth as the oracle (``lesion-diffkd simulate-al``).

For each seed: a random initial labelled set is drawn from the training split and a model is
trained on it (round 0, shared by all strategies). Then, per strategy and round, the model of
the previous round scores the still unlabelled training images, the strategy picks
``per_round`` of them, their true masks are "annotated", and a fresh model is trained on all
labels so far. Every model is scored on the validation split, which no strategy ever sees.

The result is a learning curve (validation Dice vs number of labels) per strategy and seed,
written as CSV and PNG.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_lesion_diffkd.core.active_learning.scoring import score_images
from napari_lesion_diffkd.core.active_learning.strategies import STRATEGIES, select_batch
from napari_lesion_diffkd.core.data.datasets import PairRecord, group_split, load_tensors
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.training.config import TrainConfig

CURVES_CSV = "learning_curves.csv"
CURVES_PNG = "learning_curves.png"
CSV_FIELDS = ("seed", "strategy", "round", "n_labels", "val_dice", "added_ids")


@dataclasses.dataclass
class SimulationSettings:
    """What to simulate.

    Attributes:
        strategies: names from :data:`~.strategies.STRATEGIES`.
        rounds: query rounds after round 0.
        initial: labels in round 0 (random).
        per_round: labels added per round.
        seeds: one simulation per seed (initial set, sampling, training).
        num_samples: K samples per image when scoring and validating.
        score: per-image score for the uncertainty strategies.
        val_fraction, split_seed: the group-aware validation split (fixed for all runs).
    """

    strategies: Sequence[str] = ("random", "uncertainty")
    rounds: int = 3
    initial: int = 10
    per_round: int = 10
    seeds: Sequence[int] = (0, 1, 2)
    num_samples: int = 8
    score: str = "sample_disagreement"
    val_fraction: float = 0.2
    split_seed: int = 0

    def check(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {STRATEGIES}")
        if self.rounds < 0 or self.initial < 1 or self.per_round < 1 or not self.seeds:
            raise ValueError("need rounds >= 0, initial >= 1, per_round >= 1 and a seed")


def consensus_dice(bundle, images: torch.Tensor, masks: torch.Tensor, num_samples: int) -> float:
    """Mean Dice of the STAPLE consensus of K samples at the model's resolution.

    Args:
        images: (N, C, S, S) prepared images; masks: (N, 1, S, S) in {-1, 1}.
    """
    from napari_lesion_diffkd.core.ensemble.fusion import fuse_samples
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.metrics import dice
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler, sample_seeds

    sampler = build_bundle_sampler(bundle, None, None)
    seeds = sample_seeds(0, num_samples)
    values = []
    for start in range(0, len(images), 16):
        x0 = run_to_completion(sampler.sample(bundle.network, images[start:start + 16],
                                              num_samples, seeds=seeds))
        cons = fuse_samples(x0[:, :, 0], "staple").consensus.cpu().numpy()
        gt = (masks[start:start + 16, 0] > 0).cpu().numpy()
        values += [dice(c, g) for c, g in zip(cons, gt)]
    return float(np.mean(values))


def _train_round(config: TrainConfig, labelled: list[PairRecord], out: Path, seed: int,
                 device: str) -> Generator[JobEvent, None, Any]:
    """Train a fresh model on ``labelled`` (no validation split: every label trains)."""
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.training.trainer import train

    cfg = dataclasses.replace(config, val_fraction=0.0, seed=seed)
    gen = train(cfg, labelled, out, device=device,
                provenance={"active_learning": {"n_labels": len(labelled)}})
    try:
        while True:
            event = next(gen)
            if event.kind == "progress" and event.total:
                yield JobEvent("progress", step=event.step, total=event.total,
                               message=f"training on {len(labelled)} labels")
    except StopIteration:
        pass
    return load_model(out, device=device)


def simulate_active_learning(
    config: TrainConfig,
    records: Sequence[PairRecord],
    out_dir: str | Path,
    settings: SimulationSettings,
    device: str = "cpu",
) -> Generator[JobEvent, None, list[dict[str, Any]]]:
    """Run the simulation; yields progress and one ``metric`` event per trained model.

    Args:
        config: the model trained in every round (a diffusion model: scoring needs samples).
        records: all labelled pairs; split here into training pool and validation by group.
        out_dir: per-round model folders, ``learning_curves.csv`` and ``.png``.
        settings: see :class:`SimulationSettings`.

    Returns:
        The CSV rows as dicts (``added_ids`` as a list).
    """
    settings.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool, val = group_split(records, settings.val_fraction, settings.split_seed)
    if len(pool) < settings.initial + settings.per_round:
        raise ValueError(f"the training split has {len(pool)} images: too few for "
                         f"{settings.initial} initial + {settings.per_round} per round")
    if not val:
        raise ValueError("empty validation split: raise val_fraction or add data")
    by_id = {r.id: r for r in pool}
    pool_x, _ = load_tensors(pool, config.input_size, config.image_channels)
    row_of = {r.id: i for i, r in enumerate(pool)}
    val_x, val_y = load_tensors(val, config.input_size, config.image_channels)
    rows: list[dict[str, Any]] = []

    def record(seed: int, strategy: str, rnd: int, labelled: list[str], added: list[str],
               score: float) -> JobEvent:
        rows.append({"seed": seed, "strategy": strategy, "round": rnd,
                     "n_labels": len(labelled), "val_dice": score, "added_ids": added})
        write_curves(rows, out)
        return JobEvent("metric", message=f"seed {seed} {strategy} round {rnd}: "
                        f"{len(labelled)} labels, validation Dice {score:.4f}",
                        values={"val_dice": score, "n_labels": len(labelled)})

    for seed in settings.seeds:
        rng = np.random.default_rng(seed)
        initial = [pool[i].id for i in rng.choice(len(pool), settings.initial, replace=False)]
        model0 = yield from _train_round(config, [by_id[i] for i in initial],
                                         out / f"seed{seed}" / "round0", seed, device)
        dice0 = consensus_dice(model0, val_x, val_y, settings.num_samples)
        for strategy in settings.strategies:
            yield record(seed, strategy, 0, initial, initial, dice0)
        for strategy in settings.strategies:
            labelled, model = list(initial), model0
            strat_rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
            for rnd in range(1, settings.rounds + 1):
                candidates = [r.id for r in pool if r.id not in set(labelled)]
                scores = embeddings = None
                if strategy != "random":
                    x = pool_x[[row_of[i] for i in candidates]]
                    scores, embeddings = yield from score_images(
                        model, x, settings.num_samples, settings.score, seed=seed)
                added = select_batch(strategy, candidates, settings.per_round, strat_rng,
                                     scores=scores, embeddings=embeddings)
                labelled += added
                model = yield from _train_round(
                    config, [by_id[i] for i in labelled],
                    out / f"seed{seed}" / strategy / f"round{rnd}", seed, device)
                yield record(seed, strategy, rnd, labelled, added,
                             consensus_dice(model, val_x, val_y, settings.num_samples))
    plot_curves(rows, out / CURVES_PNG)
    return rows


def write_curves(rows: list[dict[str, Any]], out: Path) -> None:
    """``learning_curves.csv`` (written whole to a temporary file, then renamed)."""
    tmp = out / (CURVES_CSV + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "added_ids": json.dumps(r["added_ids"])})
    tmp.replace(out / CURVES_CSV)


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Mean validation Dice over seeds: ``{strategy: {n_labels: dice}}``."""
    acc: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        acc.setdefault(r["strategy"], {}).setdefault(int(r["n_labels"]), []).append(
            float(r["val_dice"]))
    return {s: {n: float(np.mean(v)) for n, v in sorted(d.items())} for s, d in acc.items()}


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Mean learning curve per strategy (markers: each seed's value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for strategy, curve in summarise(rows).items():
        xs = list(curve)
        line, = ax.plot(xs, [curve[x] for x in xs], marker="o", label=strategy)
        pts = [(r["n_labels"], r["val_dice"]) for r in rows if r["strategy"] == strategy]
        ax.scatter(*zip(*pts), s=8, alpha=0.4, color=line.get_color())
    ax.set_xlabel("labelled images")
    ax.set_ylabel("validation Dice (STAPLE consensus)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
