"""Knowledge-distillation losses of EFKD / LiteDermoSegDiff (seed 000 §III-D, eqs. 2-7).

At a diffusion step both networks see the same noisy mask ``x_t``, image ``g`` and step ``t``
and predict the noise (eq. 3): ``eps_T = T(x_t, g, t)``, ``eps_S = S(x_t, g, t)``.

General distillation (eq. 2), a global alignment of the two predictions::

    L_KD = || eps_S - eps_T ||^2                                   -> :func:`general_kd_loss`

Edge-focused distillation (EFKD). The pixels are split by the distance-aware boundary weight
``W_Theta`` of eq. 1 (:func:`~napari_lesion_diffkd.core.training.losses.boundary_weight_map`,
DermoSegDiff's definition with the split's sharpness ``gamma = 1.5``,
:data:`~napari_lesion_diffkd.core.training.losses.GAMMA_SPLIT`) thresholded at ``tau`` (eq. 4)::

    M_e = [W_Theta > tau],   M_b = 1 - M_e                         -> :func:`efkd_region_masks`
    L_edge = 1/|M_e| sum_ij M_e(i,j) ||eps_S(i,j) - eps_T(i,j)||^2   (eq. 5)
    L_body = 1/|M_b| sum_ij M_b(i,j) ||eps_S(i,j) - eps_T(i,j)||^2   (eq. 6)
    L_EFKD = lambda_e L_edge + lambda_b L_body                        (eq. 7) -> :func:`efkd_loss`

Constants (seed 000 §IV-A): ``lambda_e = 5`` (:data:`LAMBDA_EDGE`), ``lambda_b = 2``
(:data:`LAMBDA_BODY`), following BPKD's weighting; ``tau = 0.6``
(:data:`~napari_lesion_diffkd.core.training.losses.TAU`, the best value of Fig. 4); ``T = 250``.

Choices the seed leaves open:

- *Which mask gives W_Theta.* The text says "from the teacher as in Eq. 1" and Fig. 1 feeds the
  ground-truth masks to the boundary module. :func:`efkd_region_masks` takes the masks as an
  argument: the ground truth in the seed's setting, the teacher's own predicted mask where no
  label exists.
- *Normalisation.* ``|M_e|`` and ``|M_b|`` are counted per image: each image's region loss is its
  sum over the region divided by ``max(1, region size)``, then the batch mean is taken. An image
  whose region is empty contributes 0 to that term (e.g. masks with <= 1% foreground, for which
  ``W_Theta = 1`` everywhere and every pixel is edge). A region's loss therefore does not depend
  on how large the region is, only on the error inside it.
- *Channels.* With C > 1 prediction channels the squared error is averaged over the channels
  (the mask channel count is multiplied into the region size), so that every loss here is on
  the scale of a per-element MSE; for C = 1 (a mask prediction) this is eqs. 5-6 exactly.
- The teacher's prediction is a fixed target: it is detached, gradients reach the student only.

Everything is batched torch (no per-sample loops, no CPU image libraries) and computed in
float32 whatever the input dtype (bf16 autocast outputs included). The predictions may be
noises or clean masks (x0): nothing here assumes which.
"""

from __future__ import annotations

import torch

from napari_lesion_diffkd.core.training.losses import (
    GAMMA_SPLIT,
    TAU,
    boundary_weight_map,
    edge_body_masks,
)

LAMBDA_EDGE = 5.0  # eq. 7 lambda_e (seed 000 §IV-A, from BPKD)
LAMBDA_BODY = 2.0  # eq. 7 lambda_b (seed 000 §IV-A, from BPKD)


def _check_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher predictions differ in shape: {tuple(student.shape)} vs "
            f"{tuple(teacher.shape)}"
        )


def general_kd_loss(student_eps: torch.Tensor, teacher_eps: torch.Tensor) -> torch.Tensor:
    """General distillation, seed 000 eq. 2: mean squared error over all elements.

    Args:
        student_eps: (B, C, H, W) student prediction, any float dtype; carries the gradient.
        teacher_eps: same shape, teacher prediction (detached here).

    Returns:
        Scalar float32 tensor ``mean((student - teacher)^2)``.
    """
    _check_pair(student_eps, teacher_eps)
    diff = student_eps.float() - teacher_eps.detach().float()
    return diff.square().mean()


def efkd_region_masks(
    masks01: torch.Tensor,
    t: torch.Tensor | int | float,
    num_timesteps: int,
    tau: float = TAU,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EFKD's edge and body regions (seed 000 eq. 4) from a batch of binary masks.

    ``W_Theta = boundary_weight_map(masks01, t=t, num_timesteps=T, gamma=GAMMA_SPLIT)``, then
    ``M_e = [W_Theta > tau]``, ``M_b = 1 - M_e``. The edge band contains every boundary pixel
    (W = 1 there) and widens with ``t`` (at t -> T, W -> 1 everywhere); a larger ``tau`` gives
    a thinner band. Masks with no boundary or <= 1% foreground are all edge (W = 1).

    Args:
        masks01: (B, 1, H, W) masks, foreground > 0.5 (so {0, 1} and {-1, 1} masks both
            work). Ground truth in the seed; the teacher's predicted mask for unlabelled data.
        t: (B,) timesteps in [0, T) (any dtype), or one number for the whole batch.
        num_timesteps: T (250 in seed 000).
        tau: eq. 4 threshold (0.6, seed 000 §IV-A).

    Returns:
        ``(edge, body)``: two (B, 1, H, W) float32 tensors of 0/1 with ``edge + body == 1``,
        on the device of ``masks01``, without gradient.
    """
    if masks01.dim() != 4 or masks01.shape[1] != 1:
        raise ValueError(f"masks01 must be (B, 1, H, W), got {tuple(masks01.shape)}")
    b = masks01.shape[0]
    t = torch.as_tensor(t, device=masks01.device)
    if t.dim() == 0:
        t = t.expand(b)
    if t.numel() != b:
        raise ValueError(f"t needs one timestep per image ({b}), got shape {tuple(t.shape)}")
    weights = boundary_weight_map(
        masks01, t=t.reshape(b), num_timesteps=num_timesteps, gamma=GAMMA_SPLIT
    )
    return edge_body_masks(weights, tau)


def _region_mean(sq: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per image ``sum(region * sq) / max(1, sum(region))`` over (C, H, W); (B,) float32."""
    region = region.expand_as(sq)
    total = (region * sq).sum(dim=(1, 2, 3))
    count = region.sum(dim=(1, 2, 3)).clamp(min=1.0)
    return total / count


def efkd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    edge: torch.Tensor,
    body: torch.Tensor,
    lambda_edge: float = LAMBDA_EDGE,
    lambda_body: float = LAMBDA_BODY,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Edge-focused distillation loss, seed 000 eqs. 5-7, normalised by region area per image.

    Args:
        student: (B, C, H, W) student prediction (eps or x0), any float dtype; carries the
            gradient.
        teacher: same shape, teacher prediction (detached here).
        edge: (B, 1, H, W) or (B, C, H, W) edge mask ``M_e`` (0/1, e.g. from
            :func:`efkd_region_masks`).
        body: same shape, body mask ``M_b``.
        lambda_edge, lambda_body: eq. 7 weights (5 and 2, seed 000 §IV-A).

    Returns:
        ``(loss, logs)``: ``loss`` is the scalar float32 ``lambda_edge * L_edge +
        lambda_body * L_body``, each term the batch mean of the per-image region means
        (0 for an image whose region is empty); ``logs`` holds the unweighted ``"kd_edge"``,
        ``"kd_body"`` and ``"edge_fraction"`` (fraction of edge pixels in the batch) as floats.
    """
    _check_pair(student, teacher)
    b = student.shape[0]
    for name, region in (("edge", edge), ("body", body)):
        ok = (
            region.dim() == 4
            and region.shape[0] == b
            and region.shape[1] in (1, student.shape[1])
            and region.shape[2:] == student.shape[2:]
        )
        if not ok:
            raise ValueError(
                f"{name} must be (B, 1 or C, H, W) matching the predictions "
                f"{tuple(student.shape)}, got {tuple(region.shape)}"
            )
    edge = edge.detach().to(device=student.device, dtype=torch.float32)
    body = body.detach().to(device=student.device, dtype=torch.float32)
    sq = (student.float() - teacher.detach().float()).square()
    loss_edge = _region_mean(sq, edge).mean()
    loss_body = _region_mean(sq, body).mean()
    loss = lambda_edge * loss_edge + lambda_body * loss_body
    kd_edge, kd_body, fraction = torch.stack(
        [loss_edge.detach(), loss_body.detach(), edge.mean()]
    ).tolist()
    return loss, {"kd_edge": kd_edge, "kd_body": kd_body, "edge_fraction": fraction}


def spread_crps(x0_groups: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
    """Per-pixel CRPS between a student's sample set and a teacher's masks of one image.

    With the student's soft samples q_g = (x0_g + 1) / 2 and the teacher's binary masks, whose
    per-pixel vote fraction is f, the continuous ranked probability score of the sample set is

        mean_g [ f (1 - q_g) + (1 - f) q_g ]  -  1/2 mean_{g != g'} |q_g - q_g'|,

    a proper scoring rule: per pixel it is smallest when the q_g are 0 or 1 with a fraction
    f of ones, so the student's samples disagree where, and as often as, the teacher's do.

    Args:
        x0_groups: (N, G, 1, H, W) student x0 outputs in [-1, 1], G samples of each of N images.
        votes: (N, 1, H, W) the teacher's vote fraction in [0, 1] for each image.

    Returns:
        Scalar mean over images and pixels.
    """
    q = (x0_groups.float().clamp(-1, 1) + 1) / 2
    f = votes.float()[:, None]
    against_teacher = (f * (1 - q) + (1 - f) * q).mean(dim=1)
    g = q.shape[1]
    if g < 2:
        raise ValueError("spread_crps needs at least two samples per image")
    # The "fair" estimator (pairs g != g'): unbiased for any G, so the optimum is the
    # teacher's spread itself, not a narrower one.
    within = (q[:, :, None] - q[:, None, :]).abs().sum(dim=(1, 2)) / (g * (g - 1))
    return (against_teacher - 0.5 * within).mean()
