"""Ancestral DDPM sampling over all T steps (Ho et al. 2020; the seeds' default, seed 000).

Seed 000 (§IV-A) samples with T = 250 linear betas and averages 9 samples per image; the
averaging happens in the ensemble code, this sampler only returns the samples.

Each step predicts ``x0_hat`` (from whatever the network predicts, optionally clipped to the
mask range [-1, 1]) and samples the posterior ``q(x_{t-1} | x_t, x0_hat)``:

- mean ``= sqrt(abar_{t-1}) beta_t / (1 - abar_t) * x0_hat
  + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) * x_t``  (DDPM eq. 7)
- variance ``beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t``

At t = 0 the mean equals ``x0_hat`` and no noise is added, so the result is the last x0_hat.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import torch

from napari_lesion_diffkd.core.diffusion.sampling_common import (
    Sampler,
    abar,
    draw_noise,
    estimate,
    network_heads,
    progress,
    to_samples,
)
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.jobs import JobEvent


class DDPMSampler(Sampler):
    """Ancestral sampling, T network calls.

    Args:
        schedule: the training noise schedule (T = ``schedule.num_timesteps``).
        prediction_target: what the network predicts (``"epsilon"``, ``"v"`` or ``"x0"``).
        clip_x0: clamp each ``x0_hat`` to [-1, 1] before forming the posterior mean (masks
            live there; it keeps early, noisy predictions from overshooting).
    """

    name = "ddpm"

    def __init__(
        self, schedule: NoiseSchedule, prediction_target: str = "epsilon", clip_x0: bool = True
    ) -> None:
        super().__init__(schedule, prediction_target)
        self.clip_x0 = bool(clip_x0)

    def _options(self) -> dict[str, Any]:
        return {"clip_x0": self.clip_x0}

    @property
    def num_network_calls(self) -> int:
        return self.schedule.num_timesteps

    def _posterior(self, t: int) -> tuple[float, float, float]:
        """``(coef_x0, coef_xt, std)`` of ``q(x_{t-1} | x_t, x0)``."""
        ab_t, ab_prev = abar(self.schedule, t), abar(self.schedule, t - 1)
        beta = float(self.schedule.betas[t])
        coef_x0 = math.sqrt(ab_prev) * beta / (1 - ab_t)
        coef_xt = math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab_t)
        return coef_x0, coef_xt, math.sqrt(beta * (1 - ab_prev) / (1 - ab_t))

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
        total = self.schedule.num_timesteps
        x0 = x_t
        for i, t in enumerate(range(total - 1, -1, -1)):
            heads = network_heads(network, x_t, t, cond, self.prediction_target)
            x0, _ = estimate(heads, (self.prediction_target,), x_t, t, self.schedule, self.clip_x0)
            if t > 0:
                coef_x0, coef_xt, std = self._posterior(t)
                noise = draw_noise(generators, (n, mask_channels, h, w), x_t.device)
                x_t = coef_x0 * x0 + coef_xt * x_t + std * noise
            yield progress(i + 1, total, f"DDPM step {i + 1}/{total} (t={t})", t=float(t))
        return to_samples(x0, n, num_samples)
