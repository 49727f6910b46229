"""Boundary-aware diffusion loss (seed 000 eq. 1) and the EFKD edge/body split (eqs. 3-4).

Seed 000 (EFKD, §III-B) trains the DermoSegDiff teacher with

    L_w = (1 + alpha * W_Theta) * ||eps - eps_theta(x_t, g, t)||^2            (eq. 1)

where ``W_Theta`` weighs pixels by their proximity to the lesion border. The seed gives no
formula for ``W_Theta``; we follow DermoSegDiff's definition (Bozorgpour et al. 2023, the
teacher's public code), computed here in torch on the whole batch:

    d(p)      = Euclidean distance from pixel p to the nearest mask-boundary pixel
    base(p)   = 1 - d(p) / D                   D = max_p d(p) per image (or ``max_distance``)
    e(t)      = (gamma * (T - t) / T) ** gamma                     timestep exponent
    W_Theta   = base ** e(t)                   in [0, 1], exactly 1 on the boundary

Constants (DermoSegDiff / EFKD configs): ``alpha = 0.25`` (the boundary term's coefficient),
``gamma = 0.2`` for the loss, ``gamma = 1.5`` for EFKD's edge/body split; ``T = 250`` (seed 000
§IV-A). ``t`` counts from 0 (least noisy) to T - 1. At small t (low noise) the exponent is
largest (0.2**0.2 = 0.72 with gamma = 0.2, 1.5**1.5 = 1.84 with gamma = 1.5) so the weight
falls off fastest away from the border; as t -> T the exponent -> 0 and W -> 1 everywhere.
Masks with no boundary or whose foreground is at most 1% of the image get ``W = 1``
(DermoSegDiff's rule).

The boundary is the 8-connected inner contour: foreground pixels with a background pixel in
their 3x3 neighbourhood (the image border is not a boundary). DermoSegDiff uses a Canny edge of
the binary mask, which lies on the same step to within one pixel. The distance transform is
exact (equal to ``scipy.ndimage.distance_transform_edt`` of the non-boundary pixels, float32
rounding aside): an O(H W) column pass with cumulative max/min of boundary indices gives the
distance g to the nearest boundary pixel in the same column, then a brute-force row pass
``d^2(i, j) = min_k [(j - k)^2 + g^2(i, k)]`` (O(H W^2), vectorised in chunks of rows); about
30-100 ms for 16 masks at 128 x 128 on two CPU cores. ``max_distance`` caps the result.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

# DermoSegDiff / EFKD constants (see module docstring).
ALPHA = 0.25  # eq. 1 alpha: DermoSegDiff's boundary-term coefficient
GAMMA_LOSS = 0.2  # eq. 1 W_Theta sharpness used for the loss
GAMMA_SPLIT = 1.5  # W_Theta sharpness EFKD uses for the edge/body split (eq. 4)
TAU = 0.6  # eq. 4 threshold (seed 000 §IV-A, Fig. 4)
MIN_AREA_FRACTION = 0.01  # W = 1 for masks with <= 1% foreground (DermoSegDiff)


def boundary_pixels(masks01: torch.Tensor) -> torch.Tensor:
    """Inner 8-connected contour of binary masks.

    Args:
        masks01: (B, 1, H, W) masks, foreground > 0.5 (float or bool).

    Returns:
        (B, 1, H, W) bool: foreground pixels with a background pixel among their 8 neighbours.
        Pixels outside the image count as foreground (the image border is not a boundary).
    """
    fg = (masks01 > 0.5).float()
    # Erosion = -maxpool(-x); max_pool2d pads with -inf, i.e. the outside never erodes.
    eroded = -F.max_pool2d(-fg, kernel_size=3, stride=1, padding=1)
    return (fg > 0.5) & (eroded < 0.5)


def _column_distance(boundary: torch.Tensor) -> torch.Tensor:
    """Distance to the nearest boundary pixel in the same column; (B, H, W) bool -> float.

    ``H + W`` where a column has no boundary pixel.
    """
    _, h, w = boundary.shape
    big = float(h + w)
    idx = torch.arange(h, device=boundary.device, dtype=torch.float32).view(1, h, 1)
    above = torch.where(boundary, idx, torch.full_like(idx, -big)).cummax(dim=1).values
    below = torch.where(boundary, idx, torch.full_like(idx, 2 * big)).flip(1).cummin(dim=1).values
    below = below.flip(1)
    return torch.minimum(idx - above, below - idx).clamp(max=big)


def _row_pass(g2: torch.Tensor, max_elements: int = 1 << 22) -> torch.Tensor:
    """``d2(i, j) = min_k [(j - k)^2 + g2(i, k)]`` for every row; (B, H, W) float -> same.

    Brute force over k, vectorised over chunks of rows (at most ``max_elements`` temporaries):
    O(H W^2) per image, about 2 M operations at 128 x 128.
    """
    b, h, w = g2.shape
    j = torch.arange(w, device=g2.device, dtype=g2.dtype)
    offsets = (j[:, None] - j[None, :]) ** 2  # (W_j, W_k)
    rows = g2.reshape(b * h, w)
    out = torch.empty_like(rows)
    step = max(1, max_elements // (w * w))
    for start in range(0, b * h, step):
        out[start : start + step] = (rows[start : start + step, None, :] + offsets).amin(dim=-1)
    return out.view(b, h, w)


@torch.no_grad()
def boundary_distance(masks01: torch.Tensor, max_distance: float | None = None) -> torch.Tensor:
    """Exact Euclidean distance of every pixel to the nearest mask-boundary pixel, in torch.

    Args:
        masks01: (B, 1, H, W) binary masks (foreground > 0.5).
        max_distance: cap in pixels (distances beyond it are returned as ``max_distance``);
            None computes the full transform.

    Returns:
        (B, 1, H, W) float32, 0 on the boundary (see :func:`boundary_pixels`). Images without
        a boundary (empty or full masks) get ``inf`` (or ``max_distance`` when capped).
    """
    if masks01.dim() != 4 or masks01.shape[1] != 1:
        raise ValueError(f"masks01 must be (B, 1, H, W), got {tuple(masks01.shape)}")
    boundary = boundary_pixels(masks01)[:, 0]
    b = boundary.shape[0]
    has_boundary = boundary.flatten(1).any(dim=1)
    # Images without a boundary are computed as all-boundary (cheap) and overwritten below.
    boundary = boundary | ~has_boundary.view(b, 1, 1)
    g = _column_distance(boundary)
    if max_distance is not None:
        g = g.clamp(max=float(max_distance))
    d2 = _row_pass(g * g)
    dist = d2.sqrt()
    fill = float("inf") if max_distance is None else float(max_distance)
    if max_distance is not None:
        dist = dist.clamp(max=float(max_distance))
    dist = torch.where(has_boundary.view(b, 1, 1), dist, torch.full_like(dist, fill))
    return dist.unsqueeze(1)


def timestep_exponent(
    t: torch.Tensor, num_timesteps: int, gamma: float = GAMMA_LOSS
) -> torch.Tensor:
    """DermoSegDiff's exponent ``e(t) = (gamma * (T - t) / T) ** gamma`` (eq. 1's W_Theta).

    Args:
        t: (B,) timesteps in [0, T), any dtype.
        num_timesteps: T.
        gamma: sharpness (0.2 for the loss, 1.5 for EFKD's split).

    Returns:
        (B,) float32; decreasing in t, so low-noise steps weigh the boundary more sharply.
    """
    t = t.float().reshape(-1)
    return (gamma * (num_timesteps - t).clamp(min=0) / num_timesteps) ** gamma


@torch.no_grad()
def boundary_weight_map(
    masks01: torch.Tensor,
    max_distance: float | None = None,
    t: torch.Tensor | None = None,
    num_timesteps: int | None = None,
    gamma: float = GAMMA_LOSS,
    min_area_fraction: float = MIN_AREA_FRACTION,
) -> torch.Tensor:
    """Per-pixel boundary weight ``W_Theta`` of eq. 1 (see the module docstring).

    Args:
        masks01: (B, 1, H, W) binary masks (foreground > 0.5).
        max_distance: None normalises by each image's largest distance (DermoSegDiff);
            a number R caps the distance at R and normalises by R (W = 0 beyond R when t is
            None).
        t: optional (B,) timesteps; with ``num_timesteps`` applies the exponent ``e(t)``.
            Without them the map is the timestep-free ``base = 1 - d / D``.
        num_timesteps: T (needed with ``t``).
        gamma: sharpness of ``e(t)``.
        min_area_fraction: masks with at most this foreground fraction get W = 1.

    Returns:
        (B, 1, H, W) float32 in [0, 1]; 1 on the boundary, decreasing with the distance.
    """
    dist = boundary_distance(masks01, max_distance)
    b = dist.shape[0]
    finite = torch.isfinite(dist)
    if max_distance is None:
        norm = torch.where(finite, dist, torch.zeros_like(dist)).amax(dim=(1, 2, 3), keepdim=True)
    else:
        norm = torch.full((b, 1, 1, 1), float(max_distance), device=dist.device)
    base = (1.0 - torch.where(finite, dist, norm) / norm.clamp(min=1e-6)).clamp(0.0, 1.0)
    if t is not None:
        if num_timesteps is None:
            raise ValueError("num_timesteps is needed with t")
        exponent = timestep_exponent(t.to(dist.device), num_timesteps, gamma).view(b, 1, 1, 1)
        base = base**exponent
    fg_fraction = (masks01 > 0.5).float().mean(dim=(1, 2, 3))
    uniform = (fg_fraction <= min_area_fraction) | ~finite.flatten(1).all(dim=1)
    if max_distance is not None:  # capped: "no boundary" shows as a constant max_distance map
        uniform = uniform | ~(dist == 0).flatten(1).any(dim=1)
    return torch.where(uniform.view(b, 1, 1, 1), torch.ones_like(base), base)


def boundary_aware_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    masks01: torch.Tensor,
    t: torch.Tensor,
    num_timesteps: int,
    alpha: float | None = None,
    gamma: float = GAMMA_LOSS,
    max_distance: float | None = None,
    min_area_fraction: float = MIN_AREA_FRACTION,
) -> torch.Tensor:
    """Boundary-aware squared error of seed 000 eq. 1, on the whole batch.

    Two forms:

    - ``alpha=None`` (default): the boundary term ``mean(W_Theta * (pred - target)^2)`` only,
      as DermoSegDiff's ``BoundaryLoss``. The trainer adds it to the plain MSE with weight
      ``boundary_loss_weight``, which then plays alpha (DermoSegDiff/EFKD: 0.25), giving eq. 1.
    - ``alpha=a``: the whole eq. 1, ``mean((1 + a * W_Theta) * (pred - target)^2)``.

    Args:
        pred: (B, C, H, W) network output (epsilon, or whichever target is trained).
        target: (B, C, H, W) regression target.
        masks01: (B, 1, H, W) clean masks in {0, 1} (the x0 of the batch mapped to [0, 1]).
        t: (B,) timesteps in [0, T).
        num_timesteps: T.
        alpha: see above.
        gamma, max_distance, min_area_fraction: see :func:`boundary_weight_map`.

    Returns:
        Scalar float32 tensor, differentiable with respect to ``pred``.
    """
    weights = boundary_weight_map(
        masks01, max_distance, t, num_timesteps, gamma, min_area_fraction
    ).to(pred.dtype)
    sq = (pred - target) ** 2
    if alpha is None:
        return (weights * sq).mean()
    return ((1.0 + alpha * weights) * sq).mean()


def edge_body_masks(
    weight_map: torch.Tensor, tau: float = TAU
) -> tuple[torch.Tensor, torch.Tensor]:
    """EFKD's edge / body split (seed 000 eq. 4): ``M_e = [W_Theta > tau]``, ``M_b = 1 - M_e``.

    EFKD's code thresholds ``boundary_weight_map(masks, t=t, num_timesteps=T, gamma=1.5)``
    (:data:`GAMMA_SPLIT`) at tau = 0.6 (seed 000 §IV-A). W decreases away from the border, so
    a *larger* tau gives a *thinner* edge band (the sentence after eq. 4 has it the other way
    round) and the band widens with t (at t -> T, W -> 1 and everything is edge).

    Args:
        weight_map: (B, 1, H, W) float ``W_Theta`` in [0, 1].
        tau: threshold.

    Returns:
        ``(edge, body)``, two (B, 1, H, W) float tensors of 0/1 with ``edge + body == 1``.
    """
    edge = (weight_map > tau).to(weight_map.dtype)
    return edge, 1.0 - edge
