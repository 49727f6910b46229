"""Prediction targets (epsilon, v, x0) and exact conversions between them.

With ``a = sqrt(abar_t)`` and ``s = sqrt(1 - abar_t)`` (so ``a^2 + s^2 = 1``):

- ``x_t = a x0 + s eps``
- ``v = a eps - s x0``  (Salimans & Ho 2022; seed 001 eq. 2)
- ``x0 = (x_t - s eps) / a = a x_t - s v``  (seed 001 eq. 3)
- ``eps = (x_t - a x0) / s = s x_t + a v``

A network trained with target ``"epsilon"``, ``"v"`` or ``"x0"`` outputs that quantity;
samplers call :func:`to_x0_and_eps` to get both estimates whatever the target.
"""

from __future__ import annotations

from typing import Literal

import torch

from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule

PredictionTarget = Literal["epsilon", "v", "x0"]
TARGETS: tuple[str, ...] = ("epsilon", "v", "x0")


def _coefficients(
    schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    abar = schedule.alpha_bar(t, like)
    return abar.sqrt(), (1 - abar).sqrt()


def training_target(
    target: PredictionTarget,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    schedule: NoiseSchedule,
) -> torch.Tensor:
    """What a network with this target should output for ``x_t = add_noise(x0, noise, t)``.

    Args:
        target: ``"epsilon"``, ``"v"`` or ``"x0"``.
        x0: clean masks (B, C, H, W) in [-1, 1]; noise: same shape; t: (B,) integer timesteps.
    """
    if target == "epsilon":
        return noise
    if target == "x0":
        return x0
    if target == "v":
        a, s = _coefficients(schedule, t, x0)
        return a * noise - s * x0
    raise ValueError(f"unknown prediction target {target!r}; choose one of {TARGETS}")


def to_x0_and_eps(
    target: PredictionTarget,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    schedule: NoiseSchedule,
    clip_x0: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert a network output into ``(x0_hat, eps_hat)``.

    Args:
        target: what the network predicts.
        model_output: (B, C, H, W) network output.
        x_t: (B, C, H, W) the noisy input at timesteps ``t`` (B,).
        schedule: the noise schedule used in training.
        clip_x0: clamp ``x0_hat`` to [-1, 1] (masks live there) and recompute ``eps_hat`` from
            the clamped value so that the pair stays consistent with ``x_t``.

    Returns:
        ``(x0_hat, eps_hat)``, both shaped like ``x_t``.
    """
    a, s = _coefficients(schedule, t, x_t)
    if target == "epsilon":
        eps = model_output
        x0 = (x_t - s * eps) / a
    elif target == "x0":
        x0 = model_output
        eps = (x_t - a * x0) / s.clamp(min=1e-8)
    elif target == "v":
        x0 = a * x_t - s * model_output
        eps = s * x_t + a * model_output
    else:
        raise ValueError(f"unknown prediction target {target!r}; choose one of {TARGETS}")
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x_t - a * x0) / s.clamp(min=1e-8)
    return x0, eps


def convert(
    value: torch.Tensor,
    source: PredictionTarget,
    destination: PredictionTarget,
    x_t: torch.Tensor,
    t: torch.Tensor,
    schedule: NoiseSchedule,
) -> torch.Tensor:
    """Exact (unclipped) conversion of a prediction from one target to another."""
    x0, eps = to_x0_and_eps(source, value, x_t, t, schedule, clip_x0=False)
    if destination == "x0":
        return x0
    if destination == "epsilon":
        return eps
    if destination == "v":
        a, s = _coefficients(schedule, t, x_t)
        return a * eps - s * x0
    raise ValueError(f"unknown prediction target {destination!r}; choose one of {TARGETS}")
