"""Triage: do the app's most uncertain images hold its bad masks?

Images are ranked by a per-image uncertainty score of the default model
(``SegmentationResult.scores``, e.g. ``sample_disagreement``), most uncertain first. For each
fraction f, the top ``ceil(f * n)`` images are "flagged"; the share reported is the number of
bad consensus masks (Dice below ``below``) among the flagged images over all bad masks.
A random order would flag about f of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Fractions of the queue flagged, as in the issue: the most uncertain 10%, 20%, 30%.
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3)
#: Candidate per-image scores, all "larger = less sure". The first three come with the
#: segmenter's result; the last two need the SAM-refined consensus
#: (``core.sam.refine_proposal``): ``refine_disagreement`` = 1 - Dice(consensus, refined),
#: ``combined_disagreement`` = the mean of ``sample_disagreement`` and
#: ``refine_disagreement`` (both 1 - Dice, so one scale; equal weights, fixed a priori).
SCORES = ("sample_disagreement", "boundary_entropy", "mean_entropy", "refine_disagreement",
          "combined_disagreement")
#: The score the app ranks by, chosen on TRAINING-split images only, by a rule fixed before
#: any validation run: the candidate with the highest mean top-30% share over PH2, BUS-BRA and
#: DDTI (24 evenly spaced training images each, medsam-lite for the refinement: 96% against
#: 92% for ``combined_disagreement``). Table, command and the validation results of every
#: candidate: docs/benchmarks.md, section annotation-noc.
DEFAULT_SCORE = "sample_disagreement"


def with_refine_scores(scores: dict[str, float], refine_disagreement: float) -> dict[str, float]:
    """``scores`` plus ``refine_disagreement`` and ``combined_disagreement``.

    Args:
        scores: the segmenter's per-image scores (``SegmentationResult.scores``; must hold
            ``sample_disagreement`` for the combination, else it is NaN).
        refine_disagreement: ``RefinedProposal.disagreement`` of the image, in [0, 1].
    """
    out = {k: float(v) for k, v in scores.items()}
    out["refine_disagreement"] = float(refine_disagreement)
    sd = out.get("sample_disagreement", float("nan"))
    out["combined_disagreement"] = (sd + float(refine_disagreement)) / 2
    return out


def triage_shares(scores: Sequence[float], dices: Sequence[float], below: float = 0.85,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, float]:
    """Share of the bad masks that fall in the most uncertain fractions of the images.

    Args:
        scores: (n,) per-image uncertainty score, larger = less sure (NaN ranks last).
        dices: (n,) Dice of each image's consensus against the ground truth.
        below: a mask is bad when its Dice is below this.
        fractions: flagged fractions, each in (0, 1].

    Returns:
        ``{"images": n, "bad": count, "top10": share, "top20": ..., ...}``; shares are NaN
        when there is no bad mask. Ties in the score keep the input order (stable sort).

    Raises:
        ValueError: lengths differ or a fraction is outside (0, 1].
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    d = np.asarray(dices, dtype=np.float64).reshape(-1)
    if s.shape != d.shape:
        raise ValueError(f"{s.size} scores but {d.size} Dice values")
    bad = d < below
    order = np.argsort(-np.nan_to_num(s, nan=-np.inf), kind="stable")
    out: dict[str, float] = {"images": int(s.size), "bad": int(bad.sum())}
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"fractions must lie in (0, 1], got {f}")
        k = math.ceil(round(f * s.size, 9))
        hit = int(bad[order[:k]].sum())
        out[f"top{round(f * 100):d}"] = hit / int(bad.sum()) if bad.any() else float("nan")
    return out
