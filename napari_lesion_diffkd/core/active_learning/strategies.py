"""Query strategies: pick the next images to annotate from per-image scores and embeddings.

* ``random``: uniformly at random (the baseline every strategy must beat);
* ``uncertainty``: the images the model is least sure of (highest score);
* ``uncertainty-diversity``: among the ``pool_factor`` x n most uncertain, a spread-out set:
  greedy k-centre (farthest-point) selection in embedding space, starting from the most
  uncertain, so that one batch does not spend every label on near-duplicates (neighbouring
  slices, the same patient's images).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STRATEGIES = ("random", "uncertainty", "uncertainty-diversity")


def select_batch(
    strategy: str,
    candidate_ids: Sequence[str],
    n: int,
    rng: np.random.Generator,
    scores: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    pool_factor: int = 3,
) -> list[str]:
    """Choose ``n`` ids (all of them when there are fewer candidates).

    Args:
        strategy: one of :data:`STRATEGIES`.
        candidate_ids: the unlabelled images.
        n: batch size.
        rng: for ``random`` (other strategies are deterministic; ties keep the given order).
        scores: (M,) float, higher = less certain; needed by the uncertainty strategies.
        embeddings: (M, D) float image embeddings; needed by ``uncertainty-diversity``.
        pool_factor: size of the uncertain pool the diverse batch is drawn from, in batches.

    Returns:
        The chosen ids, in order of choice.

    Raises:
        ValueError: unknown strategy, or the scores / embeddings it needs are missing or
            do not match the candidates.
    """
    ids = list(candidate_ids)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    n = max(0, min(int(n), len(ids)))
    if n == 0:
        return []
    if strategy == "random":
        return [ids[i] for i in rng.choice(len(ids), size=n, replace=False)]
    if scores is None or len(scores) != len(ids):
        raise ValueError(f"strategy {strategy!r} needs one score per candidate")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if strategy == "uncertainty":
        return [ids[i] for i in order[:n]]
    if embeddings is None or len(embeddings) != len(ids):
        raise ValueError("strategy 'uncertainty-diversity' needs one embedding per candidate")
    pool = order[: max(n, pool_factor * n)]
    emb = np.asarray(embeddings, dtype=np.float64)[pool]
    chosen = [0]  # the most uncertain image of the pool
    nearest = np.linalg.norm(emb - emb[0], axis=1)
    while len(chosen) < n:
        nxt = int(np.argmax(nearest))  # farthest from everything chosen so far
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(emb - emb[nxt], axis=1))
    return [ids[pool[i]] for i in chosen]
