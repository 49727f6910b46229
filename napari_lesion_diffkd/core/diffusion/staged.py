"""Staged inference of UniSegDiff (seed 004, Hu et al., MICCAI 2025, §2.2 and Fig. 1 (C)).

Reading of the paper (§2.2, "Train and Infer Stage", last paragraph), for T = 1000:

1. *Rapid segmentation stage.* Start from pure noise X_999 (t = 999). "The mask prediction
   branch directly samples X_999 to X_599 in a single step": the x0 head predicts x0_hat and
   X_599 is formed DDIM-style (eta = 0): ``sqrt(abar_599) x0_hat + sqrt(1 - abar_599) eps_hat``,
   eps_hat being the noise implied by X_999 and x0_hat.
2. *Probabilistic modelling stage.* "The subsequent sampling follows the DDIM method, with a
   step interval of 30": network calls at 599, 569, ..., 329 (ten of them, "sampling X_599 ten
   times") lead to X_299.
3. *Denoising refinement stage.* "Sampled by the noise prediction branch, with each step
   directly sampling from X_299 to X_0": one call at t = 299 whose eps head gives x0_hat,
   which is the result.

So the network sees t = 999, 599, 569, ..., 329, 299: 12 calls (the paper reports "eleven
steps", Table 4/7, apparently not counting one of the single-step jumps).

The stage boundaries are 599 < t (x0 stage), 299 < t <= 599 (both targets), t <= 299 (eps
stage) (§2.2, first paragraph), and the paper names them by the thresholds 600 and 300
(Table 5). Hence a threshold ``h`` (in a 1000-step reference) is the 0-based timestep
``h - 1``, and for a schedule of T steps::

    t_high = round_half_up(high_threshold * T / reference_timesteps) - 1   # 599 for T = 1000
    t_low  = round_half_up(low_threshold  * T / reference_timesteps) - 1   # 299

The middle stage keeps the paper's number of DDIM calls,
``ceil((high_threshold - low_threshold) / stride)`` (= 10), on timesteps spaced evenly from
t_high to t_low and rounded half up (duplicates dropped when T is small): for T = 250 the
calls are at 249, 149, 142, 134, 127, 119, 112, 104, 97, 89, 82, 74.

Combining the two heads in the middle stage. The paper runs the middle stage *twice*, once
per decoder ("after sampling X_599 ten times in each of the two decoder branches, the results
are X_299^mask and X_299^noise"), finishes both with the eps branch and fuses the resulting
masks (20 in the paper, by STAPLE, §2.4). That doubles the samples per initial noise, which
the sampler contract (one output per seed) cannot express, so ``middle_branch`` chooses:

- ``"x0"``: the mask branch only (the paper's X_299^mask trajectory);
- ``"epsilon"``: the noise branch only (the paper's X_299^noise trajectory);
- ``"average"`` (default): one trajectory driven by the mean of the heads' (x0_hat, eps_hat)
  estimates. This is our single-trajectory reading of "both prediction targets are given equal
  weight" in the middle stage (§2.2, stated for training). To reproduce the paper's two-branch
  set, sample with ``"x0"`` and with ``"epsilon"`` (same seeds) and concatenate along K.

The paper's third stage also says each X_299 is "sampled ten times" by the eps branch; a direct
eps step to x0 is deterministic, so here the sample diversity comes from the K initial noises
only (the paper uses 20 masks per image, our ``DEFAULT_NUM_SAMPLES``).

With a single-head network every stage uses that head; the target conversions supply x0 or eps.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import torch

from napari_lesion_diffkd.core.diffusion.sampling_common import (
    Sampler,
    ddim_coefficients,
    estimate,
    estimate_mean,
    network_heads,
    progress,
    round_half_up,
    to_samples,
)
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.jobs import JobEvent

#: Masks per image fused by STAPLE in seed 004 (§2.2, last paragraph; §2.4).
DEFAULT_NUM_SAMPLES = 20
MIDDLE_BRANCHES: tuple[str, ...] = ("average", "x0", "epsilon")


def staged_timesteps(
    num_timesteps: int,
    high_threshold: int = 600,
    low_threshold: int = 300,
    stride: int = 30,
    reference_timesteps: int = 1000,
) -> list[int]:
    """The timesteps at which the staged sampler calls the network, in order.

    Returns:
        ``[T - 1, t_high, ..., t_low]``: the x0 jump from T - 1, the middle-stage DDIM calls
        from t_high, and the final eps call at t_low (module docstring for the rounding).
    """
    if not 0 < low_threshold < high_threshold < reference_timesteps:
        raise ValueError(
            "need 0 < low_threshold < high_threshold < reference_timesteps, got "
            f"{low_threshold}, {high_threshold}, {reference_timesteps}"
        )
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    scale = num_timesteps / reference_timesteps
    top = num_timesteps - 1
    t_high = round_half_up(high_threshold * scale) - 1
    t_low = round_half_up(low_threshold * scale) - 1
    if not top > t_high > t_low >= 0:
        raise ValueError(
            f"T={num_timesteps} is too short for thresholds {high_threshold}/{low_threshold} "
            f"(scaled to t_high={t_high}, t_low={t_low}, top={top}); need top > t_high > t_low >= 0"
        )
    middle_calls = math.ceil((high_threshold - low_threshold) / stride)  # 10 in seed 004
    spacing = (t_high - t_low) / middle_calls
    middle: list[int] = []
    for i in range(middle_calls + 1):  # t_high, ..., t_low inclusive
        t = round_half_up(t_high - i * spacing)
        if not middle or t < middle[-1]:
            middle.append(t)
    middle[-1] = t_low  # guard against float round-off at the end
    return [top, *middle]


class StagedSampler(Sampler):
    """UniSegDiff staged inference (seed 004): x0 jump, DDIM middle stage, eps finish.

    Args:
        schedule: the training noise schedule.
        prediction_target: target of a single-head network.
        high_threshold: start of the x0 stage in the reference (600 in seed 004, Table 5).
        low_threshold: end of the eps stage in the reference (300, Table 5).
        stride: DDIM interval of the middle stage in the reference (30, §2.2).
        reference_timesteps: T of the reference the thresholds are given in (1000, §2.2).
        middle_branch: ``"average"``, ``"x0"`` or ``"epsilon"`` (module docstring).
        clip_x0: clamp every ``x0_hat`` to [-1, 1] (and recompute eps_hat to match).
        final_head: head of the last call at ``t_low``: ``"epsilon"`` (the paper's noise
            branch), ``"x0"`` or ``"average"``. Turning an eps estimate at ``t_low`` into a
            mask divides its error by ``sqrt(abar)`` (about 0.63 at t = 299 of the linear
            T = 1000 schedule) pixel by pixel, which speckles the masks of a small CPU-trained
            network; the x0 head, trained with Dice + CE, gives clean masks from the same state.
    """

    name = "staged"

    def __init__(
        self,
        schedule: NoiseSchedule,
        prediction_target: str = "epsilon",
        high_threshold: int = 600,
        low_threshold: int = 300,
        stride: int = 30,
        reference_timesteps: int = 1000,
        middle_branch: str = "average",
        clip_x0: bool = True,
        final_head: str = "epsilon",
    ) -> None:
        super().__init__(schedule, prediction_target)
        if middle_branch not in MIDDLE_BRANCHES:
            raise ValueError(f"unknown middle_branch {middle_branch!r}; one of {MIDDLE_BRANCHES}")
        self.high_threshold = int(high_threshold)
        self.low_threshold = int(low_threshold)
        self.stride = int(stride)
        self.reference_timesteps = int(reference_timesteps)
        self.middle_branch = middle_branch
        if final_head not in MIDDLE_BRANCHES:
            raise ValueError(f"unknown final_head {final_head!r}; one of {MIDDLE_BRANCHES}")
        self.final_head = final_head
        self.clip_x0 = bool(clip_x0)
        self.timesteps = staged_timesteps(
            schedule.num_timesteps,
            self.high_threshold,
            self.low_threshold,
            self.stride,
            self.reference_timesteps,
        )

    def _options(self) -> dict[str, Any]:
        return {
            "high_threshold": self.high_threshold,
            "low_threshold": self.low_threshold,
            "stride": self.stride,
            "reference_timesteps": self.reference_timesteps,
            "middle_branch": self.middle_branch,
            "clip_x0": self.clip_x0,
            "final_head": self.final_head,
        }

    @property
    def num_network_calls(self) -> int:
        return len(self.timesteps)

    def _middle_estimate(
        self, heads: dict[str, torch.Tensor], x_t: torch.Tensor, t: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.middle_branch == "average":
            return estimate_mean(heads, x_t, t, self.schedule, self.clip_x0)
        return estimate(heads, (self.middle_branch,), x_t, t, self.schedule, self.clip_x0)

    def _generate(
        self,
        network: Any,
        image: torch.Tensor,
        num_samples: int,
        seeds: list[int],
        mask_channels: int,
    ) -> Generator[JobEvent, None, torch.Tensor]:
        n = image.shape[0]
        _, x_t, cond = self._start(network, image, seeds, mask_channels)
        steps = self.timesteps
        total = len(steps)
        stage_names = ["x0 jump"] + ["DDIM"] * (total - 2) + ["eps finish"]
        x0 = x_t
        for i, t in enumerate(steps):
            heads = network_heads(network, x_t, t, cond, self.prediction_target)
            if i == 0:  # stage 1: the mask (x0) branch, X_{T-1} -> X_{t_high} in one step
                x0, eps = estimate(heads, ("x0",), x_t, t, self.schedule, self.clip_x0)
            elif i < total - 1:  # stage 2: DDIM (eta = 0) through the middle stage
                x0, eps = self._middle_estimate(heads, x_t, t)
            elif self.final_head == "average":  # stage 3, both heads
                x0, _ = estimate_mean(heads, x_t, t, self.schedule, self.clip_x0)
            else:  # stage 3: X_{t_low} -> x0 in one step (the paper: the eps branch)
                x0, _ = estimate(heads, (self.final_head,), x_t, t, self.schedule, self.clip_x0)
            if i < total - 1:
                coef_x0, coef_eps, _ = ddim_coefficients(self.schedule, t, steps[i + 1], 0.0)
                x_t = coef_x0 * x0 + coef_eps * eps
            yield progress(
                i + 1, total, f"staged step {i + 1}/{total} ({stage_names[i]}, t={t})", t=float(t)
            )
        return to_samples(x0, n, num_samples)
