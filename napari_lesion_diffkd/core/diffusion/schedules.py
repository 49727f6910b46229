"""Noise schedules: beta sequences and the :class:`NoiseSchedule` that owns them.

Forward process (DDPM, Ho et al. 2020): ``x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps`` with
``abar_t = prod_{s<=t} (1 - beta_s)`` for integer timesteps ``t`` in ``[0, T)``. Timestep 0 is the
least noisy, ``T - 1`` the noisiest.

Schedules:
- ``linear``: betas linearly from ``beta_start`` to ``beta_end``; seed 000 (EFKD) uses
  T = 250, 0.0004 -> 0.08 (its §IV-A), which is the default here.
- ``cosine``: Nichol & Dhariwal 2021, ``abar(t) = cos^2(((t/T + s) / (1 + s)) * pi / 2)``, s = 0.008,
  betas clipped at 0.999.
- ``scaled_linear``: Latent Diffusion / Stable Diffusion, betas linear in sqrt space
  (0.00085 -> 0.012 by default for T = 1000).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

ScheduleKind = Literal["linear", "cosine", "scaled_linear"]

_DEFAULT_RANGE: dict[str, tuple[float, float]] = {
    "linear": (4e-4, 0.08),  # seed 000 §IV-A, for T = 250
    "scaled_linear": (0.00085, 0.012),  # LDM / Stable Diffusion v1
}


def make_betas(
    kind: ScheduleKind,
    num_timesteps: int,
    beta_start: float | None = None,
    beta_end: float | None = None,
    cosine_s: float = 0.008,
) -> torch.Tensor:
    """Return the beta sequence, float64 tensor of shape (num_timesteps,).

    Args:
        kind: ``"linear"``, ``"cosine"`` or ``"scaled_linear"``.
        num_timesteps: T, any positive integer.
        beta_start, beta_end: range for linear/scaled_linear (defaults above).
        cosine_s: offset of the cosine schedule.
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if kind in ("linear", "scaled_linear"):
        lo, hi = _DEFAULT_RANGE[kind]
        lo = lo if beta_start is None else beta_start
        hi = hi if beta_end is None else beta_end
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {lo}, {hi}")
        if kind == "linear":
            return torch.linspace(lo, hi, num_timesteps, dtype=torch.float64)
        return torch.linspace(lo**0.5, hi**0.5, num_timesteps, dtype=torch.float64) ** 2
    if kind == "cosine":
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        abar = torch.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        abar = abar / abar[0]
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown schedule {kind!r}; choose linear, cosine or scaled_linear")


class NoiseSchedule:
    """The forward-process coefficients for one beta schedule.

    Constructor arguments are the config (:meth:`to_config` / :meth:`from_config`). All
    coefficient tensors are float64 of shape (T,); gathers return float32 broadcastable to
    (B, 1, 1, 1) for 4D inputs.

    Args:
        kind: schedule family, see :func:`make_betas`.
        num_timesteps: T.
        beta_start, beta_end: optional range override for linear schedules.
    """

    def __init__(
        self,
        kind: ScheduleKind = "linear",
        num_timesteps: int = 250,
        beta_start: float | None = None,
        beta_end: float | None = None,
    ) -> None:
        self.kind = kind
        self.num_timesteps = int(num_timesteps)
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.betas = make_betas(kind, self.num_timesteps, beta_start, beta_end)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    # -- config -----------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """Constructor kwargs as a JSON-able dict (with the class name)."""
        return {
            "_class_name": type(self).__name__,
            "kind": self.kind,
            "num_timesteps": self.num_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
        return cls(**kwargs)

    # -- coefficients -----------------------------------------------------------------------
    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``abar_t`` gathered for integer timesteps ``t`` (B,), shaped to broadcast with ``like``.

        ``t = -1`` is allowed and means "no noise" (abar = 1), which DDIM uses for its last step.
        """
        t = t.long().to("cpu")
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        values = table[t + 1].to(dtype=like.dtype, device=like.device)
        return values.view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample ``q(x_t | x0)``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``.

        Args:
            x0: clean masks, (B, C, H, W) float, in [-1, 1] for segmentation.
            noise: standard normal, same shape.
            t: integer timesteps, (B,).
        """
        abar = self.alpha_bar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``abar / (1 - abar)`` at timesteps ``t`` (B,), float64."""
        abar = self.alphas_cumprod[t.long().cpu()]
        return abar / (1 - abar)
