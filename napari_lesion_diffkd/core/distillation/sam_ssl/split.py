"""Which training images keep their labels: a group-aware, seeded labelled fraction.

Seed 003 trains with 2%, 4% or 8% of the labels. The fraction is taken from the **training**
side of the project's validation split (``core.data.datasets.group_split``; validation images
are never trained on, labelled or not), by whole groups (patient / case), per dataset, so no
patient has labelled and unlabelled images at once. The same records, fraction and seed give
the same selection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_lesion_diffkd.core.data.datasets import PairRecord


def select_labelled(records: Sequence[PairRecord], fraction: float,
                    seed: int = 0) -> tuple[list[PairRecord], list[PairRecord]]:
    """Split training pairs into (labelled, unlabelled) by whole groups, reproducibly.

    Per dataset, groups are shuffled with ``numpy.random.default_rng(seed)`` and taken until
    the labelled images reach ``max(1, round(fraction · n))`` (a group is never split, so
    the count can exceed it by the last group's size). ``fraction >= 1`` labels everything.

    Returns:
        (labelled, unlabelled), each sorted as in ``records``.
    """
    if not 0 < fraction:
        raise ValueError(f"label fraction must be > 0, got {fraction}")
    chosen: set[str] = set()
    by_dataset: dict[str, list[PairRecord]] = {}
    for r in records:
        by_dataset.setdefault(r.dataset, []).append(r)
    for name in sorted(by_dataset):
        recs = by_dataset[name]
        groups = sorted({r.group for r in recs})
        sizes = {g: 0 for g in groups}
        for r in recs:
            sizes[r.group] += 1
        target = len(recs) if fraction >= 1 else max(1, int(round(fraction * len(recs))))
        count = 0
        for idx in np.random.default_rng(seed).permutation(len(groups)):
            if count >= target:
                break
            chosen.add(groups[idx])
            count += sizes[groups[idx]]
    labelled = [r for r in records if r.group in chosen]
    unlabelled = [r for r in records if r.group not in chosen]
    return labelled, unlabelled
