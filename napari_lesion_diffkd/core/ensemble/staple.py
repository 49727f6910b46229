"""STAPLE (Simultaneous Truth And Performance Level Estimation), vectorised over images.

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
are bit-packed into one code per pixel and EM runs over the unique patterns weighted by
their pixel counts. Sampled lesion masks agree almost everywhere, so 20 samples of a
512² image usually give a few thousand patterns, not 262 144. Each EM iteration is then
two batched mat-vec products over (images, patterns, raters) in float64.

Why the EM loop runs in numpy, not torch: after compression the arrays are small, and
torch's CPU kernels on arrays above its 32 768-element parallel grain size (OpenMP / MKL
intra-op threads) slowed down ~100x when other processes occupied the cores (16 ms
instead of 0.1 ms per op, measured on the shared 2-core machine), whereas numpy's
single-threaded kernels stay fast; above 2**18 multiply-adds the mat-vecs use
``np.einsum`` instead of BLAS for the same reason. Inputs and outputs are torch tensors
(any device; results go back to the input's device; numpy input gives CPU tensors).

Batched mode: ``masks`` of shape (N, K, *spatial) runs N independent STAPLE problems at
once (each with its own prior, stopping iteration and performance parameters); images
that converge early are frozen and dropped from the working set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch
from scipy.special import expit

__all__ = [
    "DEFAULT_MAX_ITERATIONS",
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
UNISEGDIFF_PARAMS: Mapping[str, float | int] = MappingProxyType(
    {
        "prior": 0.5,
        "init_sensitivity": 0.9,
        "init_specificity": 0.9,
        "max_iterations": 20,
        "tolerance": 0.0,
    }
)


# log(0) would give -inf and 0 * -inf = NaN inside the matrix products; flooring at the
# smallest normal float64 keeps every term finite while exp() of it still underflows to
# 0, so "impossible" events stay (numerically) impossible.
_TINY = np.finfo(np.float64).tiny

# Above this many multiply-adds per mat-vec, OpenBLAS starts threads (slow under core
# contention, see module docstring); numpy's own einsum loop is single-threaded.
_BLAS_MAX_WORK = 1 << 18


@dataclass(frozen=True)
class StapleResult:
    """Output of :func:`staple`; always has a leading image axis N (N = 1 for one image).

    Attributes:
        probability: (N, *spatial) float32 posterior P(true label = 1 | votes) in [0, 1],
            same spatial shape and axis order as the input masks.
        sensitivity: (N, K) float64, estimated P(rater k says 1 | truth 1) (ITK ``p``).
        specificity: (N, K) float64, estimated P(rater k says 0 | truth 0) (ITK ``q``).
        iterations: (N,) int64 number of EM iterations (M-step + E-step) run. ITK's
            ``GetElapsedIterations()`` is this minus one when it converged (it reports
            the 0-based index of the last iteration) and equal to it at the cap.
        converged: (N,) bool, whether the tolerance was met within ``max_iterations``.
        prior: (N,) float64 prior P(true label = 1) used (after the confidence weight).

    All tensors are on the input's device (CPU for numpy input).
    """

    probability: torch.Tensor
    sensitivity: torch.Tensor
    specificity: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    prior: torch.Tensor

    def consensus(self, threshold: float = 0.5) -> torch.Tensor:
        """(N, *spatial) bool ``probability >= threshold``; 0.5 is the MAP decision."""
        return self.probability >= threshold


def _flog(x: np.ndarray) -> np.ndarray:
    """Natural log with 0 mapped to log(float64 tiny) ≈ -708 instead of -inf."""
    return np.log(np.maximum(x, _TINY))


def _as_votes(
    masks: torch.Tensor | np.ndarray | Sequence, spatial_dims: int
) -> tuple[np.ndarray, tuple[int, ...], torch.device]:
    """Return (N, K, P) bool votes (numpy), the spatial shape and the output device."""
    if spatial_dims < 1:
        raise ValueError(f"spatial_dims must be >= 1, got {spatial_dims}")
    device = torch.device("cpu")
    if isinstance(masks, torch.Tensor):
        device = masks.device
        arr = masks.detach().cpu().numpy()
    elif isinstance(masks, np.ndarray):
        arr = masks
    else:
        arr = np.stack(
            [m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
             for m in masks]
        )
    lead = arr.ndim - spatial_dims
    if lead == 1:
        arr = arr[None]
    elif lead != 2:
        raise ValueError(
            f"masks must be (K, *spatial) or (N, K, *spatial) with {spatial_dims} spatial "
            f"dims, got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"empty masks array of shape {arr.shape}")
    if arr.dtype != np.bool_ and arr.size and arr.min() < 0:
        # [-1, 1] diffusion outputs would all count as "lesion" (nonzero): refuse them.
        raise ValueError(
            "masks has negative values; binarise [-1, 1] samples first (x > 0) or use "
            "fuse_samples(..., method='staple')"
        )
    votes = arr if arr.dtype == np.bool_ else arr != 0
    return votes.reshape(arr.shape[0], arr.shape[1], -1), tuple(arr.shape[2:]), device


def _unique_patterns(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compress per-pixel vote vectors to unique patterns.

    Args:
        votes: (N, K, P) bool.

    Returns:
        patterns: (N, U, K) float64 in {0, 1}; U = largest pattern count over images,
            shorter lists padded with zero rows of count 0 (they carry no weight).
        counts: (N, U) float64 pixel count of each pattern.
        inverse: (N, P) int64 index of each pixel's pattern.
    """
    n, k, p = votes.shape
    # (N, P, ceil(K/8)) bytes, bit j of the code = rater j (little bit order).
    packed = np.packbits(votes.transpose(0, 2, 1), axis=-1, bitorder="little")
    n_bytes = packed.shape[-1]
    if n_bytes <= 8:  # one uint64 code per pixel: fastest unique
        padded = np.zeros((n, p, 8), dtype=np.uint8)
        padded[..., :n_bytes] = packed
        codes = padded.view("<u8")[..., 0]
    else:  # any K: compare the byte rows as opaque records
        codes = np.ascontiguousarray(packed).view(np.dtype((np.void, n_bytes)))[..., 0]
    uniq, counts_l, inverse = [], [], np.empty((n, p), dtype=np.int64)
    for i in range(n):
        u, inv, cnt = np.unique(codes[i], return_inverse=True, return_counts=True)
        uniq.append(u)
        counts_l.append(cnt)
        inverse[i] = inv.reshape(-1)
    u_max = max(u.shape[0] for u in uniq)
    patterns = np.zeros((n, u_max, k), dtype=np.float64)
    counts = np.zeros((n, u_max), dtype=np.float64)
    for i, (u, cnt) in enumerate(zip(uniq, counts_l)):
        raw = np.ascontiguousarray(u).view(np.uint8).reshape(u.shape[0], -1)
        bits = np.unpackbits(raw, axis=1, bitorder="little")[:, :k]
        patterns[i, : u.shape[0]] = bits
        counts[i, : u.shape[0]] = cnt
    return patterns, counts, inverse


def _vec_mat(w: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """(n, U) x (n, U, K) -> (n, K): sum over patterns."""
    if patterns.size <= _BLAS_MAX_WORK:
        return np.matmul(w[:, None, :], patterns)[:, 0]
    return np.einsum("nu,nuk->nk", w, patterns)


def _mat_vec(patterns: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n, U, K) x (n, K) -> (n, U): sum over raters."""
    if patterns.size <= _BLAS_MAX_WORK:
        return np.matmul(patterns, v[:, :, None])[..., 0]
    return np.einsum("nuk,nk->nu", patterns, v)


def _m_step(
    w: np.ndarray, patterns: np.ndarray, counts: np.ndarray, said_one: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity/specificity from the posterior (Warfield 2004 eqs. 18-19; ITK loop 1).

    Args:
        w: (n, U) float64 posterior P(T=1) per pattern.
        patterns: (n, U, K) float64 votes.
        counts: (n, U) float64 pixel count per pattern.
        said_one: (n, K) float64 number of pixels each rater labelled 1.

    Returns:
        p, q: (n, K) float64. A zero denominator (no posterior mass on that class, e.g.
        all raters empty) gives 1.0 ("nothing of that class was missed"); ITK: NaN.
    """
    wc = w * counts  # posterior mass of "true foreground" per pattern
    p_den = wc.sum(axis=1, keepdims=True)
    q_den = counts.sum(axis=1, keepdims=True) - p_den
    p_num = _vec_mat(wc, patterns)  # foreground mass where the rater said 1
    q_num = q_den - (said_one - p_num)  # background mass where the rater said 0
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(p_den > 0, p_num / p_den, 1.0)
        q = np.where(q_den > 0, q_num / q_den, 1.0)
    # The summation order differs from ITK's pixel loop: clip rounding outside [0, 1].
    return np.clip(p, 0.0, 1.0), np.clip(q, 0.0, 1.0)


def _e_step(
    p: np.ndarray, q: np.ndarray, logit_g: np.ndarray, patterns: np.ndarray
) -> np.ndarray:
    """Posterior per pattern from the performance parameters (Warfield 2004 eq. 14).

    ``W = g·Π p^D (1-p)^(1-D) / (g·Π p^D (1-p)^(1-D) + (1-g)·Π (1-q)^D q^(1-D))`` is
    evaluated as the sigmoid of its log-odds: it equals ITK's product form to ~1e-15 and
    never forms 0/0 (ITK yields NaN where both products are exactly 0).

    Args:
        p, q: (n, K) float64. logit_g: (n,) float64 log(g / (1 - g)), floored.
        patterns: (n, U, K) float64 in {0, 1}.

    Returns:
        (n, U) float64 posterior in [0, 1].
    """
    lp, l1p, lq, l1q = _flog(p), _flog(1.0 - p), _flog(q), _flog(1.0 - q)
    base = logit_g + (l1p - lq).sum(axis=1)  # log-odds when every rater says 0
    per_vote = (lp - l1p) - (l1q - lq)  # change of the log-odds when rater k says 1
    return expit(base[:, None] + _mat_vec(patterns, per_vote))


def staple(
    masks: torch.Tensor | np.ndarray | Sequence,
    *,
    spatial_dims: int = 2,
    prior: float | Literal["estimate"] | None = "estimate",
    init_sensitivity: float | None = None,
    init_specificity: float | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tolerance: float = ITK_TOLERANCE,
    confidence_weight: float = 1.0,
) -> StapleResult:
    """Run binary STAPLE on K rater masks per image, for one or N images at once.

    Args:
        masks: (K, *spatial) or (N, K, *spatial) bool / {0, 1} tensor or ndarray; any
            nonzero value is foreground (ITK ``foregroundValue=1`` on 0/1 data). Axis
            order: image, rater (sample), then spatial axes (Y, X) or (Z, Y, X). A list
            of K (*spatial) arrays is read as (K, *spatial).
        spatial_dims: number of trailing spatial axes (2 for (H, W), 3 for volumes); it
            decides whether a 4-D input is (N, K, H, W) or (K, Z, Y, X).
        prior: ``"estimate"`` or None (ITK: fraction of foreground over all raters and
            pixels of that image) or a fixed P(true = 1) (UniSegDiff: 0.5). Either way
            multiplied by ``confidence_weight`` and clipped to [0, 1].
        init_sensitivity: with ``init_specificity``, start EM from these performance
            values with an E-step (UniSegDiff §2.4: 0.9 and 0.9). Both None (default):
            ITK start, posterior = mean of the raters and the M-step first.
        init_specificity: see ``init_sensitivity``; equals 1 − UniSegDiff's β_j.
        max_iterations: at most this many EM iterations (each an M-step + an E-step).
        tolerance: converged when every rater's |Δsensitivity| and |Δspecificity|
            between two consecutive iterations is <= tolerance, tested from the second
            iteration on (ITK: 1e-7). With 0 it runs until nothing changes or the cap.
        confidence_weight: ITK's ``ConfidenceWeight``, a factor on the prior.

    Returns:
        :class:`StapleResult` with a leading image axis (N = 1 for unbatched input).
        Batched input gives exactly the per-image results (own prior, own stopping
        iteration); it saves Python overhead, not arithmetic.

    Degenerate cases (no NaN, where ITK divides 0 by 0):
        * all raters identical: probability = the common mask, exactly 0/1; sensitivity
          = specificity = 1 for every rater (ITK gives the same).
        * all masks empty: prior 0, probability 0 everywhere, sensitivity 1 (vacuous: no
          true foreground was missed), specificity 1; ITK returns NaN. All masks full:
          probability 1, sensitivity 1, specificity 1 (vacuous).
        * one rater all zeros (others not): sensitivity 0, its votes carry no information
          and leave the posterior of the others unchanged (as in ITK).
        * a pixel where both hypotheses are impossible (exact-zero products): the floored
          logs give the limit of p, q -> 1, decided by how many raters contradict each
          hypothesis, instead of NaN.
    """
    if max_iterations < 1:
        raise ValueError("max_iterations must be >= 1")
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    if (init_sensitivity is None) != (init_specificity is None):
        raise ValueError("give both init_sensitivity and init_specificity, or neither")

    votes, spatial, device = _as_votes(masks, spatial_dims)
    n_img, k, n_pix = votes.shape

    patterns, counts, inverse = _unique_patterns(votes)
    said_one = np.einsum("nu,nuk->nk", counts, patterns)  # per-rater foreground pixels
    w = patterns.mean(axis=2)  # ITK's W_0: mean vote of each pixel (pattern)

    if prior is None or isinstance(prior, str):
        if prior not in (None, "estimate"):
            raise ValueError(f"prior must be a float or 'estimate', got {prior!r}")
        g = (w * counts).sum(axis=1) / n_pix
    else:
        if not 0.0 <= float(prior) <= 1.0:
            raise ValueError(f"prior must lie in [0, 1], got {prior}")
        g = np.full(n_img, float(prior))
    g = np.clip(g * confidence_weight, 0.0, 1.0)
    logit_g = _flog(g) - _flog(1.0 - g)

    if init_sensitivity is not None:
        w = _e_step(
            np.full((n_img, k), float(init_sensitivity)),
            np.full((n_img, k), float(init_specificity)),
            logit_g, patterns,
        )

    # Final values per image, filled in as images converge (or at the cap).
    out_w = np.empty_like(w)
    out_p = np.empty((n_img, k))
    out_q = np.empty((n_img, k))
    out_it = np.full(n_img, max_iterations, dtype=np.int64)
    out_conv = np.zeros(n_img, dtype=bool)

    # Working set: the images still iterating; compacted whenever some converge.
    idx = np.arange(n_img)
    pat, cnt, ones, lg = patterns, counts, said_one, logit_g
    tol2 = tolerance * tolerance  # ITK compares squared changes with 1e-14
    last_p = last_q = None
    for it in range(max_iterations):
        p, q = _m_step(w, pat, cnt, ones)
        w = _e_step(p, q, lg, pat)
        if last_p is not None:
            done = ((p - last_p) ** 2 <= tol2).all(axis=1) & ((q - last_q) ** 2 <= tol2).all(
                axis=1
            )
            if done.any():
                sel = idx[done]
                out_w[sel], out_p[sel], out_q[sel] = w[done], p[done], q[done]
                out_it[sel] = it + 1
                out_conv[sel] = True
                keep = ~done
                idx = idx[keep]
                if idx.size == 0:
                    break
                pat, cnt, ones, lg = pat[keep], cnt[keep], ones[keep], lg[keep]
                w, p, q = w[keep], p[keep], q[keep]
        last_p, last_q = p, q
    if idx.size:
        out_w[idx], out_p[idx], out_q[idx] = w, p, q

    prob = np.take_along_axis(out_w, inverse, axis=1).astype(np.float32)
    return StapleResult(
        probability=torch.from_numpy(prob.reshape((n_img, *spatial))).to(device),
        sensitivity=torch.from_numpy(out_p).to(device),
        specificity=torch.from_numpy(out_q).to(device),
        iterations=torch.from_numpy(out_it).to(device),
        converged=torch.from_numpy(out_conv).to(device),
        prior=torch.from_numpy(g).to(device),
    )
