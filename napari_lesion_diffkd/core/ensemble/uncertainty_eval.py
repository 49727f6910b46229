"""Is an uncertainty map kept by a distilled student, and does it point at the errors?

Three small, headless measures used by ``benchmarks/bench_students.py`` (no napari / Qt):

* :func:`variance_correlation` — Pearson correlation between the pixel-variance maps
  (:func:`~napari_lesion_diffkd.core.ensemble.uncertainty.pixel_variance`) of two K-sample
  stacks of the same image, e.g. a student's and its teacher's: does the student hesitate
  where the teacher hesitates?
* :func:`error_detection_auroc` — AUROC of a per-pixel uncertainty map as a detector of the
  consensus's wrong pixels (``consensus != ground truth``), over one image or pooled over
  many: 1 = every wrong pixel is more uncertain than every right one, 0.5 = no better than
  chance (e.g. a constant map), 0 = exactly inverted.
  :func:`error_counts` + :func:`auroc_from_counts` give the same pooled value from a few
  counts per image, without keeping the maps.
* :func:`spearman` — rank correlation of two per-image quantities, e.g. a per-image
  uncertainty score and 1 − Dice.

Undefined values are returned as ``float('nan')`` rather than raised, so a benchmark can
average with ``np.nanmean`` and count them; each function says when it does so.

The AUROC is computed exactly (ties count one half, the Mann–Whitney U statistic divided by
the number of (wrong, right) pairs) with numpy only: scikit-learn is not a dependency.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from napari_lesion_diffkd.core.ensemble.uncertainty import pixel_variance
from napari_lesion_diffkd.core.metrics import ArrayLike

__all__ = [
    "auroc",
    "auroc_from_counts",
    "error_counts",
    "error_detection_auroc",
    "spearman",
    "variance_correlation",
]

def _numpy(x: ArrayLike) -> np.ndarray:
    """A numpy view/copy of an array or tensor (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _sample_stack(samples: ArrayLike) -> torch.Tensor:
    """(K, H, W) or (K, 1, H, W) samples -> (1, K, H, W) tensor for ``pixel_variance``."""
    t = samples if isinstance(samples, torch.Tensor) else torch.from_numpy(np.asarray(samples))
    if t.ndim == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 3:
        raise ValueError(
            f"samples must be (K, H, W) or (K, 1, H, W), got shape {tuple(t.shape)}"
        )
    return t[None]


def variance_correlation(samples_a: ArrayLike, samples_b: ArrayLike, *,
                         soft: bool = False) -> float:
    """Pearson correlation between the pixel-variance maps of two sample stacks of one image.

    Args:
        samples_a, samples_b: (K, H, W) or (K, 1, H, W) samples of the same image, bool
            masks or float x0 outputs in [-1, 1] (> 0 = lesion), numpy or torch. The two
            stacks need the same (H, W); their K may differ.
        soft: correlate the variance maps of the soft probabilities (x + 1) / 2 rather
            than of the hard masks (x > 0). With K hard samples the variance takes only
            K // 2 + 1 values and is zero wherever the samples agree, however close to the
            threshold they are; the soft variance keeps that information (it is what the
            app's soft-entropy uncertainty map is built from). Bool stacks are the same
            either way.

    Returns:
        The correlation in [-1, 1] over the H·W pixels of the two (H, W) float32 variance
        maps (variance across the samples, in [0, 0.25]), computed in
        float64. ``nan`` when either map is constant — in particular when all K samples of
        a stack are identical (zero variance everywhere, e.g. K = 1 or a deterministic
        student): a correlation is undefined there.
    """
    a, b = _sample_stack(samples_a), _sample_stack(samples_b)
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(
            f"the stacks cover different pixel grids: {tuple(a.shape[-2:])} vs "
            f"{tuple(b.shape[-2:])}"
        )
    va = pixel_variance(a, soft=soft)[0].to(torch.float64).flatten().cpu().numpy()
    vb = pixel_variance(b, soft=soft)[0].to(torch.float64).flatten().cpu().numpy()
    da, db = va - va.mean(), vb - vb.mean()
    na, nb = float(np.sqrt(np.dot(da, da))), float(np.sqrt(np.dot(db, db)))
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float(np.clip(np.dot(da, db) / (na * nb), -1.0, 1.0))


def _flatten_all(x: ArrayLike | Sequence[ArrayLike]) -> list[np.ndarray]:
    """One flat numpy array per image (a single array counts as one image)."""
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return [_numpy(x).ravel()]
    return [_numpy(v).ravel() for v in x]


def _level_counts(scores: np.ndarray, positives: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores and the positives / negatives at each (see :func:`error_counts`)."""
    scores = np.asarray(scores).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    if scores.shape != positives.shape:
        raise ValueError(f"{scores.shape[0]} scores but {positives.shape[0]} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite (found NaN or inf)")
    levels, index = np.unique(scores.astype(np.float64, copy=False), return_inverse=True)
    index = index.ravel()
    total = np.bincount(index, minlength=levels.size).astype(np.int64)
    pos = np.bincount(index[positives], minlength=levels.size).astype(np.int64)
    return levels, pos, total - pos


def auroc_from_counts(
    levels: np.ndarray, positives: np.ndarray, negatives: np.ndarray
) -> float:
    """Exact AUROC from per-score counts, e.g. several images' :func:`error_counts` joined.

    ``AUROC = (#{(p, n): s_p > s_n} + ½ #{(p, n): s_p = s_n}) / (P · N)`` over all pairs of a
    positive p and a negative n, i.e. the Mann–Whitney U of the positives over P · N.
    Integer arithmetic: exact while the pair counts stay below 2⁶³ (~3·10⁹ elements).

    Args:
        levels: (L,) float scores, in any order, repeats allowed (they are merged).
        positives: (L,) int counts of positives having each score.
        negatives: (L,) int counts of negatives having each score.

    Returns:
        The AUROC in [0, 1]; ``nan`` when there are no positives or no negatives.
    """
    levels = np.asarray(levels, dtype=np.float64).ravel()
    pos_in = np.asarray(positives, dtype=np.int64).ravel()
    neg_in = np.asarray(negatives, dtype=np.int64).ravel()
    if not (levels.size == pos_in.size == neg_in.size):
        raise ValueError("levels, positives and negatives differ in length")
    n_pos, n_neg = int(pos_in.sum()), int(neg_in.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, index = np.unique(levels, return_inverse=True)  # merge repeated scores, sort
    index = index.ravel()
    pos = np.zeros(int(index.max()) + 1, dtype=np.int64)
    neg = np.zeros_like(pos)
    np.add.at(pos, index, pos_in)
    np.add.at(neg, index, neg_in)
    neg_below = np.cumsum(neg) - neg  # negatives with a strictly lower score
    twice_u = int(np.sum(pos * (2 * neg_below + neg)))  # 2 U: a tie counts 1 instead of 1/2
    return twice_u / (2.0 * n_pos * n_neg)


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Exact AUROC of ``scores`` for separating ``positives`` from the rest (ties count ½).

    Args:
        scores: (M,) finite floats (any shape, flattened).
        positives: (M,) bool (same number of elements).

    Returns:
        The AUROC in [0, 1] (:func:`auroc_from_counts`); ``nan`` when there are no positives
        or no negatives.
    """
    return auroc_from_counts(*_level_counts(scores, positives))


def error_counts(
    uncertainty: ArrayLike | Sequence[ArrayLike],
    consensus: ArrayLike | Sequence[ArrayLike],
    ground_truth: ArrayLike | Sequence[ArrayLike],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compact form of :func:`error_detection_auroc`'s input, for pooling many images.

    Arguments as :func:`error_detection_auroc`.

    Returns:
        ``(levels, wrong, right)``: (L,) float64 distinct uncertainty values (ascending) and
        (L,) int64 counts of wrong and right pixels at each. Concatenate the triples of
        several images and pass them to :func:`auroc_from_counts` to get the pooled AUROC
        without keeping every image's maps in memory (uncertainty maps from K hard samples
        take at most K + 1 distinct values).
    """
    u, c, g = _flatten_all(uncertainty), _flatten_all(consensus), _flatten_all(ground_truth)
    if not (len(u) == len(c) == len(g)):
        raise ValueError(f"got {len(u)} uncertainty maps, {len(c)} consensus and {len(g)} "
                         "ground-truth masks")
    for i, (ui, ci, gi) in enumerate(zip(u, c, g)):
        if not (ui.size == ci.size == gi.size):
            raise ValueError(f"image {i}: uncertainty, consensus and ground truth have "
                             f"{ui.size}, {ci.size} and {gi.size} pixels")
    scores = np.concatenate([ui.astype(np.float64, copy=False) for ui in u])
    wrong = np.concatenate([(ci != 0) != (gi != 0) for ci, gi in zip(c, g)])
    return _level_counts(scores, wrong)


def error_detection_auroc(
    uncertainty: ArrayLike | Sequence[ArrayLike],
    consensus: ArrayLike | Sequence[ArrayLike],
    ground_truth: ArrayLike | Sequence[ArrayLike],
) -> float:
    """AUROC of a per-pixel uncertainty map for finding the consensus's wrong pixels.

    A pixel is *wrong* when ``consensus != ground_truth`` (a false positive or a false
    negative) and *right* otherwise; the uncertainty is the score, higher = more likely
    wrong.

    Args:
        uncertainty: one image's (Y, X) (or any-shape) float map, a batch (N, Y, X), or a
            sequence of per-image maps whose shapes may differ (pooled: every pixel of every
            image is one element). numpy or torch, finite values.
        consensus: the fused masks, same layout and shapes; nonzero = lesion.
        ground_truth: the reference masks, same layout and shapes; nonzero = lesion.

    Returns:
        The AUROC in [0, 1] over all pixels (ties count one half: a constant map gives
        0.5). ``nan`` when no pixel is wrong (a perfect consensus) or none is right.
    """
    return auroc_from_counts(*error_counts(uncertainty, consensus, ground_truth))


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation of two paired 1-D sequences (``scipy.stats.spearmanr``).

    Pairs where either value is NaN or infinite are left out (e.g. an undefined HD95).

    Returns:
        The correlation in [-1, 1] (ties get average ranks); ``nan`` with fewer than two
        remaining pairs or when either side is constant (e.g. a per-image disagreement
        score that is 0 for every image of a deterministic student).
    """
    from scipy.stats import spearmanr

    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in length: {a.size} vs {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)
