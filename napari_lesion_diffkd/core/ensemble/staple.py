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

Implementation (all torch, on the input's device; numpy is only accepted as input):

* **Vote patterns.** The posterior of a pixel depends only on its *pattern* of K votes,
  so the K votes of each pixel are bit-packed into one int64 code (bit k = rater k; built
  8 raters per byte, then bytes combined), the image index goes into the bits above the
  K vote bits, and one ``torch.unique(..., return_inverse=True, return_counts=True)``
  over all images gives every image's unique patterns, their pixel counts and each
  pixel's pattern index. The unique codes are decoded back to a float64 pattern table
  of N images x U patterns x K raters (stored as (N, K, U): both EM products run ~1.5x
  faster on that layout), U = the largest per-image pattern count, shorter lists padded
  with zero-count patterns (they carry no weight). Sampled lesion masks agree almost
  everywhere, so 20 samples of a 512² image usually give a few thousand patterns, not
  262 144.
* **Many raters.** When K plus the bits of the image index exceed 63 (K > 63 for one
  image, e.g. K > 59 for 16 images), the raters are packed in chunks of 63 and the
  chunks are combined exactly by ranking: the dense rank of (image, patterns so far) from
  ``torch.unique`` times the number of distinct codes of the next chunk plus that code's
  rank, re-ranked after each chunk (no hashing, hence no collisions; exact while
  N · pixels < 3·10⁹). Each unique pattern's votes are then read from one of its pixels.
* **EM** runs in float64 on the pattern table, weighted by the counts: per iteration two
  batched mat-vec products (``torch.bmm``) over (images, raters, patterns) plus O(N·K)
  bookkeeping, with sensitivity and specificity kept as one (n, 2, K) tensor. Each image
  has its own prior and stopping iteration; images that converge are frozen (their
  results stored) and dropped from the working set while the others continue. The
  posterior goes back to the pixels by gathering with the inverse index.

Threads: on CPU, :func:`staple` calls ``torch.set_num_threads(1)`` for the duration of
the call and restores the previous value afterwards (torch's thread setting is process
state: other Python threads running torch ops at the same moment may run single-threaded
meanwhile). Every op here is either small or memory-bound, and torch parallelises any op
above 32 768 elements with OpenMP: while other processes occupied the cores of the
shared 2-core machine, those ops waited for a descheduled worker thread at each barrier,
e.g. ``torch.unique`` on 262 144 codes took a median 200 ms with 2 threads against 5.5 ms
with 1, packing the votes 11 ms against 3 ms, a whole batched call (8 x 20 masks of 256²)
1.4-2.9 s against 0.04-0.13 s (benchmarks/bench_staple.py measures it). On CUDA nothing
is changed.

Batched mode: ``masks`` of shape (N, K, *spatial) runs N independent STAPLE problems at
once (each with its own prior, stopping iteration and performance parameters).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch

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
_TINY = torch.finfo(torch.float64).tiny

# Vote bits per int64 code: bit 63 (the sign bit) stays 0, so codes sort as unsigned.
_CODE_BITS = 63


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

    All tensors are on the input's device (CPU for numpy input; for a list, the device of
    its first tensor).
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


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """On CPU, run the block with one torch intra-op thread (see module docstring)."""
    saved = torch.get_num_threads() if device.type == "cpu" else 1
    if saved != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if saved != 1:
            torch.set_num_threads(saved)


def _flog(x: torch.Tensor) -> torch.Tensor:
    """Natural log with 0 mapped to log(float64 tiny) ≈ -708 instead of -inf."""
    return torch.log(torch.clamp_min(x, _TINY))


_NEGATIVE_MSG = (
    "masks has negative values; binarise [-1, 1] samples first (x > 0) or use "
    "fuse_samples(..., method='staple')"
)


def _bool_tensor(x: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    """``x != 0`` as a bool tensor (same device for tensors, CPU otherwise).

    Raises ValueError on negative values: [-1, 1] diffusion outputs would all count as
    "lesion" (nonzero).
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype == torch.bool:
            return t
        if t.dtype.is_signed and t.numel() and bool((t < 0).any()):
            raise ValueError(_NEGATIVE_MSG)
        return t != 0
    arr = np.asarray(x)  # numpy only to accept numpy input
    if arr.dtype != np.bool_:
        if arr.dtype.kind in "if" and arr.size and arr.min() < 0:
            raise ValueError(_NEGATIVE_MSG)
        arr = arr != 0
    if not arr.flags.writeable:  # torch.from_numpy warns on read-only arrays
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr))


def _as_votes(
    masks: torch.Tensor | np.ndarray | Sequence, spatial_dims: int
) -> tuple[torch.Tensor, tuple[int, ...], torch.device]:
    """Return (N, K, P) bool votes (torch, on the output device), the spatial shape and
    the output device."""
    if spatial_dims < 1:
        raise ValueError(f"spatial_dims must be >= 1, got {spatial_dims}")
    if isinstance(masks, (torch.Tensor, np.ndarray)):
        votes = _bool_tensor(masks)
    else:  # a list of K (*spatial) masks
        parts = [_bool_tensor(m) for m in masks]
        if not parts:
            raise ValueError("empty list of masks")
        devices = [m.device for m in masks if isinstance(m, torch.Tensor)]
        device = devices[0] if devices else torch.device("cpu")
        votes = torch.stack([m.to(device) for m in parts])
    lead = votes.dim() - spatial_dims
    if lead == 1:
        votes = votes[None]
    elif lead != 2:
        raise ValueError(
            f"masks must be (K, *spatial) or (N, K, *spatial) with {spatial_dims} spatial "
            f"dims, got shape {tuple(votes.shape)}"
        )
    if votes.numel() == 0:
        raise ValueError(f"empty masks array of shape {tuple(votes.shape)}")
    n, k = votes.shape[:2]
    return votes.reshape(n, k, -1), tuple(votes.shape[2:]), votes.device


def _pack(votes: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """(N, K, P) bool -> (N, P) int64 code with bit j - lo = vote of rater j in [lo, hi).

    Packs 8 raters per uint8 byte first: ~3x less memory traffic than shifting each
    rater's votes as int64.
    """
    u8 = votes.view(torch.uint8)
    code = None
    for b in range(lo, hi, 8):
        byte = u8[:, b].clone()
        for j in range(b + 1, min(hi, b + 8)):
            byte |= u8[:, j] << (j - b)
        byte = byte.to(torch.int64)
        code = byte if code is None else code.add_(byte, alpha=1 << (b - lo))
    assert code is not None
    return code


def _decode(codes: torch.Tensor, k: int) -> torch.Tensor:
    """(U,) int64 codes -> (K, U) uint8 bits 0..K-1, unpacked byte-wise (uint8 shifts
    move 8x less memory than int64 shifts)."""
    n_bytes = (k + 7) // 8
    if sys.byteorder != "little":  # the byte view below assumes little-endian int64
        return ((codes >> torch.arange(k, device=codes.device)[:, None]) & 1).to(torch.uint8)
    raw = codes.contiguous().view(torch.uint8).reshape(-1, 8)[:, :n_bytes].T  # (bytes, U)
    shifts = torch.arange(8, dtype=torch.uint8, device=codes.device)[:, None]
    return ((raw[:, None, :] >> shifts) & 1).reshape(n_bytes * 8, -1)[:k]


def _unique_patterns(
    votes: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compress per-pixel vote vectors to unique patterns, for all images at once.

    Args:
        votes: (N, K, P) bool.

    Returns:
        patterns: (N, K, U) float64 in {0, 1}, the pattern table stored rater-major
            (both EM products run ~1.5x faster on it than on (N, U, K)); U = largest
            pattern count over images, shorter lists padded with zero columns of count 0
            (they carry no weight).
        counts: (N, U) float64 pixel count of each pattern.
        inverse: (N, P) int64 index of each pixel's pattern.
    """
    n, k, p = votes.shape
    dev = votes.device
    img_bits = (n - 1).bit_length()
    if k + img_bits <= _CODE_BITS:
        # One code per pixel: vote bits 0..K-1, image index above them.
        code = _pack(votes, 0, k)
        if n > 1:
            code |= torch.arange(n, device=dev)[:, None] << k
        uniq, inverse, counts = torch.unique(
            code.reshape(-1), return_inverse=True, return_counts=True
        )
        img = uniq >> k
        bits = _decode(uniq, k)
    else:
        # Chunks of 63 raters, combined by exact re-ranking (see module docstring). The
        # image index is the most significant "digit", so ranks stay grouped by image.
        key = torch.arange(n, device=dev).repeat_interleave(p)
        for lo in range(0, k, _CODE_BITS):
            chunk = _pack(votes, lo, min(k, lo + _CODE_BITS)).reshape(-1)
            u, rank = torch.unique(chunk, return_inverse=True)
            _, key, counts = torch.unique(
                key * u.numel() + rank, return_inverse=True, return_counts=True
            )
        inverse = key
        # One pixel per pattern (the first; min is order-independent, so deterministic).
        rep = torch.full((counts.numel(),), n * p, dtype=torch.int64, device=dev)
        rep.scatter_reduce_(0, inverse, torch.arange(n * p, device=dev), reduce="amin")
        img = rep // p
        bits = votes[img, :, rep % p].T  # (K, U)
    bits = bits.to(torch.float64, memory_format=torch.contiguous_format)
    if n == 1:  # nothing to pad
        return bits[None], counts.to(torch.float64)[None], inverse[None]
    # Unique entries are sorted by image: slot of each within its image.
    first = torch.searchsorted(img, torch.arange(n, device=dev))
    per_img = torch.searchsorted(img, torch.arange(n, device=dev), right=True) - first
    u_max = int(per_img.max())
    slot = torch.arange(img.numel(), device=dev) - first[img]
    patterns = torch.zeros((n, k, u_max), dtype=torch.float64, device=dev)
    patterns[img, :, slot] = bits.T
    cnt = torch.zeros((n, u_max), dtype=torch.float64, device=dev)
    cnt[img, slot] = counts.to(torch.float64)
    return patterns, cnt, inverse.reshape(n, p) - first[:, None]


def _m_step(
    w: torch.Tensor, patterns: torch.Tensor, counts: torch.Tensor, total: torch.Tensor,
    said_one: torch.Tensor,
) -> torch.Tensor:
    """Sensitivity/specificity from the posterior (Warfield 2004 eqs. 18-19; ITK loop 1).

    Args:
        w: (n, U) float64 posterior P(T=1) per pattern.
        patterns: (n, K, U) float64 votes.
        counts: (n, U) float64 pixel count per pattern.
        total: (n, 1) float64 pixel count per image.
        said_one: (n, K) float64 number of pixels each rater labelled 1.

    Returns:
        (n, 2, K) float64: [:, 0] sensitivity p, [:, 1] specificity q. A zero denominator
        (no posterior mass on that class, e.g. all raters empty) gives 1.0 ("nothing of
        that class was missed"); ITK: NaN.
    """
    wc = w * counts  # posterior mass of "true foreground" per pattern
    p_den = wc.sum(dim=1, keepdim=True)
    q_den = total - p_den
    p_num = torch.bmm(patterns, wc[:, :, None])[..., 0]  # fg mass where the rater said 1
    q_num = q_den - (said_one - p_num)  # background mass where the rater said 0
    num = torch.stack((p_num, q_num), dim=1)
    den = torch.stack((p_den, q_den), dim=1)  # (n, 2, 1)
    pq = torch.where(den > 0, num / den, 1.0)
    # The summation order differs from ITK's pixel loop: clip rounding outside [0, 1].
    return pq.clamp_(0.0, 1.0)


def _e_step(pq: torch.Tensor, logit_g: torch.Tensor, patterns: torch.Tensor) -> torch.Tensor:
    """Posterior per pattern from the performance parameters (Warfield 2004 eq. 14).

    ``W = g·Π p^D (1-p)^(1-D) / (g·Π p^D (1-p)^(1-D) + (1-g)·Π (1-q)^D q^(1-D))`` is
    evaluated as the sigmoid of its log-odds: it equals ITK's product form to ~1e-15 and
    never forms 0/0 (ITK yields NaN where both products are exactly 0).

    Args:
        pq: (n, 2, K) float64 sensitivity ([:, 0]) and specificity ([:, 1]).
        logit_g: (n,) float64 log(g / (1 - g)), floored.
        patterns: (n, K, U) float64 in {0, 1}.

    Returns:
        (n, U) float64 posterior in [0, 1].
    """
    lg, l1 = _flog(pq), _flog(1.0 - pq)
    lp, lq, l1p, l1q = lg[:, 0], lg[:, 1], l1[:, 0], l1[:, 1]
    base = logit_g + (l1p - lq).sum(dim=1)  # log-odds when every rater says 0
    per_vote = (lp - l1p) - (l1q - lq)  # change of the log-odds when rater k says 1
    return torch.sigmoid(base[:, None] + torch.bmm(per_vote[:, None, :], patterns)[:, 0])


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
        masks: (K, *spatial) or (N, K, *spatial) bool / {0, 1} tensor (any device) or
            ndarray; any nonzero value is foreground (ITK ``foregroundValue=1`` on 0/1
            data). Axis order: image, rater (sample), then spatial axes (Y, X) or
            (Z, Y, X). A list of K (*spatial) arrays / tensors is read as (K, *spatial).
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
        :class:`StapleResult` with a leading image axis (N = 1 for unbatched input), all
        tensors on the input's device. Batched input gives exactly the per-image results
        (own prior, own stopping iteration); it saves Python overhead, not arithmetic.

    Any number of raters K >= 1 works (K > 63 packs the votes in chunks, see the module
    docstring); K = 1 returns that rater's mask with sensitivity = specificity = 1.

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
    if prior is None or isinstance(prior, str):
        if prior not in (None, "estimate"):
            raise ValueError(f"prior must be a float or 'estimate', got {prior!r}")
        fixed_prior = None
    else:
        fixed_prior = float(prior)
        if not 0.0 <= fixed_prior <= 1.0:
            raise ValueError(f"prior must lie in [0, 1], got {prior}")

    votes, spatial, device = _as_votes(masks, spatial_dims)
    with _one_cpu_thread(device):
        return _staple(
            votes, spatial, fixed_prior, init_sensitivity, init_specificity,
            max_iterations, tolerance, confidence_weight,
        )


def _staple(
    votes: torch.Tensor,
    spatial: tuple[int, ...],
    fixed_prior: float | None,
    init_sensitivity: float | None,
    init_specificity: float | None,
    max_iterations: int,
    tolerance: float,
    confidence_weight: float,
) -> StapleResult:
    """:func:`staple` on validated (N, K, P) bool votes."""
    n_img, k, n_pix = votes.shape
    dev = votes.device
    f64 = torch.float64

    patterns, counts, inverse = _unique_patterns(votes)
    said_one = torch.bmm(patterns, counts[:, :, None])[..., 0]  # per-rater foreground pixels
    total = counts.sum(dim=1, keepdim=True)  # = n_pix
    w = patterns.mean(dim=1)  # ITK's W_0: mean vote of each pixel (pattern)

    if fixed_prior is None:
        g = (w * counts).sum(dim=1) / n_pix
    else:
        g = torch.full((n_img,), fixed_prior, dtype=f64, device=dev)
    g = (g * confidence_weight).clamp_(0.0, 1.0)
    logit_g = _flog(g) - _flog(1.0 - g)

    if init_sensitivity is not None:
        pq0 = torch.empty((n_img, 2, k), dtype=f64, device=dev)
        pq0[:, 0] = float(init_sensitivity)
        pq0[:, 1] = float(init_specificity)  # type: ignore[arg-type]
        w = _e_step(pq0, logit_g, patterns)

    # Final values per image, filled in as images converge (or at the cap).
    out_w = torch.empty_like(w)
    out_pq = torch.empty((n_img, 2, k), dtype=f64, device=dev)
    out_it = torch.full((n_img,), max_iterations, dtype=torch.int64, device=dev)
    out_conv = torch.zeros(n_img, dtype=torch.bool, device=dev)

    # Working set: the images still iterating; compacted whenever some converge.
    idx = torch.arange(n_img, device=dev)
    pat, cnt, tot, ones, lg = patterns, counts, total, said_one, logit_g
    tol2 = tolerance * tolerance  # ITK compares squared changes with 1e-14
    last = None
    for it in range(max_iterations):
        pq = _m_step(w, pat, cnt, tot, ones)
        w = _e_step(pq, lg, pat)
        if last is not None:
            done = ((pq - last) ** 2 <= tol2).flatten(1).all(dim=1)
            if bool(done.any()):
                sel = idx[done]
                out_w[sel], out_pq[sel] = w[done], pq[done]
                out_it[sel] = it + 1
                out_conv[sel] = True
                keep = ~done
                idx = idx[keep]
                if idx.numel() == 0:
                    break
                pat, cnt, tot, ones, lg = pat[keep], cnt[keep], tot[keep], ones[keep], lg[keep]
                w, pq = w[keep], pq[keep]
        last = pq
    if idx.numel():
        out_w[idx], out_pq[idx] = w, pq

    prob = torch.gather(out_w.to(torch.float32), 1, inverse)
    return StapleResult(
        probability=prob.reshape((n_img, *spatial)),
        sensitivity=out_pq[:, 0].contiguous(),
        specificity=out_pq[:, 1].contiguous(),
        iterations=out_it,
        converged=out_conv,
        prior=g,
    )
