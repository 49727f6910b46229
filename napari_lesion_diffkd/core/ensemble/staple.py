"""STAPLE (Simultaneous Truth And Performance Level Estimation), vectorised in torch.

Warfield, Zou & Wells, "Simultaneous truth and performance level estimation (STAPLE)",
IEEE TMI 23(7):903-921, 2004, for binary segmentations. UniSegDiff (seed paper 004, §2.4)
fuses the K = 20 masks sampled from its diffusion model with it.

The default behaviour reproduces ITK's ``itk::STAPLEImageFilter`` (what
``SimpleITK.STAPLE`` / ``SimpleITK.STAPLEImageFilter`` run) so that results agree with
SimpleITK to floating-point precision:

* **Initialisation** (ITK): the posterior map ``W`` starts as the per-pixel mean of the
  raters' masks, and every EM iteration runs the M-step (sensitivity ``p_k``, specificity
  ``q_k`` from ``W``) *before* the E-step (new ``W`` from ``p, q``).
* **Prior** (ITK): ``g = mean(W_0) * confidence_weight``, i.e. the fraction of foreground
  over all raters and pixels, scaled by ``confidence_weight``; fixed during EM. It is
  estimated per image in batched mode (each image is an independent ITK run).
* **Stopping** (ITK): from the second iteration on, stop once every rater's sensitivity
  and specificity changed by at most ``tolerance`` since the previous iteration. ITK tests
  ``(Δp)² > 1e-14`` ("min_rms_error"), i.e. ``tolerance = 1e-7``.
* ITK iterates up to ``2**32 - 1`` times; we cap at ``max_iterations`` (1000) because EM
  on independent noise masks never meets the tolerance (it drifts forever, we checked
  with SimpleITK), and report ``converged``.

The UniSegDiff variant (paper §2.4: ``α_j = 0.9`` = P(rater says lesion | lesion), i.e.
sensitivity, ``β_j = 0.1`` = P(rater says lesion | background), i.e. 1 − specificity, a
prior of 50 % and 20 updates) is :data:`UNISEGDIFF_PARAMS`: with ``init_sensitivity`` /
``init_specificity`` given, EM starts with an E-step from those values instead of from the
rater mean.

Speed: the posterior of a pixel depends only on its *pattern* of K votes, so the K masks
are packed into one integer code per pixel and EM runs over the unique patterns weighted
by their pixel counts (``torch.unique``). Sampled lesion masks agree almost everywhere,
so a 512² image with 20 samples usually has a few thousand patterns, not 262 144. Each
EM step is then two batched matrix products over (images, patterns, raters) in float64.

Batched mode: ``masks`` of shape (N, K, *spatial) runs N independent STAPLE problems at
once (each with its own prior, stopping iteration and performance parameters); images
that converge early are frozen and dropped from the working set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = [
    "ITK_TOLERANCE",
    "UNISEGDIFF_PARAMS",
    "StapleResult",
    "staple",
]

#: ITK stops when every (Δp)² and (Δq)² <= 1e-14 (``min_rms_error`` in
#: itkSTAPLEImageFilter.hxx), i.e. |Δ| <= 1e-7.
ITK_TOLERANCE = 1e-7

#: Our iteration cap. ITK's default ``MaximumIterations`` is 2**32 - 1 (never reached in
#: practice on real masks, but EM on pure noise never converges).
DEFAULT_MAX_ITERATIONS = 1000

#: UniSegDiff §2.4 (seed 004): α_j = 0.9 (sensitivity), β_j = 0.1 (false-positive rate, so
#: specificity 0.9), P(y_i = 1) = 0.5, "repeated 20 times" (a fixed number of updates).
UNISEGDIFF_PARAMS: dict[str, float | int] = {
    "prior": 0.5,
    "init_sensitivity": 0.9,
    "init_specificity": 0.9,
    "max_iterations": 20,
    "tolerance": 0.0,
}

# log(0) would give -inf and 0 * -inf = NaN inside the matrix products; flooring at the
# smallest normal float64 keeps every term finite while exp() of it still underflows
# to 0, so "impossible" events stay (numerically) impossible.
_LOG_FLOOR_INPUT = torch.finfo(torch.float64).tiny

# Pack at most this many raters into one int64 code per pixel (bit k = rater k); more
# raters fall back to ``torch.unique(dim=0)`` on the vote rows.
_MAX_PACKED_RATERS = 62


@dataclass(frozen=True)
class StapleResult:
    """Output of :func:`staple`; always has a leading image axis N (N = 1 for one image).

    Attributes:
        probability: (N, *spatial) float32, posterior P(true label = 1 | votes) in [0, 1].
            Same spatial shape and axis order as the input masks.
        sensitivity: (N, K) float64, estimated P(rater k says 1 | truth 1) (ITK ``p``).
        specificity: (N, K) float64, estimated P(rater k says 0 | truth 0) (ITK ``q``).
        iterations: (N,) int64, number of EM iterations (M-step + E-step) run. ITK's
            ``GetElapsedIterations()`` is this minus one when it converged (it reports
            the 0-based index of the last iteration) and equal to it otherwise.
        converged: (N,) bool, whether the tolerance was met before ``max_iterations``.
        prior: (N,) float64, the prior P(true label = 1) used (after confidence weight).
    """

    probability: torch.Tensor
    sensitivity: torch.Tensor
    specificity: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    prior: torch.Tensor

    def consensus(self, threshold: float = 0.5) -> torch.Tensor:
        """(N, *spatial) bool: ``probability >= threshold`` (0.5 = MAP decision)."""
        return self.probability >= threshold


def _flog(x: torch.Tensor) -> torch.Tensor:
    """Natural log with 0 mapped to log(float64 tiny) ≈ -708 instead of -inf."""
    return torch.log(x.clamp_min(_LOG_FLOOR_INPUT))


def _as_votes(
    masks: torch.Tensor | np.ndarray | Sequence, spatial_dims: int
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Return (N, K, P) bool votes and the spatial shape."""
    if isinstance(masks, torch.Tensor):
        t = masks.detach()
    elif isinstance(masks, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(masks))
    else:
        t = torch.stack([torch.as_tensor(np.asarray(m)) for m in masks])
    if spatial_dims < 1:
        raise ValueError(f"spatial_dims must be >= 1, got {spatial_dims}")
    lead = t.ndim - spatial_dims
    if lead == 1:
        t = t.unsqueeze(0)
    elif lead != 2:
        raise ValueError(
            f"masks must be (K, *spatial) or (N, K, *spatial) with {spatial_dims} spatial "
            f"dims, got shape {tuple(t.shape)}"
        )
    if t.shape[1] < 1 or any(s < 1 for s in t.shape[2:]) or t.shape[0] < 1:
        raise ValueError(f"empty masks array of shape {tuple(t.shape)}")
    votes = t != 0 if t.dtype != torch.bool else t
    return votes.reshape(t.shape[0], t.shape[1], -1), tuple(t.shape[2:])


def _unique_patterns(votes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compress per-pixel vote vectors to unique patterns.

    Args:
        votes: (N, K, P) bool.

    Returns:
        patterns: (N, U, K) float64 in {0, 1}, U = max number of patterns over images
            (shorter lists are padded with zero rows of count 0).
        counts: (N, U) float64 number of pixels having each pattern (0 for padding).
        inverse: (N, P) int64 index of each pixel's pattern.
    """
    n, k, p = votes.shape
    device = votes.device
    uniques: list[torch.Tensor] = []
    counts_l: list[torch.Tensor] = []
    inverses: list[torch.Tensor] = []
    if k <= _MAX_PACKED_RATERS:
        codes = torch.zeros((n, p), dtype=torch.int64, device=device)
        for j in range(k):
            codes |= votes[:, j].to(torch.int64) << j
        for i in range(n):
            u, inv, cnt = torch.unique(codes[i], return_inverse=True, return_counts=True)
            uniques.append(u)
            inverses.append(inv)
            counts_l.append(cnt)
        u_max = max(u.numel() for u in uniques)
        shifts = torch.arange(k, device=device, dtype=torch.int64)
        patterns = torch.zeros((n, u_max, k), dtype=torch.float64, device=device)
        for i, u in enumerate(uniques):
            patterns[i, : u.numel()] = ((u[:, None] >> shifts) & 1).to(torch.float64)
    else:
        rows = []
        for i in range(n):
            u, inv, cnt = torch.unique(
                votes[i].T.to(torch.uint8), dim=0, return_inverse=True, return_counts=True
            )
            rows.append(u)
            inverses.append(inv)
            counts_l.append(cnt)
        u_max = max(u.shape[0] for u in rows)
        patterns = torch.zeros((n, u_max, k), dtype=torch.float64, device=device)
        for i, u in enumerate(rows):
            patterns[i, : u.shape[0]] = u.to(torch.float64)
    counts = torch.zeros((n, u_max), dtype=torch.float64, device=device)
    for i, c in enumerate(counts_l):
        counts[i, : c.numel()] = c.to(torch.float64)
    return patterns, counts, torch.stack(inverses)


def _m_step(
    w: torch.Tensor, patterns: torch.Tensor, counts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sensitivity/specificity from the posterior (Warfield 2004 eqs. 18-19; ITK loop 1).

    Args:
        w: (n, U) float64 posterior P(T=1) per pattern.
        patterns: (n, U, K) float64 votes.
        counts: (n, U) float64 pixel count per pattern.

    Returns:
        p, q: (n, K) float64. A zero denominator (no posterior mass on that class, e.g.
        all raters empty) gives 1.0 ("nothing of that class was missed"); ITK gives NaN.
    """
    wc = w * counts  # posterior mass of "true foreground" per pattern
    bc = (1.0 - w) * counts  # ... of "true background"
    sums = torch.bmm(torch.stack((wc, bc), dim=1), patterns)  # (n, 2, K)
    p_den = wc.sum(dim=1, keepdim=True)
    q_den = bc.sum(dim=1, keepdim=True)
    p_num = sums[:, 0]
    q_num = q_den - sums[:, 1]  # background mass where the rater said 0
    one = torch.ones((), dtype=torch.float64, device=w.device)
    p = torch.where(p_den > 0, p_num / torch.where(p_den > 0, p_den, one), one)
    q = torch.where(q_den > 0, q_num / torch.where(q_den > 0, q_den, one), one)
    # Summation order differs from ITK's pixel loop, so clamp rounding outside [0, 1].
    return p.clamp(0.0, 1.0), q.clamp(0.0, 1.0)


def _e_step(
    p: torch.Tensor, q: torch.Tensor, log_g: torch.Tensor, log_1mg: torch.Tensor,
    patterns: torch.Tensor,
) -> torch.Tensor:
    """Posterior per pattern from the performance parameters (Warfield 2004 eq. 14).

    ``W = g·Πp^D(1-p)^(1-D) / (g·Π... + (1-g)·Π(1-q)^D q^(1-D))`` computed in the log
    domain as a sigmoid of the log-odds, which equals ITK's product form to ~1e-15 and
    never forms 0/0 (ITK yields NaN where both products underflow to 0).

    Args:
        p, q: (n, K) float64. log_g, log_1mg: (n,) float64. patterns: (n, U, K) float64.

    Returns:
        (n, U) float64 posterior in [0, 1].
    """
    lp, l1p, lq, l1q = _flog(p), _flog(1.0 - p), _flog(q), _flog(1.0 - q)
    coef = torch.stack((lp - l1p, l1q - lq), dim=-1)  # (n, K, 2): change when D=1
    base = torch.stack((log_g + l1p.sum(1), log_1mg + lq.sum(1)), dim=-1)  # all D=0
    logs = torch.bmm(patterns, coef) + base[:, None, :]  # (n, U, 2)
    return torch.sigmoid(logs[..., 0] - logs[..., 1])


def staple(
    masks: torch.Tensor | np.ndarray | Sequence,
    *,
    spatial_dims: int = 2,
    prior: float | Literal["estimate"] = "estimate",
    init_sensitivity: float | None = None,
    init_specificity: float | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tolerance: float = ITK_TOLERANCE,
    confidence_weight: float = 1.0,
) -> StapleResult:
    """Run binary STAPLE on K rater masks per image, for one or N images at once.

    Args:
        masks: (K, *spatial) or (N, K, *spatial) bool / {0, 1} tensor or ndarray (any
            nonzero value counts as foreground, like ITK's ``foregroundValue=1`` on 0/1
            data). Axis order: image, rater (sample), then spatial axes (Y, X) or
            (Z, Y, X). A list of (*spatial) arrays is accepted as (K, *spatial).
        spatial_dims: number of trailing spatial axes (2 for (H, W), 3 for volumes);
            decides whether a 4-D input is (N, K, H, W) or (K, Z, Y, X).
        prior: ``"estimate"`` (ITK: fraction of foreground over all raters and pixels of
            that image) or a fixed P(true = 1) in [0, 1] (UniSegDiff: 0.5). Either way it
            is multiplied by ``confidence_weight`` and clipped to [0, 1].
        init_sensitivity: with ``init_specificity``, start EM from these performance
            values (an E-step first, as in UniSegDiff §2.4: 0.9 and 0.9). Both None
            (default) = ITK start: posterior = mean of the raters, M-step first.
        init_specificity: see ``init_sensitivity``; 1 − UniSegDiff's β_j.
        max_iterations: at most this many EM iterations (each an M-step + E-step).
        tolerance: converged when every rater's |Δsensitivity| and |Δspecificity| between
            two consecutive iterations is <= tolerance (checked from the second
            iteration on; ITK: 1e-7). 0 runs until nothing changes or the cap.
        confidence_weight: ITK's ``ConfidenceWeight``, a factor on the prior.

    Returns:
        :class:`StapleResult` with a leading image axis (N = 1 for unbatched input).

    Degenerate cases (no NaN, unlike ITK's 0/0):
        * all raters identical: probability = the common mask (exactly 0/1), sensitivity
          = specificity = 1 for every rater.
        * all masks empty: prior 0, probability 0 everywhere, sensitivity 1 (vacuous: no
          true foreground to miss), specificity 1. All masks full: probability 1,
          sensitivity 1, specificity 1 (vacuous).
        * one rater all zeros (others not): its sensitivity is 0, specificity high; its
          votes then carry no information and do not change the posterior.
        * when every hypothesis is "impossible" for a pixel (products of exact zeros),
          the log-floor makes the posterior the limit of p, q -> 1 (counts of
          contradicting raters decide) instead of NaN.
    """
    if max_iterations < 1:
        raise ValueError("max_iterations must be >= 1")
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    if (init_sensitivity is None) != (init_specificity is None):
        raise ValueError("give both init_sensitivity and init_specificity, or neither")

    votes, spatial = _as_votes(masks, spatial_dims)
    n_img, k, n_pix = votes.shape
    device = votes.device
    f64 = torch.float64

    patterns, counts, inverse = _unique_patterns(votes)
    w = patterns.mean(dim=2)  # ITK's W_0: mean vote per pixel (pattern)

    if isinstance(prior, str):
        if prior != "estimate":
            raise ValueError(f"prior must be a float or 'estimate', got {prior!r}")
        g = (w * counts).sum(1) / n_pix
    else:
        if not 0.0 <= float(prior) <= 1.0:
            raise ValueError(f"prior must lie in [0, 1], got {prior}")
        g = torch.full((n_img,), float(prior), dtype=f64, device=device)
    g = (g * confidence_weight).clamp(0.0, 1.0)
    log_g, log_1mg = _flog(g), _flog(1.0 - g)

    if init_sensitivity is not None:
        p0 = torch.full((n_img, k), float(init_sensitivity), dtype=f64, device=device)
        q0 = torch.full((n_img, k), float(init_specificity), dtype=f64, device=device)
        w = _e_step(p0, q0, log_g, log_1mg, patterns)

    # Final results per image, filled as images converge (or at the cap).
    out_w = torch.empty_like(w)
    out_p = torch.empty((n_img, k), dtype=f64, device=device)
    out_q = torch.empty_like(out_p)
    out_it = torch.full((n_img,), max_iterations, dtype=torch.int64, device=device)
    out_conv = torch.zeros((n_img,), dtype=torch.bool, device=device)

    # Working set: images still iterating (compacted when some converge).
    idx = torch.arange(n_img, device=device)
    pat, cnt, lg, l1g = patterns, counts, log_g, log_1mg
    last_p = last_q = None
    tol2 = tolerance * tolerance  # ITK compares squared changes
    p = q = None
    for it in range(max_iterations):
        p, q = _m_step(w, pat, cnt)
        w = _e_step(p, q, lg, l1g, pat)
        if last_p is not None:
            done = ((p - last_p) ** 2 <= tol2).all(1) & ((q - last_q) ** 2 <= tol2).all(1)
            if bool(done.any()):
                sel = idx[done]
                out_w[sel], out_p[sel], out_q[sel] = w[done], p[done], q[done]
                out_it[sel] = it + 1
                out_conv[sel] = True
                keep = ~done
                if not bool(keep.any()):
                    idx = idx[keep]
                    break
                idx, pat, cnt, lg, l1g = idx[keep], pat[keep], cnt[keep], lg[keep], l1g[keep]
                w, p, q = w[keep], p[keep], q[keep]
        last_p, last_q = p, q
    if idx.numel():
        out_w[idx], out_p[idx], out_q[idx] = w, p, q

    prob = torch.gather(out_w, 1, inverse).to(torch.float32).reshape((n_img, *spatial))
    return StapleResult(
        probability=prob,
        sensitivity=out_p,
        specificity=out_q,
        iterations=out_it,
        converged=out_conv,
        prior=g,
    )
