"""DDIM sampling with any number of steps (Song, Meng & Ermon 2021).

Timesteps go from T - 1 (pure noise, the top timestep seen in training) down to a last
timestep >= 0, then one final step to "t = -1" (abar = 1), which returns ``x0_hat``:

- ``"uniform"``: ``round(linspace(T - 1, 0, num_steps))`` (halves rounded up), so both T - 1
  and 0 are visited; e.g. T = 250, 10 steps: 249, 221, 194, 166, 138, 111, 83, 55, 28, 0.
- ``"trailing"``: ``round(T - i T / num_steps) - 1`` for i = 0..num_steps-1 (the
  "trailing" spacing of Lin et al. 2024, "Common diffusion noise schedules and sample steps
  are flawed"); e.g. T = 1000, 10 steps: 999, 899, ..., 99.

Both start at T - 1: the "leading" spacing of some libraries (0, T/n, ...) never visits the
noisiest timestep, so a few-step sampler would start from noise that the network never saw
at its first timestep.

Update (DDIM eq. 12): ``x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat
+ sigma z`` with ``sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev)``
(eq. 16): eta = 0 is deterministic given the initial noise, eta = 1 matches DDPM's variance.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch

from napari_lesion_diffkd.core.diffusion.sampling_common import (
    Sampler,
    ddim_coefficients,
    draw_noise,
    estimate,
    network_heads,
    progress,
    round_half_up,
    to_samples,
)
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.jobs import JobEvent

SPACINGS: tuple[str, ...] = ("uniform", "trailing")


def ddim_timesteps(num_timesteps: int, num_steps: int, spacing: str = "uniform") -> list[int]:
    """The decreasing timesteps at which DDIM calls the network.

    Args:
        num_timesteps: T.
        num_steps: 1..T network calls.
        spacing: ``"uniform"`` or ``"trailing"`` (module docstring).

    Returns:
        ``num_steps`` distinct ints, first ``T - 1``, strictly decreasing, last >= 0.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, T={num_timesteps}], got {num_steps}")
    if spacing == "uniform":
        if num_steps == 1:
            return [num_timesteps - 1]
        # Spacing (T-1)/(num_steps-1) >= 1, so the rounded values stay distinct.
        step = (num_timesteps - 1) / (num_steps - 1)
        return [round_half_up(num_timesteps - 1 - i * step) for i in range(num_steps)]
    if spacing == "trailing":
        step = num_timesteps / num_steps  # >= 1: distinct after rounding
        return [round_half_up(num_timesteps - i * step) - 1 for i in range(num_steps)]
    raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of {SPACINGS}")


class DDIMSampler(Sampler):
    """DDIM, ``num_steps`` network calls.

    Args:
        schedule: the training noise schedule.
        prediction_target: what the network predicts.
        num_steps: network calls, 1..T.
        eta: 0 (deterministic) .. 1 (DDPM-like noise); must be >= 0.
        clip_x0: clamp each ``x0_hat`` to [-1, 1] (and recompute ``eps_hat`` to match).
        timestep_spacing: ``"uniform"`` or ``"trailing"``.
    """

    name = "ddim"

    def __init__(
        self,
        schedule: NoiseSchedule,
        prediction_target: str = "epsilon",
        num_steps: int = 10,
        eta: float = 0.0,
        clip_x0: bool = True,
        timestep_spacing: str = "uniform",
    ) -> None:
        super().__init__(schedule, prediction_target)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.num_steps = int(num_steps)
        self.eta = float(eta)
        self.clip_x0 = bool(clip_x0)
        self.timestep_spacing = timestep_spacing
        # Validates num_steps and the spacing now rather than at sampling time.
        self.timesteps = ddim_timesteps(schedule.num_timesteps, self.num_steps, timestep_spacing)

    def _options(self) -> dict[str, Any]:
        return {
            "num_steps": self.num_steps,
            "eta": self.eta,
            "clip_x0": self.clip_x0,
            "timestep_spacing": self.timestep_spacing,
        }

    @property
    def num_network_calls(self) -> int:
        return self.num_steps

    def _generate(
        self,
        network: Any,
        image: torch.Tensor,
        num_samples: int,
        seeds: list[int],
        mask_channels: int,
    ) -> Generator[JobEvent, None, torch.Tensor]:
        n, _, h, w = image.shape
        generators, x_t, cond = self._start(network, image, seeds, mask_channels)
        steps = self.timesteps
        total = len(steps)
        x0 = x_t
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < total else -1
            heads = network_heads(network, x_t, t, cond, self.prediction_target)
            x0, eps = estimate(
                heads, (self.prediction_target,), x_t, t, self.schedule, self.clip_x0
            )
            coef_x0, coef_eps, sigma = ddim_coefficients(self.schedule, t, t_prev, self.eta)
            x_t = coef_x0 * x0 + coef_eps * eps
            if sigma > 0:  # same for every sample, so the per-sample noise streams stay aligned
                x_t = x_t + sigma * draw_noise(generators, (n, mask_channels, h, w), x_t.device)
            yield progress(i + 1, total, f"DDIM step {i + 1}/{total} (t={t})", t=float(t))
        # The last step went to t = -1 (abar = 1): x_t == x0_hat there.
        return to_samples(x0, n, num_samples)
